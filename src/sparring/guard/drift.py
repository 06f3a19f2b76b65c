"""A drift window on the served model's confidence: the two-sample Kolmogorov–Smirnov test of each window of
``window`` answered examples' maximum class probability against the same statistic on clean reference data.

This is black-box shift detection on the model's outputs (Rabanser, Günnemann, Lipton 2019, "Failing Loudly: An
Empirical Study of Methods for Detecting Dataset Shift", NeurIPS, sec. 3: BBSD with univariate KS tests), reduced to
one univariate statistic, the confidence, so it works for any scores target. Windows are consecutive and disjoint
(tumbling); each is one test at level ``alpha``, so on undrifted traffic about ``alpha`` of the windows alarm. The
state (the current partial window and counters) is plain JSON and is persisted with every request by the guard.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from sparring.errors import ParameterError

__all__ = ["ConfidenceKS"]

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
