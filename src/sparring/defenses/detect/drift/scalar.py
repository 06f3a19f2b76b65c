"""Online change detectors on one scalar signal (a model's confidence, its entropy, a detector's score), with the
alarm threshold calibrated by simulation to an expected run time (ERT) between false alarms.

CUSUM (Page 1954) and the Page–Hinkley test (Page 1954; Hinkley 1971; in the streaming form of Gama et al. 2013)
are classical; their thresholds are usually set by hand (river's ``PageHinkley(threshold=50)``), so their false
alarm rate is whatever the data make it. Here the signal is standardised by the reference's mean and standard
deviation, and the threshold is the one at which no-drift streams resampled from the reference alarm every
``ert`` steps on average.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from sparring.defenses.detect.drift._stream import (
    STATE_VERSION,
    OnlineStep,
    check_bootstrap,
    check_ert,
    fingerprint,
    stream_indices,
    warn_if_dependent,
)
from sparring.defenses.detect.drift.result import check_positive_int
from sparring.errors import InputSpecError, ParameterError

__all__ = ["CUSUM", "PageHinkley"]

_CHUNK_ENTRIES = 2**22  # simulated signal values held at once
_DIRECTIONS = ("up", "down", "both")


def _as_signal(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
    if arr.dtype.kind not in "biuf":
        raise InputSpecError(f"{name} has dtype {arr.dtype}; expected numbers (one scalar per step).")
    arr = arr.astype(np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        raise InputSpecError(f"{name} has NaN or inf at {int((~np.isfinite(arr)).sum())} positions (first: "
                             f"{int(np.flatnonzero(~np.isfinite(arr))[0])}); drop or impute them first.")
    return arr


class _ScalarDetector(ABC):
    """Standardised scalar stream, a path statistic ``g_t`` that does not depend on the threshold, and an alarm
    when ``g_t > h``; ``h`` is calibrated so that the mean run length of resampled no-drift streams is ``ert``.

    Calibration: ``n_bootstraps`` streams of ``horizon = 4·ert`` steps are resampled from the reference (with
    replacement; i.i.d., or moving blocks of ``block_length`` with ``bootstrap="block"``). Because ``g_t`` does
    not depend on ``h``, a stream's run length at threshold ``h`` is the first time its running maximum of ``g``
    passes ``h``; the mean run length is estimated on a grid of thresholds (streams still quiet at the horizon
    count as censored: total steps over alarms, the exponential maximum-likelihood estimate) and ``h`` is
    interpolated where it equals ``ert``.

    With ``reference_uncertainty`` (the default) each stream is standardised by the mean and standard deviation
    of its own bootstrap replicate of the reference, so the threshold also covers the error of estimating them
    from ``n`` rows (CUSUM alarms on a mean off by that error as on a real shift). It helps little: calibrated on
    500 rows of digit ink and run on the other 1,297, CUSUM's run length at ERT 500 over 8 random splits had mean
    425 without it and 440 with it (median 398 → 408); the spread between splits (300–790) is the price of a
    500-row reference, and a larger reference is the remedy. Page–Hinkley, which follows the stream's own running
    mean, measured mean 490–496 and median 469.

    ``winsorize`` (a share, e.g. 0.05) clips the signal, reference and stream alike, to the reference's
    ``winsorize`` and ``1 − winsorize`` quantiles. A skewed signal such as a confident model's top softmax
    probability (1% of 500 reference digits below 0.59, of the held-out ones below 0.79) alarms on clusters of
    rare extreme values, whose frequency 500 rows cannot pin down: CUSUM calibrated to ERT 100 on three 500-row
    references ran 299, 79 and 42 steps on held-out data; winsorized at 5%, 88, 77 and 52. A change must then
    move the bulk of the signal, not only its extremes.
    """

    kind = "scalar"

    def __init__(self, reference: Any, *, ert: float = 500, direction: str = "both", n_bootstraps: int = 2000,
                 bootstrap: str = "iid", block_length: int | None = None, reference_uncertainty: bool = True,
                 winsorize: float = 0.0, seed: int = 0) -> None:
        self.reference, self.ert, self.direction, self.n_bootstraps = reference, ert, direction, n_bootstraps
        self.bootstrap, self.block_length, self.seed = bootstrap, block_length, seed
        self.reference_uncertainty, self.winsorize = reference_uncertainty, winsorize
        self.threshold: float | None = None
        self.t = 0
        self._ref: np.ndarray | None = None

    def get_params(self) -> dict[str, Any]:
        return {"kind": self.kind, "ert": self.ert, "direction": self.direction, "n_bootstraps": self.n_bootstraps,
                "bootstrap": self.bootstrap, "block_length": self.block_length,
                "reference_uncertainty": self.reference_uncertainty, "winsorize": self.winsorize, "seed": self.seed,
                **self._extra_params()}

    def _setup(self) -> np.ndarray:
        if self._ref is None:
            check_ert(self.ert, 0)
            if self.direction not in _DIRECTIONS:
                raise ParameterError(f"direction must be one of {_DIRECTIONS}; got {self.direction!r}.")
            check_positive_int(self.n_bootstraps, "n_bootstraps", 100)
            self._block = check_bootstrap(self.bootstrap, self.block_length)
            self._check_extra()
            ref = _as_signal(self.reference, "reference")
            if ref.size < max(20, 2 * self._block):
                raise InputSpecError(f"reference has {ref.size} values; a scalar detector needs at least "
                                     f"{max(20, 2 * self._block)} to calibrate. Give more no-drift data.")
            sd = float(ref.std(ddof=1))
            if float(np.ptp(ref)) == 0.0 or not sd > 0:
                raise InputSpecError(f"the reference signal is constant ({ref[0]!r}); a change has no scale. "
                                     "Monitor a signal that varies on no-drift data.")
            w = self.winsorize
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w < 0.5:
                raise ParameterError(f"winsorize must be a share in [0, 0.5), e.g. 0.05; got {w!r}.")
            self._fingerprint = fingerprint(torch.from_numpy(ref), self.get_params())
            lo, hi = (float(v) for v in np.quantile(ref, [w, 1 - w])) if w > 0 else (-math.inf, math.inf)
            self._clip = (lo, hi)
            ref = np.clip(ref, lo, hi)
            sd = float(ref.std(ddof=1))
            if not sd > 0:
                raise InputSpecError(f"the reference signal is constant between its {w:g} and {1 - w:g} "
                                     f"quantiles ({lo!r}); lower winsorize.")
            self._mu, self._sd = float(ref.mean()), sd
            self._ref = ref
            self._clear()
        return self._ref

    def calibrate(self) -> float:
        """Simulate no-drift streams from the reference and set the threshold (done once)."""
        ref = self._setup()
        if self.threshold is None:
            warn_if_dependent(torch.from_numpy(ref).reshape(-1, 1), self.bootstrap)
            z = (ref - self._mu) / self._sd
            horizon = max(8, math.ceil(4 * float(self.ert)))
            per = max(1, _CHUNK_ENTRIES // horizon)
            chunks = range(0, self.n_bootstraps, per)

            def maxima(i: int) -> np.ndarray:
                rng = np.random.default_rng([self.seed, i])
                b = min(per, self.n_bootstraps - i)
                streams = z[stream_indices(z.size, horizon, b, self._block, rng, replace=True)]
                if self.reference_uncertainty:  # each stream standardised by its own resampled reference
                    mu, sd = np.empty(b), np.empty(b)
                    step = max(1, _CHUNK_ENTRIES // z.size)
                    for j in range(0, b, step):
                        boot = z[stream_indices(z.size, z.size, min(step, b - j), self._block, rng, replace=True)]
                        mu[j : j + step], sd[j : j + step] = boot.mean(1), boot.std(1, ddof=1)
                    streams = (streams - mu[:, None]) / np.where(sd > 0, sd, 1.0)[:, None]
                return np.maximum.accumulate(self._paths(streams), axis=1)

            top = max(float(maxima(i)[:, -1].max()) for i in chunks)
            grid = np.linspace(0.0, top, 2049)[1:]
            steps, alarms = np.zeros(grid.size), np.zeros(grid.size)
            for i in chunks:
                m = maxima(i)
                g = torch.from_numpy(np.ascontiguousarray(m))
                first = torch.searchsorted(g, torch.from_numpy(grid).expand(g.shape[0], -1).contiguous(),
                                           right=True).numpy()  # first index with running max > h
                alarms += (first < horizon).sum(0)
                steps += np.minimum(first + 1, horizon).sum(0)
            mean_rl = steps / np.maximum(alarms, 1)
            above = np.flatnonzero(mean_rl >= float(self.ert))
            if above.size == 0:
                raise ParameterError(f"no threshold reaches ert={self.ert} within the simulated horizon; raise "
                                     "n_bootstraps or lower ert.")
            j = int(above[0])
            if j == 0:
                self.threshold = float(grid[0])
            else:  # interpolate log run length, which grows about linearly in h (Siegmund 1985)
                y0, y1 = math.log(mean_rl[j - 1]), math.log(mean_rl[j])
                f = (math.log(float(self.ert)) - y0) / (y1 - y0) if y1 > y0 else 1.0
                self.threshold = float(grid[j - 1] + f * (grid[j] - grid[j - 1]))
        return self.threshold

    def update(self, x: Any) -> OnlineStep:
        """Add one value of the signal and test; after an alarm the detector starts afresh."""
        self._setup()
        h = self.calibrate()
        v = _as_signal(x, "x")
        if v.size != 1:
            raise InputSpecError(f"x has {v.size} values; update() takes one scalar per step (loop over a batch).")
        self.t += 1
        value = min(max(float(v[0]), self._clip[0]), self._clip[1])
        stat = self._step((value - self._mu) / self._sd)
        step = OnlineStep(self.t, stat, h, stat > h)
        if step.drift:
            self.reset()
        return step

    def reset(self) -> None:
        """Restart the statistic and the clock (done after every alarm)."""
        self.t = 0
        self._clear()

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON data: configuration, reference fingerprint, threshold and the running statistic."""
        self.calibrate()
        return {"version": STATE_VERSION, "kind": self.kind, "params": self.get_params(),
                "fingerprint": self._fingerprint, "threshold": self.threshold, "t": self.t, "stat": self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a detector with the same reference and configuration."""
        self._setup()
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or state.get("kind") != self.kind:
            seen = state.get("kind") if isinstance(state, dict) else type(state).__name__
            raise ParameterError(f"not a {self.kind!r} state of version {STATE_VERSION}; got {seen!r}. Load the "
                                 "dict that state_dict() of the same kind of detector returned.")
        if state.get("fingerprint") != self._fingerprint:
            raise ParameterError("this state belongs to a detector with a different reference or configuration "
                                 f"(fingerprint {state.get('fingerprint')!r}, this one {self._fingerprint!r}); "
                                 "build the detector with the same reference and parameters.")
        self.threshold, self.t = float(state["threshold"]), int(state["t"])
        self._restore([float(v) for v in state["stat"]])

    def _extra_params(self) -> dict[str, Any]:
        return {}

    def _check_extra(self) -> None:
        return None

    @abstractmethod
    def _paths(self, z: np.ndarray) -> np.ndarray:
        """The statistic ``g`` along each standardised stream ``z`` ``(b, T)``, starting fresh."""

    @abstractmethod
    def _step(self, z: float) -> float: ...

    @abstractmethod
    def _clear(self) -> None: ...

    @abstractmethod
    def _state(self) -> list[float]: ...

    @abstractmethod
    def _restore(self, values: list[float]) -> None: ...


def _check_nonneg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ParameterError(f"{name} must be a number >= 0 (in reference standard deviations); got {value!r}.")
    return float(value)


class CUSUM(_ScalarDetector):
    """Tabular CUSUM (Page 1954) on the standardised signal ``z``: ``S⁺_t = max(0, S⁺_{t−1} + z_t − k)`` for an
    increase, ``S⁻_t = max(0, S⁻_{t−1} − z_t − k)`` for a decrease (``direction``), alarm when the larger passes
    the calibrated threshold. ``k`` (reference standard deviations) is the allowance: half the mean shift the
    detector should find fastest (Montgomery 2009, §9.1).

    Example: ``det = CUSUM(clean_confidences, ert=500, direction="down"); det.update(conf).drift``.
    """

    kind = "cusum"
    _up: float
    _down: float

    def __init__(self, reference: Any, *, k: float = 0.5, **kw: Any) -> None:
        super().__init__(reference, **kw)
        self.k = k

    def _extra_params(self) -> dict[str, Any]:
        return {"k": self.k}

    def _check_extra(self) -> None:
        self._k = _check_nonneg(self.k, "k")

    def _paths(self, z: np.ndarray) -> np.ndarray:
        up, down = np.zeros(z.shape[0]), np.zeros(z.shape[0])
        out = np.empty_like(z)
        for t in range(z.shape[1]):
            up = np.maximum(0.0, up + z[:, t] - self._k)
            down = np.maximum(0.0, down - z[:, t] - self._k)
            out[:, t] = self._pick(up, down)
        return out

    def _pick(self, up: Any, down: Any) -> Any:
        if self.direction == "up":
            return up
        if self.direction == "down":
            return down
        return np.maximum(up, down)

    def _step(self, z: float) -> float:
        self._up = max(0.0, self._up + z - self._k)
        self._down = max(0.0, self._down - z - self._k)
        return float(self._pick(self._up, self._down))

    def _clear(self) -> None:
        self._up, self._down = 0.0, 0.0

    def _state(self) -> list[float]:
        return [self._up, self._down]

    def _restore(self, values: list[float]) -> None:
        self._up, self._down = values


class PageHinkley(_ScalarDetector):
    """Page–Hinkley test (Page 1954; Hinkley 1971) in its streaming form (Gama, Sebastião, Rodrigues 2013): with
    ``x̄_t`` the mean of the standardised stream since the last reset, ``m_t = Σ_{i≤t} (z_i − x̄_i − δ)`` and the
    statistic ``m_t − min_{s≤t} m_s`` for an increase (``M_t − m'_t`` with ``+δ`` for a decrease). ``delta`` is the
    tolerated change in reference standard deviations. Unlike CUSUM it needs no reference mean, only a scale:
    the stream's own running mean is the baseline, so it finds a change away from wherever the stream started.
    """

    kind = "page-hinkley"
    _n: int
    _sum: float
    _m_up: float
    _m_down: float
    _min_up: float
    _max_down: float

    def __init__(self, reference: Any, *, delta: float = 0.05, **kw: Any) -> None:
        super().__init__(reference, **kw)
        self.delta = delta

    def _extra_params(self) -> dict[str, Any]:
        return {"delta": self.delta}

    def _check_extra(self) -> None:
        self._delta = _check_nonneg(self.delta, "delta")

    def _paths(self, z: np.ndarray) -> np.ndarray:
        mean = np.cumsum(z, axis=1) / np.arange(1, z.shape[1] + 1)
        up = np.cumsum(z - mean - self._delta, axis=1)
        down = np.cumsum(z - mean + self._delta, axis=1)
        g_up = up - np.minimum(np.minimum.accumulate(up, axis=1), 0.0)
        g_down = np.maximum(np.maximum.accumulate(down, axis=1), 0.0) - down
        if self.direction == "up":
            return g_up
        if self.direction == "down":
            return g_down
        return np.maximum(g_up, g_down)

    def _step(self, z: float) -> float:
        self._n += 1
        self._sum += z
        mean = self._sum / self._n
        self._m_up += z - mean - self._delta
        self._m_down += z - mean + self._delta
        self._min_up, self._max_down = min(self._min_up, self._m_up), max(self._max_down, self._m_down)
        g_up, g_down = self._m_up - self._min_up, self._max_down - self._m_down
        return float(g_up if self.direction == "up" else g_down if self.direction == "down" else max(g_up, g_down))

    def _clear(self) -> None:
        self._n, self._sum = 0, 0.0
        self._m_up, self._m_down, self._min_up, self._max_down = 0.0, 0.0, 0.0, 0.0

    def _state(self) -> list[float]:
        return [float(self._n), self._sum, self._m_up, self._m_down, self._min_up, self._max_down]

    def _restore(self, values: list[float]) -> None:
        n, self._sum, self._m_up, self._m_down, self._min_up, self._max_down = values
        self._n = int(n)
