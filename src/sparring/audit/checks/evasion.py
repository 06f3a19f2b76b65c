"""Evasion checks: the attacks an audit runs at each declared budget, chosen by the attacker's access.

* gradients (white-box): the strongest gradient attacks available at the audit's ``effort``;
* scores (black-box or grey-box API): Square (Andriushchenko et al. 2020) within the query budget;
* labels only: HopSkipJump (Chen et al. 2020) within the query budget.

Each (attack, norm, eps) is one step, checkpointed on its own; with point shards (``run_audit(...,
shard_points=k)``, :mod:`sparring.audit.shards`) a step runs as several tasks merged by :func:`merge_evasion`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from sparring.attacks.base import EvasionAttack
from sparring.attacks.result import EvasionResult
from sparring.audit.registry import Measurement, PlanContext, RunContext, Skip, Step, StepResult, register_check
from sparring.targets.spec import Access

__all__ = ["WHITE_BOX", "EvasionGradient", "EvasionLabels", "EvasionScores", "evasion_result", "merge_evasion",
           "run_attack"]

AttackFactory = Callable[[str, float, int], EvasionAttack]


def _pgd(steps: int) -> AttackFactory:
    from sparring.attacks.evasion.pgd import PGD

    # the logit margin (Carlini & Wagner 2017), not cross-entropy: on a confident model float32 softmax saturates
    # and the CE gradient is exactly zero, so PGD-CE stalls and gradient-free Square "beats" it (issue 22.3)
    return lambda norm, eps, seed: PGD(eps=eps, norm=norm, steps=steps, loss="margin", seed=seed)


def _apgd(steps: int) -> AttackFactory:
    from sparring.attacks.evasion.apgd import APGD

    return lambda norm, eps, seed: APGD(eps=eps, norm=norm, steps=steps, seed=seed)


def _apgd_t(steps: int, targets: int) -> AttackFactory:
    from sparring.attacks.evasion.apgd import APGDT

    return lambda norm, eps, seed: APGDT(eps=eps, norm=norm, steps=steps, n_target_classes=targets, seed=seed)


def _autoattack() -> AttackFactory:
    from sparring.attacks.evasion.autoattack import AutoAttack

    return lambda norm, eps, seed: AutoAttack(eps=eps, norm=norm, version="standard", seed=seed)


WHITE_BOX: dict[str, list[tuple[str, Callable[[], AttackFactory]]]] = {
    "quick": [("pgd", lambda: _pgd(20))],
    "standard": [("apgd-ce", lambda: _apgd(50)), ("apgd-t", lambda: _apgd_t(50, 3))],
    "thorough": [("autoattack", _autoattack)],
}
"""White-box attacks run at every budget, by effort: (step name, factory of factory). ``quick``: PGD-20 on the logit
margin; ``standard``: APGD-CE 50 iterations and APGD-T against the 3 most likely other classes, 50 iterations each;
``thorough``: AutoAttack in its reference configuration (Croce & Hein 2020)."""

QUERIES = {"quick": 500, "standard": 2000, "thorough": 5000}
"""Default black-box queries per example, by effort (the threat model's ``attacker.query_budget`` overrides)."""


def evasion_result(step: Step, result: EvasionResult, x: torch.Tensor, n_examples: int = 6) -> StepResult:
    """Turn an :class:`EvasionResult` into a checkpointable step result with per-point evidence and examples."""
    y = torch.as_tensor(result.y).cpu()
    adv_pred = torch.as_tensor(result.adv_pred).cpu()
    clean = torch.as_tensor(result.clean_correct).cpu()
    unknown = torch.as_tensor(result.unknown_mask)  # the query budget ran out first: neither robust nor broken
    robust = (adv_pred == y) & ~unknown
    broken = (clean & ~robust).nonzero().squeeze(1)[:n_examples]
    x_adv = torch.as_tensor(result.x_adv).cpu()
    rounded = {k: round(float(v), 6) for k, v in result.cost.to_dict().items()}
    return StepResult(
        step_id=step.id, check=step.check, threat=step.threat, params=dict(step.params),
        measurements=_measurements(step, robust, clean, unknown, result.attack_success_rate),
        per_point={"robust": robust.tolist(), "unknown": unknown.tolist(), "clean_correct": clean.tolist(),
                   "adv_pred": adv_pred.tolist(),
                   "norm": [round(v, 6) for v in torch.as_tensor(result.norms).cpu().tolist()]},
        examples={"index": broken.tolist(), "x": x.cpu()[broken].tolist(), "x_adv": x_adv[broken].tolist(),
                  "y": y[broken].tolist(), "adv_pred": adv_pred[broken].tolist()},
        cost=rounded,
        notes=[f"{k}: {v}" for k, v in sorted(result.extras.items())],
    )


def _measurements(step: Step, robust: torch.Tensor, clean: torch.Tensor, unknown: torch.Tensor,
                  success_rate: float) -> list[Measurement]:
    p = step.params
    common = {"norm": p["norm"], "eps": p["eps"], "attack": p["attack"]}
    return [
        Measurement("robust_accuracy", float(robust.float().mean()), common),
        Measurement("clean_accuracy", float(clean.float().mean()), common),
        Measurement("attack_success_rate", success_rate, common),
        Measurement("unknown_rate", float(unknown.float().mean()) if len(unknown) else 0.0, common),
    ]


def merge_evasion(step: Step, parts: list[StepResult], n_examples: int = 6) -> StepResult:
    """One evasion step's result from its point shards (:mod:`sparring.audit.shards`), in shard order: per-point
    evidence concatenated, the measurements computed over all points exactly as :func:`evasion_result` does
    (the attack success rate from each shard's count of broken clean-correct points), costs added, the first
    ``n_examples`` broken points as examples (indices into the whole audit set)."""
    from sparring.audit.shards import concat_per_point, count_fraction, merge_notes, sum_cost

    per_point = concat_per_point(parts)
    robust, clean = torch.tensor(per_point["robust"], dtype=torch.bool), torch.tensor(per_point["clean_correct"],
                                                                                     dtype=torch.bool)
    unknown = torch.tensor(per_point["unknown"], dtype=torch.bool)
    n_clean = [sum(map(bool, p.per_point["clean_correct"])) for p in parts]
    asr = count_fraction([p.value("attack_success_rate") or 0.0 for p in parts], n_clean)
    examples: dict[str, list[Any]] = {key: [] for key in parts[0].examples}
    offset = 0
    for p in parts:
        for key, values in p.examples.items():
            examples[key] += [offset + int(v) for v in values] if key == "index" else list(values)
        offset += len(p.per_point["robust"])
    examples = {key: v[:n_examples] for key, v in examples.items()}
    return StepResult(step_id=step.id, check=step.check, threat=step.threat, params=dict(step.params),
                      measurements=_measurements(step, robust, clean, unknown, asr), per_point=per_point,
                      examples=examples, cost=sum_cost(parts), notes=merge_notes(parts))


def run_attack(step: Step, ctx: RunContext, attack: EvasionAttack, target: Any, *, n: int | None = None) -> StepResult:
    """Run ``attack`` on the audit data (the first ``n`` points if given) with the step's own seed."""
    gen = torch.Generator(device=target.device).manual_seed(ctx.generator_seed)
    x, y = (ctx.x, ctx.y) if n is None else (ctx.x[:n], ctx.y[:n])
    result = attack(target, x, y, generator=gen, progress=ctx.progress)
    return evasion_result(step, result, x)


def _fmt(eps: float) -> str:
    return f"{eps:g}"


@register_check
class EvasionGradient:
    """White-box gradient attacks at every budget of the threat model."""

    name = "evasion-gradient"
    threat = "evasion"
    needs = Access.GRADIENTS

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        tm = ctx.threat_model
        budgets = tm.budgets()
        if not budgets:
            return Skip(self.name, "evasion", "no evasion budgets in the threat model (attacker.evasion or gates)")
        if ctx.access < Access.GRADIENTS:
            return Skip(self.name, "evasion", f"the attacker has {ctx.access.describe()}, not gradients "
                        f"({tm.attacker.knowledge}, API returns {tm.exposure.output}): black-box attacks instead")
        steps = []
        for attack, _ in WHITE_BOX[tm.effort]:
            for norm, eps in budgets:
                steps.append(Step(
                    id=f"evasion/{attack}/{norm}/{_fmt(eps)}", check=self.name, threat="evasion",
                    params={"attack": attack, "norm": norm, "eps": eps},
                    reason=f"white-box attacker with gradients; {attack} at effort {tm.effort!r}",
                ))
        return steps

    def merge(self, step: Step, parts: list[StepResult]) -> StepResult:
        return merge_evasion(step, parts)

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        p = step.params
        factory = dict(WHITE_BOX[ctx.threat_model.effort])[p["attack"]]()
        return run_attack(step, ctx, factory(p["norm"], p["eps"], ctx.generator_seed), ctx.attacker_target)


@register_check
class EvasionScores:
    """Square Attack through the scores the API returns (black-box or grey-box attacker)."""

    name = "evasion-scores"
    threat = "evasion"
    needs = Access.SCORES

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        tm = ctx.threat_model
        if not tm.budgets():
            return Skip(self.name, "evasion", "no evasion budgets in the threat model")
        if ctx.access != Access.SCORES:
            why = ("gradient attacks cover a white-box attacker" if ctx.access > Access.SCORES
                   else "the API returns labels only: HopSkipJump instead of Square")
            return Skip(self.name, "evasion", why)
        q = tm.attacker.query_budget or QUERIES[tm.effort]
        return [Step(id=f"evasion/square/{norm}/{_fmt(eps)}", check=self.name, threat="evasion",
                     params={"attack": "square", "norm": norm, "eps": eps, "n_queries": q},
                     reason=f"{tm.attacker.knowledge} attacker sees scores ({tm.exposure.output}): Square with "
                            f"{q} queries per example")
                for norm, eps in tm.budgets()]

    def merge(self, step: Step, parts: list[StepResult]) -> StepResult:
        return merge_evasion(step, parts)

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.attacks.evasion.square import Square

        p = step.params
        attack = Square(eps=p["eps"], norm=p["norm"], n_queries=p["n_queries"], seed=ctx.generator_seed)
        return run_attack(step, ctx, attack, ctx.attacker_target)


@register_check
class EvasionLabels:
    """HopSkipJump through predicted labels only."""

    name = "evasion-labels"
    threat = "evasion"
    needs = Access.LABELS

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        tm = ctx.threat_model
        if not tm.budgets():
            return Skip(self.name, "evasion", "no evasion budgets in the threat model")
        if ctx.access != Access.LABELS:
            return Skip(self.name, "evasion", "the attacker sees more than labels: stronger attacks apply")
        q = tm.attacker.query_budget or QUERIES[tm.effort]
        iters = max(1, min(40, int(math.sqrt(q))))
        return [Step(id=f"evasion/hopskipjump/{norm}/{_fmt(eps)}", check=self.name, threat="evasion",
                     params={"attack": "hopskipjump", "norm": norm, "eps": eps, "max_queries": q, "max_iter": iters},
                     reason=f"labels-only API: HopSkipJump with {q} queries per example instead of gradient attacks")
                for norm, eps in tm.budgets()]

    def merge(self, step: Step, parts: list[StepResult]) -> StepResult:
        return merge_evasion(step, parts)

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.attacks.evasion.hopskipjump import HopSkipJump

        p = step.params
        attack = HopSkipJump(norm=p["norm"], eps=p["eps"], max_queries=p["max_queries"], max_iter=p["max_iter"],
                             seed=ctx.generator_seed)
        return run_attack(step, ctx, attack, ctx.attacker_target)
