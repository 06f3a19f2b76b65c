"""The automatic adaptive retry: when the sanity checks suspect gradient masking, attack again through BPDA/EOT.

A follow-up check: the planner lists it as skipped ("runs only if gradient masking is suspected"); after the planned
steps, the runner asks :meth:`AdaptiveRetry.follow_up` whether to add steps. It does so when a masking finding
fired: each white-box attack is re-run at every budget on the target wrapped by
:func:`sparring.attacks.adaptive.adaptive` — BPDA (Athalye, Carlini, Wagner 2018) straight through the modules
whose gradient vanishes, EOT over 20 draws if the model is randomized. The retried attacks join the per-point worst
case, so gates and curves use the stronger evaluation.
"""

from __future__ import annotations

from sparring.audit.checks.evasion import WHITE_BOX, run_attack
from sparring.audit.registry import PlanContext, RunContext, Skip, Step, StepResult, register_check
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["AdaptiveRetry"]


@register_check
class AdaptiveRetry:
    name = "adaptive-retry"
    threat = "evasion"
    needs = Access.GRADIENTS

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        return Skip(self.name, "evasion", "runs only if the sanity checks suspect gradient masking (BPDA/EOT retry)")

    def follow_up(self, ctx: PlanContext, results: list[StepResult]) -> list[Step]:
        from sparring.audit.findings import masking_findings

        if ctx.access < Access.GRADIENTS or not isinstance(ctx.target, TorchTarget):
            return []
        suspected = masking_findings(results)
        if not suspected:
            return []
        why = "; ".join(f.title.removeprefix("Suspected gradient masking: ") for f in suspected[:3])
        tm = ctx.threat_model
        return [Step(id=f"adaptive/{attack}/{norm}/{eps:g}", check=self.name, threat="evasion",
                     params={"attack": f"{attack} + BPDA/EOT", "base_attack": attack, "norm": norm, "eps": eps},
                     reason=f"gradient masking suspected ({why}): {attack} again through BPDA/EOT")
                for attack, _ in WHITE_BOX[tm.effort] for norm, eps in tm.budgets()]

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.attacks.adaptive import adaptive

        assert isinstance(ctx.attacker_target, TorchTarget)
        wrapped, notes = adaptive(ctx.attacker_target, ctx.x)
        p = step.params
        factory = dict(WHITE_BOX[ctx.threat_model.effort])[p["base_attack"]]()
        result = run_attack(step, ctx, factory(p["norm"], p["eps"], ctx.generator_seed), wrapped)
        notes = notes or ["no gradient blocker or randomness found: attacked the model as it is"]
        result.notes = notes + result.notes
        return result
