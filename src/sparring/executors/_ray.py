"""Tasks on a Ray cluster (``--executor ray``, ``--ray auto|ADDRESS``; the optional extra ``sparring[ray]``).

Ray (Moritz et al., 2018, "Ray: A Distributed Framework for Emerging AI Applications", OSDI) runs each task as a
remote function. What every task needs (``shared``: the threat model, an in-memory model, the data) is put in the
object store once per :meth:`RayExecutor.map` with ``ray.put`` and passed to every task by reference, so a node
fetches it once, not once per task. Tasks are submitted with ``max_retries``: when the worker process running one is
killed (``kill -9``) or its node is lost, Ray reruns it elsewhere; since every task carries its own seed, the rerun
gives the same result. An exception the task itself raises is not retried: it comes back in the task's outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sparring.errors import ParameterError, WorkerLostError
from sparring.executors._base import Outcome, TaskFn

__all__ = ["RayExecutor"]


def _ray_task(fn: TaskFn, shared: Any, task: Any, threads: int) -> Any:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return fn(shared, task)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ParameterError(
            "the ray executor needs Ray: pip install 'sparring[ray]' (or choose --executor local|processes)."
        ) from exc
    return ray


class RayExecutor:
    """Run tasks on a Ray cluster; outcomes in submission order.

    Args:
        address: ``"auto"`` (the cluster this machine belongs to, or ``RAY_ADDRESS``), ``"HOST:PORT"`` of a head
            node, or None to start a private one-machine cluster with ``workers`` CPUs (stopped by :meth:`close`).
        workers: CPUs of the private cluster (with ``address=None``); with an address, the cluster's CPUs count.
        max_retries: reruns of a task whose worker or node died.
        threads_per_worker: torch intra-op threads in each task (and the CPUs each task asks Ray for).
    """

    name = "ray"

    def __init__(self, address: str | None = "auto", *, workers: int | None = None, max_retries: int = 3,
                 threads_per_worker: int = 1) -> None:
        if workers is not None and workers < 1:
            raise ParameterError(f"workers must be >= 1, got {workers}.")
        self.address = address
        self.max_retries = max_retries
        self.threads_per_worker = threads_per_worker
        self._requested = workers
        self._owned = False
        self._remote: Any = None

    @property
    def workers(self) -> int:
        """The CPUs the cluster offers (what runs at once, with one CPU per task)."""
        ray = self._ray()
        return max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, self.threads_per_worker))

    def _ray(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
            if self.address is None:
                kwargs.update(num_cpus=self._requested or 2, include_dashboard=False)
            else:
                kwargs["address"] = self.address
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ParameterError(
                    f"cannot connect to a Ray cluster at {self.address!r} ({exc}); start one with `ray start --head` "
                    "(see docs/cluster.md) or pass its address as --ray HOST:PORT."
                ) from exc
            self._owned = True
        if self._remote is None:
            self._remote = ray.remote(_ray_task).options(num_cpus=self.threads_per_worker,
                                                         max_retries=self.max_retries, retry_exceptions=False)
        return ray

    def map(self, fn: TaskFn, tasks: Sequence[Any], *, shared: Any = None,
            on_result: Callable[[int, Outcome[Any]], None] | None = None) -> list[Outcome[Any]]:
        ray = self._ray()
        from ray.exceptions import RayTaskError

        ref = ray.put(shared)  # once into the object store; every task gets the reference
        t0 = time.perf_counter()
        refs = [self._remote.remote(fn, ref, task, self.threads_per_worker) for task in tasks]
        index = {r.hex(): i for i, r in enumerate(refs)}
        outcomes: list[Outcome[Any] | None] = [None] * len(refs)
        rest = list(refs)
        try:
            while rest:
                done, rest = ray.wait(rest, num_returns=1)
                for r in done:
                    i = index[r.hex()]
                    try:
                        o: Outcome[Any] = Outcome(value=ray.get(r))
                    except RayTaskError as exc:  # the task raised: hand back its own exception
                        cause = getattr(exc, "cause", None)
                        o = Outcome(error=cause if isinstance(cause, BaseException) else exc)
                    except ray.exceptions.RayError as exc:  # lost beyond max_retries
                        o = Outcome(error=WorkerLostError(
                            f"Ray could not finish task {i} after {self.max_retries} retries "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); check the "
                            "cluster's nodes (ray status) and run again with --resume."))
                    o.seconds = time.perf_counter() - t0
                    outcomes[i] = o
                    if on_result is not None:
                        on_result(i, o)
        except BaseException:
            for r in rest:
                ray.cancel(r, force=True)
            raise
        return [o for o in outcomes if o is not None]

    def close(self) -> None:
        """Disconnect from the cluster (and stop it if this executor started it)."""
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False
            self._remote = None

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
