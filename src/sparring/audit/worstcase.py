"""The per-point worst case over every attack an audit ran at a budget: the one number gates, findings, curves and
tables all report.

A point is **broken** at ``(norm, eps)`` if any attack step at that budget broke it (white-box, black-box,
sanity or adaptive retry alike), **unknown** if none broke it but at least one ran out of queries before finishing it
(Square / HopSkipJump within a query budget: an unfinished attack proves nothing), and **robust** otherwise. Steps
run on a prefix of the audit data (the gradient-free masking check on the first 64 points) constrain that prefix
only. This is the "worst case per sample" of Croce & Hein (2020, AutoAttack's cascade) extended across every step.

Step results carry per point ``robust`` (finished and still correct) and, since budgets are tracked per point,
``unknown``. A checkpoint written before that carries only ``notes`` with ``budget_exhausted: True``; then every
point the step did not break is taken as unknown (which ones ran out is not recorded).

Monitoring gates combine steps too: :func:`drift_gate_value` is the Bonferroni-corrected smallest p-value over the
drift tests (the most alarming test, corrected for how many ran).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparring.audit.registry import StepResult

__all__ = ["TextUnion", "WorstCase", "drift_gate_value", "step_unknown", "text_union", "worst_case", "worst_cases"]


@dataclass(frozen=True)
class WorstCase:
    """The worst case at one budget: per point robust / unknown (neither means broken), and the steps behind it."""

    norm: str
    eps: float
    robust: tuple[bool, ...]
    unknown: tuple[bool, ...]
    steps: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.robust)

    @property
    def n_robust(self) -> int:
        return sum(self.robust)

    @property
    def n_unknown(self) -> int:
        return sum(self.unknown)

    @property
    def accuracy(self) -> float:
        """Robust accuracy: points robust under every attack, over all points (unknown points are not robust)."""
        return self.n_robust / self.n if self.n else 0.0

    @property
    def upper(self) -> float:
        """What robust accuracy could be if every unknown point were robust (equals :attr:`accuracy` without any)."""
        return (self.n_robust + self.n_unknown) / self.n if self.n else 0.0


def same_eps(a: Any, b: float) -> bool:
    """Whether two budgets are the same number (up to float noise from YAML / JSON)."""
    return a is not None and abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(b))


def evasion_steps(results: list[StepResult]) -> list[StepResult]:
    """The finished evasion steps with per-point evidence."""
    return [r for r in results if r.threat == "evasion" and r.status == "done" and "robust" in r.per_point]


def step_unknown(r: StepResult) -> list[bool]:
    """Per point of step ``r``: unfinished (query budget) and not broken."""
    robust = [bool(v) for v in r.per_point["robust"]]
    if "unknown" in r.per_point:
        return [bool(u) and not ok for u, ok in zip(r.per_point["unknown"], robust, strict=True)]
    if any(n.replace(" ", "") == "budget_exhausted:True" for n in r.notes):
        return list(robust)  # an old checkpoint: which points ran out is not recorded, so none of them is robust
    return [False] * len(robust)


def step_broken(r: StepResult) -> list[bool]:
    """Per point of step ``r``: the attack finished and the point is misclassified."""
    return [not ok and not u for ok, u in zip(r.per_point["robust"], step_unknown(r), strict=True)]


def worst_case(results: list[StepResult], norm: str, eps: float) -> WorstCase | None:
    """The worst case over every evasion step at ``(norm, eps)``; None if no step ran there."""
    steps = [r for r in evasion_steps(results) if r.params.get("norm") == norm and same_eps(r.params.get("eps"), eps)]
    if not steps:
        return None
    n = max(len(r.per_point["robust"]) for r in steps)
    broken, unknown = [False] * n, [False] * n
    for r in steps:
        for i, (b, u) in enumerate(zip(step_broken(r), step_unknown(r), strict=True)):
            broken[i] = broken[i] or b
            unknown[i] = unknown[i] or u
    unknown = [u and not b for u, b in zip(unknown, broken, strict=True)]
    robust = tuple(not b and not u for b, u in zip(broken, unknown, strict=True))
    return WorstCase(norm, float(eps), robust, tuple(unknown), tuple(r.step_id for r in steps))


def worst_cases(results: list[StepResult], *, skip_kinds: tuple[str, ...] = ("unbounded",)) -> list[WorstCase]:
    """The worst case at every ``(norm, eps)`` where a step ran, sorted by norm then eps.

    Budgets at which only a step of ``skip_kinds`` ran are left out (by default the unbounded sanity attack, whose
    eps is the whole input range, not a budget of the threat model); at the budgets listed every step counts.
    """
    seen: list[tuple[str, float]] = []
    for r in evasion_steps(results):
        if r.params.get("kind") in skip_kinds:
            continue
        key = (str(r.params["norm"]), float(r.params["eps"]))
        if not any(k[0] == key[0] and same_eps(k[1], key[1]) for k in seen):
            seen.append(key)
    out = [worst_case(results, norm, eps) for norm, eps in sorted(seen)]
    return [w for w in out if w is not None]


@dataclass(frozen=True)
class TextUnion:
    """Text evasion at one edit budget and defence: the per-message union over the text attacks."""

    rate: float
    n_attacked: int
    n_evaded: int
    steps: tuple[str, ...]
    partial: tuple[str, ...]
    """Steps that left a message unfinished (query budget) that no attack evaded: the rate may then be higher."""


def text_union(results: list[StepResult], max_chars: int | None, defence: str) -> TextUnion | None:
    """The share of attacked messages (classified correctly when clean) that at least one text attack got through
    with at most ``max_chars`` edited characters behind ``defence``; None if no step measured it."""
    steps = [r for r in results if r.threat == "text" and r.status == "done" and "success" in r.per_point
             and r.params.get("max_chars") == max_chars and r.params.get("defence") == defence]
    if not steps:
        return None
    correct: dict[int, bool] = {}
    evaded: dict[int, bool] = {}
    unfinished: dict[int, str] = {}
    for r in steps:
        pp = r.per_point
        unknown = pp.get("unknown", [False] * len(pp["index"]))
        for i, cc, ok, u in zip(pp["index"], pp["clean_correct"], pp["success"], unknown, strict=True):
            correct[int(i)] = correct.get(int(i), True) and bool(cc)
            evaded[int(i)] = evaded.get(int(i), False) or bool(ok)
            if u:
                unfinished.setdefault(int(i), r.step_id)
    attacked = [i for i, cc in correct.items() if cc]
    n_evaded = sum(evaded[i] for i in attacked)
    partial = {r.step_id for r in steps if any("budget ran out" in n for n in r.notes)}
    partial |= {unfinished[i] for i in attacked if i in unfinished and not evaded[i]}
    return TextUnion(n_evaded / len(attacked) if attacked else 0.0, len(attacked), n_evaded,
                     tuple(r.step_id for r in steps), tuple(sorted(partial)))


def drift_gate_value(results: list[StepResult], metric: str, method: str | None) -> tuple[float | None, list[str]]:
    """The value of a drift gate and the steps it came from (``None`` when no drift step measured it).

    ``drift_p_value``: with ``method``, that test's p-value; without, ``min(1, k · min p)`` over the ``k`` planned
    tests (Bonferroni). ``drift_detected``: 1.0 when that p-value is below the monitoring alpha, else 0.0.
    """
    done = [r for r in results if r.threat == "drift" and r.status == "done"
            and method in (None, r.params.get("test")) and r.value("drift_p_value") is not None]
    if not done:
        return None, []
    ps = [float(r.value("drift_p_value")) for r in done]  # type: ignore[arg-type]
    k = 1 if method is not None else max(int(done[0].params.get("n_tests", len(done))), len(done))
    p = min(1.0, k * min(ps))
    value = float(p < float(done[0].params["alpha"])) if metric == "drift_detected" else p
    return value, [r.step_id for r in done]
