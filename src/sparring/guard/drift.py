"""A drift window on the served model's confidence: the two-sample Kolmogorov–Smirnov test of each window of
``window`` answered examples' maximum class probability against the same statistic on clean reference data.

This is black-box shift detection on the model's outputs (Rabanser, Günnemann, Lipton 2019, "Failing Loudly: An
Empirical Study of Methods for Detecting Dataset Shift", NeurIPS, sec. 3: BBSD with univariate KS tests), reduced to
one univariate statistic, the confidence, so it works for any scores target. Windows are consecutive and disjoint
(tumbling); each is one test at level ``alpha``, so on undrifted traffic about ``alpha`` of the windows alarm. The
state (the current partial window and counters) is plain JSON.

One window for all replicas (:class:`SharedDrift`): every request appends its confidences to the store's
``drift_pending`` table in its event's transaction; in the same transaction, whichever replica holds the store's
drift lock (SQLite: the database's single writer; PostgreSQL: a transaction-scoped advisory lock, tried without
waiting) takes every pending row, in row order, advances the ``drift`` state read from the store, and writes the new
state, its alerts and the deletion of the rows it consumed, all committed together. The stored state is therefore
exactly one detector's state on the interleaved stream of all replicas' answered examples (in the order consumed),
and a value is counted once: never lost with a rolled-back transaction, never consumed twice.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from typing import Any

import numpy as np

from sparring.errors import ParameterError

__all__ = ["ConfidenceKS", "SharedDrift"]

logger = logging.getLogger(__name__)

_VERSION = 1


class ConfidenceKS:
    """Tumbling-window KS test of confidences against a reference sample.

    Args:
        reference: confidences (max probability) of clean inputs, at least 10 of them.
        window: examples per test.
        alpha: level of each test.
    """

    def __init__(self, reference: Any, *, window: int = 200, alpha: float = 0.01) -> None:
        ref = np.sort(np.asarray(reference, dtype=np.float64).reshape(-1))
        if ref.size < 10 or not np.isfinite(ref).all():
            raise ParameterError(f"the drift reference needs at least 10 finite confidences; got {ref.size}.")
        if isinstance(window, bool) or not isinstance(window, int) or window < 10:
            raise ParameterError(f"window must be an integer >= 10; got {window!r}.")
        if not (isinstance(alpha, int | float) and 0 < alpha < 1):
            raise ParameterError(f"alpha must be in (0, 1), e.g. 0.01; got {alpha!r}.")
        self.reference, self.window, self.alpha = ref, window, float(alpha)
        self.fingerprint = hashlib.sha256(ref.tobytes() + f"{window}|{alpha}".encode()).hexdigest()[:16]
        self.current: list[float] = []
        self.tested = 0
        self.alarms = 0
        self.last_p: float | None = None
        self.last_statistic: float | None = None

    def update(self, confidences: Any) -> list[dict[str, Any]]:
        """Add confidences; one result dict per window completed (``drift`` True when the test rejects)."""
        from scipy.stats import ks_2samp

        out = []
        for c in np.asarray(confidences, dtype=np.float64).reshape(-1).tolist():
            self.current.append(float(c))
            if len(self.current) < self.window:
                continue
            res = ks_2samp(np.asarray(self.current), self.reference)
            self.tested += 1
            self.last_p, self.last_statistic = float(res.pvalue), float(res.statistic)
            drift = self.last_p < self.alpha
            self.alarms += int(drift)
            out.append({"window": self.tested, "statistic": self.last_statistic, "p_value": self.last_p,
                        "alpha": self.alpha, "drift": drift, "mean_confidence": float(np.mean(self.current)),
                        "reference_mean_confidence": float(self.reference.mean())})
            self.current = []
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"version": _VERSION, "fingerprint": self.fingerprint, "current": list(self.current),
                "tested": self.tested, "alarms": self.alarms, "last_p": self.last_p,
                "last_statistic": self.last_statistic}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != _VERSION or state.get("fingerprint") != self.fingerprint:
            raise ParameterError("this drift state belongs to another reference or configuration (fingerprint "
                                 f"{state.get('fingerprint')!r}, this one {self.fingerprint!r}).")
        self.current = [float(v) for v in state["current"]]
        self.tested, self.alarms = int(state["tested"]), int(state["alarms"])
        self.last_p = None if state["last_p"] is None else float(state["last_p"])
        self.last_statistic = None if state["last_statistic"] is None else float(state["last_statistic"])

    def copy(self) -> ConfidenceKS:
        """An independent detector with the same reference (shared, read-only) and a copy of the state."""
        other = copy.copy(self)
        other.current = list(self.current)
        return other

    def reset(self) -> None:
        self.current, self.tested, self.alarms, self.last_p, self.last_statistic = [], 0, 0, None, None


class SharedDrift:
    """The drift window of every replica sharing a store, advanced inside the store's event transaction.

    :meth:`advance` is called by the store (holding its drift lock, in the transaction) with the saved state and
    the pending ``(event id, confidences)`` rows in order; it returns the new state and each completed window's
    result with the event whose confidences completed it. Nothing changes in memory until :meth:`commit` (the
    transaction committed); :meth:`abort` forgets the staged state (the next transaction reads it again)."""

    def __init__(self, detector: ConfidenceKS) -> None:
        self.detector = detector
        self._staged: tuple[ConfidenceKS, list[tuple[int, dict[str, Any]]]] | None = None

    def advance(self, saved: dict[str, Any] | None,
                rows: list[tuple[int, Any]]) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]]]:
        det = self.detector.copy()
        det.reset()
        if saved is not None:
            try:
                det.load_state_dict(saved)
            except ParameterError as exc:  # an older configuration's state, or a replica configured differently
                logger.warning("the stored drift state is not this guard's (%s); starting the window afresh. "
                               "Replicas sharing a store need the same drift configuration and reference.", exc)
        results = [(event_id, res) for event_id, values in rows for res in det.update(values)]
        self._staged = (det, results)
        return det.state_dict(), results

    def commit(self) -> list[tuple[int, dict[str, Any]]]:
        """Adopt the committed state in memory; the committed windows' results ``(event id, result)``."""
        if self._staged is None:
            return []
        det, results = self._staged
        self._staged = None
        self.detector.load_state_dict(det.state_dict())
        return results

    def abort(self) -> None:
        self._staged = None
