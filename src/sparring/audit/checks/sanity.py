"""Evaluation sanity checks (Carlini et al. 2019, "On Evaluating Adversarial Robustness", section 5).

A white-box evaluation can overstate robustness when the model hides its gradients (Athalye, Carlini, Wagner 2018).
These steps collect the evidence the findings need to say so:

* a single-step attack (FGSM) at every budget: it must never beat the iterative attacks;
* an unbounded attack (L∞ eps = the whole input range): robust accuracy must reach ~0;
* a gradient-free attack (Square) at the largest budget: it must not beat the gradient attacks;
* the input gradients at the clean points: they must not vanish;
* two forward passes on the same inputs: a randomized model needs EOT, not plain gradients.

The comparisons themselves are in :mod:`sparring.audit.findings`.
"""

from __future__ import annotations

import time

import torch

from sparring.audit.checks.evasion import run_attack
from sparring.audit.registry import Measurement, PlanContext, RunContext, Skip, Step, StepResult, register_check
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["BLACKBOX_POINTS", "BLACKBOX_QUERIES", "MaskingChecks"]

BLACKBOX_POINTS = 64
"""Points the gradient-free comparison attacks (the first ones of the audit data)."""

BLACKBOX_QUERIES = {"quick": 300, "standard": 1000, "thorough": 5000}


@register_check
class MaskingChecks:
    name = "gradient-masking"
    threat = "evasion"
    needs = Access.GRADIENTS

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        tm = ctx.threat_model
        budgets = tm.budgets()
        if not budgets:
            return Skip(self.name, "evasion", "no evasion budgets: nothing to sanity-check")
        if ctx.access < Access.GRADIENTS or not isinstance(ctx.target, TorchTarget):
            return Skip(self.name, "evasion", "sanity checks of a gradient evaluation need white-box gradients")
        width = ctx.target.spec.range_width
        steps = [Step(id=f"masking/fgsm/{norm}/{eps:g}", check=self.name, threat="evasion",
                      params={"kind": "fgsm", "attack": "fgsm", "norm": norm, "eps": eps},
                      reason="a single-step attack must not beat the iterative ones (else: gradient masking)")
                 for norm, eps in budgets]
        steps.append(Step(id=f"masking/unbounded/linf/{width:g}", check=self.name, threat="evasion",
                          params={"kind": "unbounded", "attack": "pgd", "norm": "linf", "eps": width},
                          reason="an attack allowed the whole input range must break every point"))
        norm, eps = max(budgets, key=lambda b: (b[0] == "linf", b[1]))
        q = BLACKBOX_QUERIES[tm.effort]
        steps.append(Step(id=f"masking/blackbox/{norm}/{eps:g}", check=self.name, threat="evasion",
                          params={"kind": "blackbox", "attack": "square", "norm": norm, "eps": eps, "n_queries": q,
                                  "points": BLACKBOX_POINTS},
                          reason="a gradient-free attack must not beat the gradient attacks at the same budget"))
        steps.append(Step(id="masking/gradients", check=self.name, threat="evasion", params={"kind": "gradients"},
                          reason="input gradients must not vanish on correctly classified points"))
        steps.append(Step(id="masking/randomness", check=self.name, threat="evasion",
                          params={"kind": "randomness", "points": BLACKBOX_POINTS},
                          reason="a model whose output is random needs EOT: plain gradients are single noisy samples"))
        return steps

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.attacks.evasion.fgsm import FGSM
        from sparring.attacks.evasion.pgd import PGD
        from sparring.attacks.evasion.square import Square

        p, seed = step.params, ctx.generator_seed
        if p["kind"] == "fgsm":
            return run_attack(step, ctx, FGSM(eps=p["eps"], norm=p["norm"]), ctx.attacker_target)
        if p["kind"] == "unbounded":
            pgd = PGD(eps=p["eps"], norm="linf", steps=50, alpha=p["eps"] / 10, seed=seed)
            return run_attack(step, ctx, pgd, ctx.attacker_target)
        if p["kind"] == "blackbox":
            sq = Square(eps=p["eps"], norm=p["norm"], n_queries=p["n_queries"], seed=seed)
            return run_attack(step, ctx, sq, ctx.attacker_target, n=p["points"])
        if p["kind"] == "randomness":
            return _randomness_step(step, ctx)
        return _gradient_step(step, ctx)


def _gradient_step(step: Step, ctx: RunContext) -> StepResult:
    target = ctx.attacker_target
    assert isinstance(target, TorchTarget)
    t0 = time.perf_counter()
    grads = target.loss_gradient(ctx.x, ctx.y)
    gnorm = grads.reshape(grads.shape[0], -1).abs().amax(dim=1)
    zero = gnorm <= 1e-12
    return StepResult(
        step_id=step.id, check=step.check, threat="evasion", params=dict(step.params),
        measurements=[Measurement("zero_gradient_fraction", float(zero.float().mean()))],
        per_point={"grad_linf": [float(v) for v in gnorm.cpu()]},
        cost={"queries": 0, "gradients": int(grads.shape[0]), "seconds": round(time.perf_counter() - t0, 6)},
        notes=[f"median |grad|_inf: {float(torch.median(gnorm)):.3g}"],
    )


def _randomness_step(step: Step, ctx: RunContext) -> StepResult:
    t0 = time.perf_counter()
    x = ctx.x[: step.params["points"]]
    target = ctx.attacker_target
    with torch.no_grad():
        a, b = target.query(x), target.query(x)
    tol = 1e-5 * (1 + a.abs().amax(dim=1))
    differ = (a - b).abs().amax(dim=1) > tol
    return StepResult(
        step_id=step.id, check=step.check, threat="evasion", params=dict(step.params),
        measurements=[Measurement("randomized_fraction", float(differ.float().mean()))],
        per_point={"differs": differ.cpu().tolist()},
        cost={"queries": 2 * int(x.shape[0]), "gradients": 0, "seconds": round(time.perf_counter() - t0, 6)},
    )
