"""A pool of worker processes on this machine (``--executor processes --workers N``).

Workers are started with ``spawn`` (a clean interpreter: no forked torch thread pools, the same on Linux, macOS and
Windows). What every task needs (``shared``) is pickled once per :meth:`ProcessExecutor.map` and handed to each
worker once, by the pool's initializer; each task then carries only its own small description. A worker that dies
under a task (``kill -9``, the out-of-memory killer) breaks the pool: the executor starts a fresh pool and reruns the
tasks that had not finished, up to ``max_retries`` times each, so a lost worker changes nothing in the results.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from sparring.errors import ParameterError, WorkerLostError
from sparring.executors._base import Outcome, TaskFn

__all__ = ["ProcessExecutor"]

_SHARED: Any = None


def _init_worker(payload: bytes, threads: int) -> None:
    global _SHARED
    import torch

    torch.set_num_threads(threads)
    _SHARED = pickle.loads(payload)


def _call(fn: TaskFn, task: Any) -> Any:
    try:
        return fn(_SHARED, task)
    except Exception as exc:
        try:
            pickle.dumps(exc)
        except Exception:  # an exception that cannot travel: keep its type name and message
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
        raise


class ProcessExecutor:
    """Run tasks on ``workers`` spawned processes; outcomes in submission order.

    Args:
        workers: processes in the pool (the cores to use; 2 on a 2-core machine).
        max_retries: how many times a task is rerun after the worker running it died.
        threads_per_worker: torch intra-op threads in each worker (1: the workers already fill the cores).
    """

    name = "processes"

    def __init__(self, workers: int = 2, *, max_retries: int = 3, threads_per_worker: int = 1) -> None:
        if workers < 1:
            raise ParameterError(f"workers must be >= 1, got {workers}; give the number of processes to run.")
        if max_retries < 0:
            raise ParameterError(f"max_retries must be >= 0, got {max_retries}.")
        self.workers = workers
        self.max_retries = max_retries
        self.threads_per_worker = threads_per_worker
        self._pool: ProcessPoolExecutor | None = None
        self._key = ""
        self.pools_started = 0
        """How many pools this executor started (1 + the number of times a dead worker broke one)."""

    def _get_pool(self, payload: bytes) -> ProcessPoolExecutor:
        key = hashlib.sha256(payload).hexdigest()
        if self._pool is None or key != self._key:
            self.close()
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(payload, self.threads_per_worker))
            self._key = key
            self.pools_started += 1
        return self._pool

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (for monitoring, and for the tests that kill one)."""
        procs = getattr(self._pool, "_processes", None) or {}
        return [p.pid for p in procs.values() if p.pid is not None and p.is_alive()]

    def map(self, fn: TaskFn, tasks: Sequence[Any], *, shared: Any = None,
            on_result: Callable[[int, Outcome[Any]], None] | None = None) -> list[Outcome[Any]]:
        try:
            payload = pickle.dumps(shared)
        except Exception as exc:
            raise ParameterError(
                f"what the tasks share cannot be pickled for worker processes ({type(exc).__name__}: {exc}); "
                "load the model from a file or the zoo, or use the local executor."
            ) from exc
        n = len(tasks)
        outcomes: list[Outcome[Any] | None] = [None] * n
        attempts = [0] * n
        started = [0.0] * n
        pending = list(range(n))

        def deliver(i: int, o: Outcome[Any]) -> None:
            o.attempts, o.seconds = attempts[i], time.perf_counter() - started[i]
            outcomes[i] = o
            if on_result is not None:
                on_result(i, o)

        while pending:
            pool = self._get_pool(payload)
            futures: dict[Future[Any], int] = {}
            for i in pending:
                attempts[i] += 1
                started[i] = started[i] or time.perf_counter()
                futures[pool.submit(_call, fn, tasks[i])] = i
            broken = False
            try:
                rest = set(futures)
                while rest:
                    done, rest = wait(rest, return_when=FIRST_COMPLETED)
                    for f in sorted(done, key=futures.__getitem__):
                        i = futures[f]
                        try:
                            o: Outcome[Any] = Outcome(value=f.result())
                        except BrokenProcessPool:
                            broken = True
                            continue
                        except Exception as exc:
                            o = Outcome(error=exc)
                        deliver(i, o)
            except BaseException:  # Ctrl-C: stop the workers, keep what was delivered
                self.close(cancel=True)
                raise
            pending = [i for i in range(n) if outcomes[i] is None]
            if broken:
                self.close(cancel=True)
                for i in list(pending):
                    if attempts[i] > self.max_retries:
                        deliver(i, Outcome(error=WorkerLostError(
                            f"the worker process running task {i} died {attempts[i]} times (killed, or out of "
                            "memory); run with fewer --workers, or the local executor to see the error.")))
                pending = [i for i in range(n) if outcomes[i] is None]
        return [o for o in outcomes if o is not None]

    def close(self, cancel: bool = False) -> None:
        """Stop the pool (its workers exit); a later :meth:`map` starts a new one."""
        pool, self._pool = self._pool, None
        if pool is not None:
            if cancel:
                for pid in [p.pid for p in (getattr(pool, "_processes", None) or {}).values() if p.pid]:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
