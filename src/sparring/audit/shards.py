"""Point shards of audit steps: one step as several executor tasks, merged back into one step result on the driver.

A check that can run on a slice of the audit points declares ``merge(step, parts) -> StepResult`` (the evasion and
certification checks). With ``run_audit(..., shard_points=k)`` each such step records ``shard_points: k`` in its
params and runs as ``ceil(n / k)`` tasks: task ``i`` runs the check on points ``[i*k, (i+1)*k)`` with the seed
:func:`sparring.executors.shard_seed` of the step's seed and ``i``. The driver merges the parts, in shard order, into
the step result it checkpoints. The shard size belongs to the step, not to the executor, so a sharded audit gives the
same report on the local executor, on 2 processes or on a Ray cluster.

A sharded step is not the unsharded step: an attack whose randomness is drawn for the whole batch (random starts,
restarts, noise) draws it per shard instead. Deterministic checks (bound propagation) give the same per-point
results either way, and a step that fits in one shard equals the unsharded step (shard 0 keeps the step's seed).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sparring.audit.registry import CHECKS, Step, StepResult
from sparring.executors import Outcome, shard_ranges

__all__ = ["ShardGather", "concat_per_point", "count_fraction", "merge_notes", "shardable", "sum_cost",
           "task_list", "with_shards"]

Shard = tuple[int, int, int]
"""(index, start, stop) of a point shard."""


def shardable(step: Step) -> bool:
    """Whether the step's check can run on point shards (it declares ``merge``)."""
    check = CHECKS.get(step.check)
    return check is not None and callable(getattr(check, "merge", None))


def with_shards(steps: Sequence[Step], shard_points: int | None) -> list[Step]:
    """The steps, each shardable one with ``shard_points`` recorded in its params (so it is in the checkpoint and the
    report, and a resumed audit with another shard size runs the step again)."""
    if not shard_points:
        return list(steps)
    shard_ranges(1, shard_points)  # validates the size
    return [replace(s, params={**s.params, "shard_points": shard_points}) if shardable(s) else s for s in steps]


def task_list(steps: Sequence[tuple[Step, int]], n_points: int) -> tuple[list[tuple[Any, ...]], list[int]]:
    """Executor tasks for ``(step, seed)`` pairs: ``(step, seed)`` for a whole step, ``(step, seed, shard)`` for
    each shard of a sharded one; and, per task, the index of its step in ``steps``."""
    tasks: list[tuple[Any, ...]] = []
    owner: list[int] = []
    for k, (step, seed) in enumerate(steps):
        size = step.params.get("shard_points")
        if not size or not shardable(step):
            tasks.append((step, seed))
            owner.append(k)
            continue
        n = min(n_points, int(step.params.get("points", n_points)))  # a step on the first ``points`` points only
        for i, (a, b) in enumerate(shard_ranges(n, int(size))):
            tasks.append((step, seed, (i, a, b)))
            owner.append(k)
    return tasks, owner


@dataclass
class ShardGather:
    """Collects task outcomes on the driver; :meth:`add` returns ``(step index, outcome)`` once every task of a step
    has arrived (a sharded step merged by its check; a failed shard makes the step fail with that shard's error)."""

    tasks: list[tuple[Any, ...]]
    owner: list[int]
    _parts: dict[int, dict[int, Outcome[Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._need = {k: self.owner.count(k) for k in set(self.owner)}

    def add(self, j: int, outcome: Outcome[Any]) -> tuple[int, Outcome[Any]] | None:
        k, task = self.owner[j], self.tasks[j]
        if len(task) == 2:
            return k, outcome
        parts = self._parts.setdefault(k, {})
        parts[task[2][0]] = outcome
        if len(parts) < self._need[k]:
            return None
        ordered = [parts[i] for i in sorted(parts)]
        secs = max(o.seconds for o in ordered)
        failed = [o for o in ordered if o.value is None or getattr(o.value, "status", "done") != "done"]
        if failed:
            return k, replace(failed[0], seconds=secs)
        step: Step = task[0]
        try:
            merged = CHECKS[step.check].merge(step, [o.value for o in ordered])  # type: ignore[attr-defined]
        except Exception as exc:  # a merge that fails is the step's error, not the audit's
            return k, Outcome(error=exc, seconds=secs)
        return k, Outcome(value=merged, attempts=max(o.attempts for o in ordered), seconds=secs)


# ------------------------------------------------------------------ helpers for the checks' merge methods
def concat_per_point(parts: Sequence[StepResult]) -> dict[str, list[Any]]:
    """The parts' per-point lists, concatenated in shard order (keys of the first part)."""
    return {key: [v for p in parts for v in p.per_point.get(key, [])] for key in parts[0].per_point}


def sum_cost(parts: Sequence[StepResult]) -> dict[str, float]:
    """Queries, gradients and seconds added over the shards (seconds: the work, not the wall clock)."""
    keys = dict.fromkeys(k for p in parts for k in p.cost)
    return {k: round(sum(float(p.cost.get(k, 0.0)) for p in parts), 6) for k in keys}


def count_fraction(values: Sequence[float], sizes: Sequence[int]) -> float:
    """A fraction of points over all shards from each shard's fraction and size: the counts are recovered exactly
    (``round(v * n)``) and divided by the total, as one ``mean`` over all the points would give."""
    total = sum(sizes)
    return sum(round(v * n) for v, n in zip(values, sizes, strict=True)) / total if total else 0.0


_COUNT = re.compile(r"^(.*?)(-?\d+)(\D*)$")


def merge_notes(parts: Sequence[StepResult]) -> list[str]:
    """The parts' notes: a note every shard has once; notes that differ only by one integer (a count) summed;
    any other note kept with its shard's index."""
    notes = [p.notes for p in parts]
    if all(n == notes[0] for n in notes):
        return list(notes[0])
    out: list[str] = []
    if all(len(n) == len(notes[0]) for n in notes):
        for lines in zip(*notes, strict=True):
            m = [_COUNT.match(line) for line in lines]
            if all(x is not None for x in m) and len({(x.group(1), x.group(3)) for x in m if x}) == 1:
                first = m[0]
                assert first is not None
                out.append(f"{first.group(1)}{sum(int(x.group(2)) for x in m if x)}{first.group(3)}")
            elif len(set(lines)) == 1:
                out.append(lines[0])
            else:
                out += [f"shard {i}: {line}" for i, line in enumerate(lines)]
        return out
    return [f"shard {i}: {line}" for i, n in enumerate(notes) for line in n]
