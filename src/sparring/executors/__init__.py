"""Executors: run independent, seeded tasks locally, on a pool of processes, or on a Ray cluster.

The audit runner (one task per step, or per point shard of a step), LiRA (one task per shadow model) and
randomized-smoothing CERTIFY (one task per point shard) hand their work to an :class:`Executor`; results come back in
submission order and never depend on which executor ran them, because every task carries its own seed (a shard's
from the job's seed and its index: :func:`shard_seed`, :func:`shard_ranges`). See docs/cluster.md.

>>> from sparring.executors import get_executor
>>> ex = get_executor("local")
>>> [o.value for o in ex.map(lambda shared, t: shared + t, [1, 2, 3], shared=10)]
[11, 12, 13]
"""

from __future__ import annotations

from typing import Literal

from sparring.errors import ParameterError
from sparring.executors._base import Executor, LocalExecutor, Outcome, TaskFn
from sparring.executors._processes import ProcessExecutor
from sparring.executors._progress import TaskBar
from sparring.executors._ray import RayExecutor
from sparring.executors._shards import shard_ranges, shard_seed

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "Outcome", "ProcessExecutor", "RayExecutor", "TaskBar",
           "TaskFn", "get_executor", "shard_ranges", "shard_seed"]

EXECUTORS = ("local", "processes", "ray")

ExecutorName = Literal["local", "processes", "ray"]


def get_executor(name: str = "local", *, workers: int | None = None, ray_address: str | None = None,
                 max_retries: int = 3) -> Executor:
    """The executor called ``name``: ``local`` (in this process, the default), ``processes`` (``workers`` spawned
    processes, default 2) or ``ray`` (the cluster at ``ray_address``: ``"auto"`` or ``HOST:PORT``; without one, a
    private local cluster with ``workers`` CPUs). Ray is imported only when the ray executor runs a task."""
    if name == "local":
        if workers not in (None, 1):
            raise ParameterError(f"the local executor runs one task at a time; got workers={workers}. Use "
                                 "--executor processes (or ray) to run several at once.")
        return LocalExecutor()
    if name == "processes":
        return ProcessExecutor(workers or 2, max_retries=max_retries)
    if name == "ray":
        return RayExecutor(ray_address, workers=workers, max_retries=max_retries)
    raise ParameterError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}.")
