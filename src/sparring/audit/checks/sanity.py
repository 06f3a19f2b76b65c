"""Evaluation sanity checks (Carlini et al. 2019, "On Evaluating Adversarial Robustness", section 5).

A white-box evaluation can overstate robustness when the model hides its gradients (Athalye, Carlini, Wagner 2018).
These steps collect the evidence the findings need to say so:

* a single-step attack (FGSM) at every budget: it must never beat the iterative attacks;
* an unbounded attack (L∞ eps = the whole input range, margin loss): robust accuracy must reach ~0;
* a gradient-free attack (Square) at the largest budget: it must not beat the gradient attacks;
* the input gradients (of the logit margin, which never saturates) at the audit points: they must not vanish;
* two forward passes on the same inputs: a randomized model needs EOT, not plain gradients.

The comparisons themselves are in :mod:`sparring.audit.findings`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from sparring.attacks.losses import margin
from sparring.audit.checks.evasion import run_attack
from sparring.audit.registry import Measurement, PlanContext, RunContext, Skip, Step, StepResult, register_check
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

if TYPE_CHECKING:
    from sparring.audit.findings import Finding
    from sparring.audit.threat import ThreatModel

__all__ = ["BLACKBOX_POINTS", "BLACKBOX_QUERIES", "MaskingChecks"]

BLACKBOX_POINTS = 64
"""Points the gradient-free comparison attacks (the first ones of the audit data)."""

BLACKBOX_QUERIES = {"quick": 300, "standard": 1000, "thorough": 5000}

SATURATED_CE_FINDING = 0.1
"""Share of points with a saturated cross-entropy gradient above which the audit recommends margin losses."""
_ZERO = 1e-12


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

    def findings(self, tm: ThreatModel, results: list[StepResult]) -> list[Finding]:
        """A saturated cross-entropy gradient is a recommendation (use margin losses), never masking evidence."""
        from sparring.audit.findings import Finding

        out = []
        for r in results:
            frac = r.value("saturated_ce_fraction")
            if frac is not None and frac > SATURATED_CE_FINDING:
                out.append(Finding(
                    id="sanity:saturated-ce",
                    title=(f"Cross-entropy gradients are exactly zero on {frac:.0%} of the points (float32 softmax "
                           "saturates on confident predictions); not gradient masking: the margin gradient is not"),
                    severity="info", threat="evasion", evidence={"saturated_ce_fraction": frac},
                    recommendation=("Attack with margin or DLR losses (PGD(loss='margin'), APGD with DLR, "
                                    "AutoAttack): a cross-entropy attack starts from a zero gradient on these points."),
                    steps=[r.step_id]))
        return out

    def merge(self, step: Step, parts: list[StepResult]) -> StepResult:
        """One masking step from its point shards (:mod:`sparring.audit.shards`): the attack steps as evasion
        steps are merged, the gradient and randomness steps recomputed from the concatenated per-point evidence
        (the same fractions and notes as one unsharded run on the same points gives)."""
        from sparring.audit.checks.evasion import merge_evasion
        from sparring.audit.shards import concat_per_point, sum_cost

        kind = step.params["kind"]
        if kind in ("fgsm", "unbounded", "blackbox"):
            return merge_evasion(step, parts)
        per_point, cost = concat_per_point(parts), sum_cost(parts)
        if kind == "randomness":
            differ = torch.tensor(per_point["differs"], dtype=torch.bool)
            return StepResult(step_id=step.id, check=step.check, threat="evasion", params=dict(step.params),
                              measurements=[Measurement("randomized_fraction", _mean(differ))],
                              per_point=per_point, cost=cost)
        return _gradient_result(step, torch.tensor(per_point["grad_linf"]),
                                torch.tensor(per_point["ce_saturated"], dtype=torch.bool), cost)

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.attacks.evasion.fgsm import FGSM
        from sparring.attacks.evasion.pgd import PGD
        from sparring.attacks.evasion.square import Square

        p, seed = step.params, ctx.generator_seed
        if p["kind"] == "fgsm":
            return run_attack(step, ctx, FGSM(eps=p["eps"], norm=p["norm"]), ctx.attacker_target)
        if p["kind"] == "unbounded":
            # margin loss: cross-entropy gradients are exactly zero on saturated (confident) points, which would
            # leave an ordinary model "robust" to the whole input range — a masking false alarm
            pgd = PGD(eps=p["eps"], norm="linf", steps=50, alpha=p["eps"] / 10, loss="margin", seed=seed)
            return run_attack(step, ctx, pgd, ctx.attacker_target)
        if p["kind"] == "blackbox":
            sq = Square(eps=p["eps"], norm=p["norm"], n_queries=p["n_queries"], seed=seed)
            return run_attack(step, ctx, sq, ctx.attacker_target, n=p["points"])
        if p["kind"] == "randomness":
            return _randomness_step(step, ctx)
        return _gradient_step(step, ctx)


def _margin_sum(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return margin(z, y, False).sum()


def _ce_sum(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(z, y, reduction="sum")


def _input_gradient(target: TorchTarget, x: torch.Tensor, y: torch.Tensor,
                    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``d loss / d x`` per batch; zero where the output is not connected to the input at all (a model whose
    forward detaches or thresholds its input has no gradient, which is the evidence, not an error)."""
    fwd = target.differentiable("the gradient-masking check")
    out = []
    with target.frozen():
        for s in range(0, x.shape[0], target.batch_size):
            xb = x[s : s + target.batch_size].to(target.device, target.dtype).requires_grad_(True)
            yb = y[s : s + target.batch_size].to(target.device)
            value = loss(fwd(xb), yb)
            if not value.requires_grad:
                out.append(torch.zeros_like(xb))
                continue
            (g,) = torch.autograd.grad(value, xb, allow_unused=True)
            out.append(torch.zeros_like(xb) if g is None else g)
    return torch.cat(out)


def _gradient_step(step: Step, ctx: RunContext) -> StepResult:
    """Input gradients of the logit margin (Carlini & Wagner 2017) at every audit point.

    The margin ``max_{j≠y} z_j − z_y`` is linear in the logits, so its input gradient vanishes only where the
    model's own gradient does (a quantising or detached input). Cross-entropy is not used for this: its gradient is
    ``softmax − onehot``, which is exactly zero in float32 once a confident, ordinary model's softmax saturates
    (a margin above ~17 logits), a false alarm. Those points are counted separately (``saturated_ce_fraction``:
    CE gradient zero, margin gradient not) and become a recommendation to use margin losses, not a masking finding.
    """
    target = ctx.attacker_target
    assert isinstance(target, TorchTarget)
    t0 = time.perf_counter()
    grads = _input_gradient(target, ctx.x, ctx.y, _margin_sum)
    gnorm = grads.reshape(grads.shape[0], -1).abs().amax(dim=1)
    zero = gnorm <= _ZERO
    ce = _input_gradient(target, ctx.x, ctx.y, _ce_sum)
    ce_zero = ce.reshape(ce.shape[0], -1).abs().amax(dim=1) <= _ZERO
    cost = {"queries": 0, "gradients": 2 * int(grads.shape[0]), "seconds": round(time.perf_counter() - t0, 6)}
    return _gradient_result(step, gnorm.cpu(), (ce_zero & ~zero).cpu(), cost)


def _mean(flags: torch.Tensor) -> float:
    return float(flags.float().mean()) if flags.numel() else 0.0


def _gradient_result(step: Step, gnorm: torch.Tensor, saturated: torch.Tensor, cost: dict[str, float]) -> StepResult:
    """The gradient step's result from the per-point margin-gradient norms and saturated-CE flags."""
    zero = gnorm <= _ZERO
    median = float(torch.median(gnorm)) if gnorm.numel() else 0.0
    return StepResult(
        step_id=step.id, check=step.check, threat="evasion", params={**step.params, "loss": "margin"},
        measurements=[Measurement("zero_gradient_fraction", _mean(zero)),
                      Measurement("saturated_ce_fraction", _mean(saturated))],
        per_point={"grad_linf": [float(v) for v in gnorm], "ce_saturated": saturated.tolist()},
        cost=cost,
        notes=[f"median |grad margin|_inf: {median:.3g}",
               f"cross-entropy gradient exactly zero (saturated softmax) on {int(saturated.sum())} of "
               f"{saturated.numel()} points"],
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
        measurements=[Measurement("randomized_fraction", _mean(differ))],
        per_point={"differs": differ.cpu().tolist()},
        cost={"queries": 2 * int(x.shape[0]), "gradients": 0, "seconds": round(time.perf_counter() - t0, 6)},
    )
