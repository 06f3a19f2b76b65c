"""Randomized-smoothing CERTIFY over point shards, on any executor (local, processes, Ray).

Cohen, Rosenfeld & Kolter (2019) certify each input on its own: the ``n0 + n`` noise samples of one input say
nothing about another, so the inputs can be split into shards certified on different workers and put back together.
Shard ``i`` gets the generator seeded with :func:`sparring.executors.shard_seed` of the job's seed and ``i``; the
shard size is the caller's, never the worker count's, so the certificates are the same on every executor and with any
number of workers. (They differ from one unsharded call, whose single noise stream runs through all inputs, except
when everything fits in shard 0, which keeps the job's seed.)

Use it through :meth:`sparring.defenses.certify.smoothing.SmoothedClassifier.certify` with ``executor=`` and/or
``shard_size=``; this module only cuts, ships and gathers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sparring.executors import Executor, LocalExecutor, TaskFn, shard_ranges, shard_seed
from sparring.executors._ship import Shipped
from sparring.targets.base import Target

__all__ = ["DEFAULT_SHARD", "Shipped", "run_shards"]

DEFAULT_SHARD = 64
"""Points per shard when an executor is given without a ``shard_size``."""


def run_shards(fn: TaskFn, target: Target, settings: tuple[Any, ...], xt: torch.Tensor, yt: torch.Tensor | None, *,
               seed: int, executor: Executor | None, shard_size: int | None) -> tuple[dict[str, np.ndarray], int]:
    """``fn((Shipped(target), *settings), (x_shard, y_shard, shard_seed))`` for each shard of ``shard_size`` points
    (default :data:`DEFAULT_SHARD`) on ``executor`` (default local); ``fn`` returns a dict of per-point numpy arrays
    and ``"queries"``. Returns the arrays concatenated in shard order and the shard size. Queries made by remote
    workers are charged to ``target``'s counter afterwards, so its ``used`` is the same whichever executor ran them.
    A shard that raised raises here (the first, in shard order)."""
    ex: Executor = executor if executor is not None else LocalExecutor()
    size = DEFAULT_SHARD if shard_size is None else shard_size
    ranges = shard_ranges(int(xt.shape[0]), size)
    xs, ys = xt.detach().cpu().numpy(), None if yt is None else yt.detach().cpu().numpy()
    tasks = [(xs[a:b], None if ys is None else ys[a:b], shard_seed(seed, i)) for i, (a, b) in enumerate(ranges)]
    counter = target.counter
    q0 = counter.used
    outcomes = ex.map(fn, tasks, shared=(Shipped(target), *settings))  # the model goes once per worker
    for o in outcomes:
        if o.error is not None:
            raise o.error
    parts: list[dict[str, Any]] = [o.value for o in outcomes if o.value is not None]
    queries = sum(int(p.pop("queries")) for p in parts)
    if queries > counter.used - q0:  # spent on other processes or nodes: count them here too
        counter.charge(queries - (counter.used - q0))
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if parts[0][k] is not None}
    merged["queries"] = np.asarray(queries)
    return merged, size
