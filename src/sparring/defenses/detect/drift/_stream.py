"""Shared pieces of the online detectors: parameter checks, stream simulation, state fingerprints."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sparring.defenses.detect.drift.result import NonIIDReferenceWarning, check_positive_int, lag1_pvalue
from sparring.errors import ParameterError

STATE_VERSION = 1


@dataclass(frozen=True)
class OnlineStep:
    """One update of an online detector: ``t`` is the step since the last alarm (or start), ``statistic`` and
    ``threshold`` are ``None`` while the window is still filling, ``drift`` is ``statistic > threshold``. After an
    alarm the detector starts afresh, so the steps between alarms under no drift average the configured ERT."""

    t: int
    statistic: float | None
    threshold: float | None
    drift: bool

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "statistic": self.statistic, "threshold": self.threshold, "drift": self.drift}


def check_ert(ert: Any, warmup: int) -> float:
    if isinstance(ert, bool) or not isinstance(ert, int | float) or not math.isfinite(ert) or ert <= warmup + 1:
        raise ParameterError(f"ert (expected run time between false alarms, in steps) must be a number above "
                             f"{warmup + 1} (the steps needed to fill the window, plus one); got {ert!r}.")
    return float(ert)


def auto_bootstraps(ert: float, window: int, steps: int, cap: int = 100_000) -> int:
    """Streams to simulate so the pooled steady-state threshold rests on about 100 independent exceedances:
    windows a full window apart are nearly independent, so ``(steps − window) / window`` per stream, each over
    the threshold with chance ``β = 1 / (ert − window + 1)``. At ERT 500 and window 10 a fixed 2000 streams gave
    about 12 (measured on held-out digits: run length 406, 95% interval 337–498); this rule gives 16,467, and
    costs seconds. At least 2000, at most ``cap``."""
    per_stream = max(steps - window, 1) / window
    return int(min(cap, max(2000, math.ceil(100 * (ert - window + 1) / per_stream))))


def check_bootstrap(bootstrap: str, block_length: int | None) -> int:
    if bootstrap not in ("iid", "block"):
        raise ParameterError(f"bootstrap must be 'iid' or 'block'; got {bootstrap!r}.")
    if bootstrap == "iid":
        return 1
    return check_positive_int(block_length if block_length is not None else 10, "block_length", 2)


def warn_if_dependent(reference: torch.Tensor, bootstrap: str) -> None:
    """Warn (:class:`NonIIDReferenceWarning`) when the reference fails a lag-1 autocorrelation test at 1%."""
    if bootstrap != "iid":
        return
    p = lag1_pvalue(reference)
    if p < 0.01:
        warnings.warn(f"the reference data look serially dependent (lag-1 autocorrelation test p = {p:.2g}): "
                      "thresholds calibrated by i.i.d. resampling will give false alarms sooner than the ERT. "
                      "Shuffle the reference if its order means nothing, or pass bootstrap='block'.",
                      NonIIDReferenceWarning, stacklevel=3)


def stream_indices(n: int, length: int, count: int, block: int, rng: np.random.Generator,
                   replace: bool) -> np.ndarray:
    """``(count, length)`` indices into a reference of ``n`` rows: i.i.d. draws (``block == 1``) or runs of
    ``block`` consecutive rows (moving-block bootstrap, Künsch 1989). Without ``replace`` no row repeats within a
    stream (rows drawn by random permutation, blocks from a partition of the reference)."""
    if block == 1:
        if replace:
            return rng.integers(0, n, size=(count, length))
        return _without_replacement(n, length, count, rng)
    k = -(-length // block)
    if replace:
        starts = rng.integers(0, n - block + 1, size=(count, k))
    else:
        starts = block * _without_replacement(n // block, k, count, rng)
    return (starts[:, :, None] + np.arange(block)).reshape(count, -1)[:, :length]


def _without_replacement(n: int, k: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` draws of ``k`` distinct indices in ``range(n)``: one sort of a ``(count, n)`` random matrix while
    that is small, else one ``choice`` per draw (16,000 streams from a 10,000-row reference would need 1.3 GB)."""
    if count * n <= 2**24:
        return np.argsort(rng.random((count, n)), axis=1)[:, :k]
    return np.stack([rng.choice(n, size=k, replace=False) for _ in range(count)])


def fingerprint(reference: torch.Tensor, params: dict[str, Any]) -> str:
    """A hash of the reference values and the configuration: a state only loads into the detector it came from."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(reference.detach().cpu().numpy()).tobytes())
    return h.hexdigest()[:32]


def hazard_thresholds(stats: torch.Tensor, beta: float, pool_from: int | None = None) -> list[float]:
    """Time-varying thresholds from simulated no-drift statistics ``(B, S)``: at each step the ``1 - beta``
    quantile among the streams with no alarm yet, so the chance of a first alarm is ``beta`` at every step (Cobb,
    Van Looveren, Klaise 2022, Alg. 1): run lengths are geometric, with mean ``1 / beta`` once the window is full.

    From step ``pool_from`` on (the statistic's law among surviving streams has settled by then) one common
    threshold serves every later step: the value at which the first alarms over steps ``pool_from … S − 1``
    number ``beta`` times the streams alive at those steps. It pools ``S − pool_from`` steps of simulation, where
    a per-step quantile rests on about ``beta·B`` exceedances: with ``B = 2000`` and ``beta = 1/91`` the last
    per-step threshold alone put the false-alarm hazard anywhere from 0.4 to 1.9 times ``beta`` across seeds
    (digits, window 10), and the steps after the last calibrated one, which use it, make most of the run length.
    """
    n_steps = stats.shape[1]
    pool_from = n_steps if pool_from is None else min(max(pool_from, 0), n_steps)
    alive = torch.ones(stats.shape[0], dtype=torch.bool, device=stats.device)
    out = []
    for s in range(pool_from):
        vals = stats[alive, s]
        if vals.numel() < 10:
            raise ParameterError(f"only {vals.numel()} simulated streams left at step {s}; raise n_bootstraps.")
        b = float(torch.quantile(vals, 1 - beta))
        out.append(b)
        alive &= stats[:, s] <= b
    if pool_from == n_steps:
        return out
    tail = stats[alive, pool_from:]
    if tail.shape[0] < 10:
        raise ParameterError(f"only {tail.shape[0]} simulated streams left at step {pool_from}; raise n_bootstraps.")

    def hazard(b: float) -> float:
        over = tail > b
        first = over.int().cumsum(1)
        alive_at = (first - over.int()) == 0  # no alarm before this step
        return float((over & alive_at).sum()) / float(alive_at.sum())

    lo, hi = float(torch.quantile(tail[:, 0], 1 - beta)) * 0.5, float(tail.max())
    while hazard(lo) < beta:  # widen until the root is bracketed
        lo -= abs(lo) + 1e-12
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if hazard(mid) > beta:
            lo = mid
        else:
            hi = mid
    return out + [hi] * (n_steps - pool_from)
