"""The executor interface and the local (in-process) executor.

An executor maps a function over tasks: ``executor.map(fn, tasks, shared=ctx, on_result=cb)`` calls
``fn(ctx, task)`` for every task, wherever the executor runs it, and returns one :class:`Outcome` per task **in
submission order**. ``shared`` is what every task needs (a model, a data set, a threat model): it is sent to each
worker once, not once per task. An exception a task raises is returned in its outcome, never raised from ``map``,
so one failing task cannot take the others down; ``on_result(index, outcome)`` is called on the driver as each
outcome arrives (in completion order), which is where the audit runner writes a step's checkpoint.

Determinism is the caller's part: a task must carry its own seed (the audit derives it from the threat model's
seed and the step id), so the result of a task never depends on which worker ran it or in what order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Executor", "LocalExecutor", "Outcome", "TaskFn"]

T = TypeVar("T")
R = TypeVar("R")

TaskFn = Callable[[Any, Any], Any]
"""``fn(shared, task) -> result``: a module-level function (it is pickled by reference to reach the workers)."""


@dataclass
class Outcome(Generic[R]):
    """What became of one task: its ``value``, or the ``error`` it raised (or that lost it: a dead worker)."""

    value: R | None = None
    error: BaseException | None = None
    attempts: int = 1
    """How many times the task was started (more than 1 when a worker died under it and it was rerun)."""
    seconds: float = 0.0
    """Wall-clock seconds from submission to the outcome, as the driver saw it."""

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor(Protocol):
    """Runs tasks locally, on a pool of processes, or on a Ray cluster (:func:`sparring.executors.get_executor`)."""

    name: str

    @property
    def workers(self) -> int:
        """How many tasks run at once."""
        ...

    def map(self, fn: TaskFn, tasks: Sequence[Any], *, shared: Any = None,
            on_result: Callable[[int, Outcome[Any]], None] | None = None) -> list[Outcome[Any]]:
        """``fn(shared, task)`` for every task; outcomes in submission order; ``on_result`` as each arrives."""
        ...

    def close(self) -> None:
        """Release the workers (a no-op for the local executor)."""
        ...


class LocalExecutor:
    """Today's behaviour: every task in this process, one after the other, in submission order.

    ``KeyboardInterrupt`` is not caught: Ctrl-C abandons the task in progress (the outcomes delivered through
    ``on_result`` so far stand)."""

    name = "local"
    workers = 1

    def map(self, fn: TaskFn, tasks: Sequence[Any], *, shared: Any = None,
            on_result: Callable[[int, Outcome[Any]], None] | None = None) -> list[Outcome[Any]]:
        out: list[Outcome[Any]] = []
        for i, task in enumerate(tasks):
            t0 = time.perf_counter()
            try:
                o: Outcome[Any] = Outcome(value=fn(shared, task))
            except Exception as exc:  # returned, not raised: the other tasks still run
                o = Outcome(error=exc)
            o.seconds = time.perf_counter() - t0
            out.append(o)
            if on_result is not None:
                on_result(i, o)
        return out

    def close(self) -> None:
        return None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
