"""The automatic adaptive retry: when the sanity checks suspect gradient masking, attack again so that masking cannot
hide a weakness.

A follow-up check: the planner lists it as skipped ("runs only if gradient masking is suspected"); after the planned
steps, the runner asks :meth:`AdaptiveRetry.follow_up` whether to add steps. It does so when a masking finding
fired, and probes the model (16 uniform points in the bounds) with :func:`sparring.attacks.adaptive.adaptive`:

* where a BPDA rewrite applies (Athalye, Carlini, Wagner 2018, section 4.1) — non-differentiable operations found in
  the TorchScript / FX / ``torch.export`` graph, or sub-modules whose gradient vanishes — each white-box attack is
  re-run at every budget through the straight-through copy (and through EOT over 20 draws if the model is
  randomized);
* where nothing can be rewritten (the step is hidden in code no graph shows, e.g. inside TorchScript control flow)
  and the evidence is more than randomness (zero gradients, an unbounded or gradient-free attack doing better),
  the white-box attacks are re-run as they are (with EOT if randomized) and the gradient-free attacks SPSA (Uesato
  et al. 2018), NES (Ilyas et al. 2018), Square (Andriushchenko et al. 2020) and a transfer attack run at
  **every** budget and norm of the plan, on all audit points. The transfer attack (Papernot et al. 2017) distils a
  surrogate from the model's output probabilities on the audit points and noisy copies of them
  (:class:`~sparring.attacks.extraction.KnockoffNets`, soft labels), attacks the surrogate with margin-loss PGD and
  sends the result to the model: the surrogate's gradients are smooth wherever the model's are masked.

Every step is an ordinary evasion step with per-point results, so it joins the per-point worst case of gates and
curves; its ``params["method"]`` (and first note) names the method that produced its number.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import torch

from sparring.audit.checks.evasion import WHITE_BOX, evasion_result, run_attack
from sparring.audit.registry import PlanContext, RunContext, Skip, Step, StepResult, register_check
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["GRADIENT_FREE", "RETRY_QUERIES", "AdaptiveRetry"]

GRADIENT_FREE = ("spsa", "nes", "square", "transfer")
"""The gradient-free attacks the retry runs where no BPDA rewrite applies."""
TRANSFER_COPIES = 8
"""The transfer surrogate is distilled from the model's answers on the audit points and this many noisy copies
of each (uniform noise of the largest budget of the plan), so ``(1 + TRANSFER_COPIES) · n`` queries."""
RETRY_QUERIES = {"quick": 500, "standard": 2000, "thorough": 5000}
"""Queries per example of each gradient-free retry attack, by effort."""
_SAMPLES = 32  # SPSA/NES queries per gradient estimate in the retry
_PROBE_FRACTION = 0.5  # SPSA/NES probe size as a fraction of eps: sees through quantisation steps below eps


@register_check
class AdaptiveRetry:
    name = "adaptive-retry"
    threat = "evasion"
    needs = Access.GRADIENTS

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        return Skip(self.name, "evasion", "runs only if the sanity checks suspect gradient masking (BPDA/EOT retry, "
                    "gradient-free attacks where no BPDA applies)")

    def follow_up(self, ctx: PlanContext, results: list[StepResult]) -> list[Step]:
        from sparring.attacks.adaptive import adaptive
        from sparring.attacks.adaptive._common import PROBE_POINTS, uniform_points
        from sparring.audit.findings import masking_findings

        if ctx.access < Access.GRADIENTS or not isinstance(ctx.target, TorchTarget):
            return []
        suspected = masking_findings(results)
        if not suspected:
            return []
        why = "; ".join(f.title.removeprefix("Suspected gradient masking: ") for f in suspected[:3])
        tm = ctx.threat_model
        _, notes = adaptive(ctx.target, uniform_points(ctx.target, PROBE_POINTS))
        bpda = any(n.startswith("BPDA") for n in notes)
        wrappers = " + ".join(_method(n) for n in notes) or "no wrapper"
        steps = [Step(id=f"adaptive/{attack}/{norm}/{eps:g}", check=self.name, threat="evasion",
                      params={"attack": f"{attack} + {wrappers}", "base_attack": attack, "norm": norm, "eps": eps,
                              "method": f"{attack} + {wrappers}"},
                      reason=f"gradient masking suspected ({why}): {attack} again through {wrappers}")
                 for attack, _ in WHITE_BOX[tm.effort] for norm, eps in tm.budgets()]
        # Randomness alone is answered by EOT; gradient-free attacks on single noisy draws add nothing there
        # (measured: 67 s for robust accuracy 0.88-0.96 where EOT-PGD reads 0.25).
        blocked = any(f.id != "masking:randomness" for f in suspected)
        if not bpda and blocked:
            q = RETRY_QUERIES[tm.effort]
            steps += [Step(id=f"adaptive/{attack}/{norm}/{eps:g}", check=self.name, threat="evasion",
                           params={"attack": attack, "gradient_free": attack, "norm": norm, "eps": eps,
                                   "n_queries": q, "method": attack},
                           reason=f"gradient masking suspected ({why}) and no BPDA rewrite applies: the "
                                  f"gradient-free {attack} with {q} queries per point" if attack != "transfer" else
                                  f"gradient masking suspected ({why}) and no BPDA rewrite applies: PGD on a "
                                  "surrogate distilled from the model's outputs, sent to the model")
                      for attack in GRADIENT_FREE for norm, eps in tm.budgets()]
        return steps

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        p = step.params
        if "gradient_free" in p:
            return _gradient_free(step, ctx)
        from sparring.attacks.adaptive import adaptive

        assert isinstance(ctx.attacker_target, TorchTarget)
        wrapped, notes = adaptive(ctx.attacker_target, ctx.x)
        factory = dict(WHITE_BOX[ctx.threat_model.effort])[p["base_attack"]]()
        result = run_attack(step, ctx, factory(p["norm"], p["eps"], ctx.generator_seed), wrapped)
        notes = notes or ["no gradient blocker or randomness found: attacked the model as it is"]
        result.notes = notes + result.notes
        return result


def _method(note: str) -> str:
    return note.split(":")[0]


def _gradient_free(step: Step, ctx: RunContext) -> StepResult:
    from sparring.attacks.evasion.nes import NES
    from sparring.attacks.evasion.spsa import SPSA
    from sparring.attacks.evasion.square import Square

    p, seed = step.params, ctx.generator_seed
    eps, norm, q = float(p["eps"]), p["norm"], int(p["n_queries"])
    if p["gradient_free"] == "transfer":
        return _transfer(step, ctx)
    attack: Any
    if p["gradient_free"] == "spsa":
        attack = SPSA(eps=eps, norm=norm, n_queries=q, samples=_SAMPLES, delta_fraction=_PROBE_FRACTION, seed=seed)
    elif p["gradient_free"] == "nes":
        attack = NES(eps=eps, norm=norm, n_queries=q, samples=_SAMPLES, sigma_fraction=_PROBE_FRACTION, seed=seed)
    else:
        attack = Square(eps=eps, norm=norm, n_queries=q, seed=seed)
    result = run_attack(step, ctx, attack, ctx.attacker_target)
    result.notes = [f"{p['gradient_free'].upper()}: gradient-free ({q} queries per point), immune to gradient "
                    "masking; no BPDA rewrite applies to this model", *result.notes]
    return result


def _transfer(step: Step, ctx: RunContext) -> StepResult:
    """PGD (margin loss, 50 steps) on a surrogate distilled from the model's probabilities, sent to the model.

    Papernot et al. (2017), "Practical Black-Box Attacks against Machine Learning", section 5: adversarial examples
    crafted white-box on a substitute trained on the victim's answers transfer to the victim. The surrogate is
    trained once per audit seed and reused at every budget: KnockoffNets (Orekondy et al. 2019) with soft labels
    on the audit points and :data:`TRANSFER_COPIES` noisy copies of each.
    """
    from sparring.attacks.evasion.pgd import PGD
    from sparring.attacks.extraction import KnockoffNets
    from sparring.attacks.norms import Norm, norm_of
    from sparring.attacks.result import Cost, EvasionResult

    p, target = step.params, ctx.attacker_target
    assert isinstance(target, TorchTarget)
    t0, before = time.perf_counter(), target.counter.used
    linf = [e for n, e in ctx.threat_model.budgets() if n == "linf"]
    noise = max(linf) if linf else 0.1 * target.spec.range_width
    surrogate = _distilled(target, ctx.x, noise, ctx.threat_model.seed, KnockoffNets)
    gen = torch.Generator(device=surrogate.device).manual_seed(ctx.generator_seed)
    pgd = PGD(eps=float(p["eps"]), norm=p["norm"], steps=50, loss="margin", seed=ctx.generator_seed)
    crafted = pgd(surrogate, ctx.x, ctx.y, generator=gen)
    x_adv = torch.as_tensor(crafted.x_adv).to(ctx.x.device)
    y = ctx.y.cpu()
    clean_pred = target.query_labels(ctx.x).cpu()
    clean = clean_pred == y
    adv_pred = torch.where(clean, target.query_labels(x_adv).cpu(), clean_pred)
    success = (adv_pred != y) | ~clean
    result = EvasionResult(
        attack="transfer", params={"eps": float(p["eps"]), "norm": p["norm"], "surrogate_pgd_steps": 50,
                                   "copies": TRANSFER_COPIES},
        cost=Cost(queries=target.counter.used - before, gradients=0, seconds=time.perf_counter() - t0),
        x_adv=torch.where(clean.reshape(-1, *[1] * (x_adv.dim() - 1)).to(x_adv.device), x_adv, ctx.x),
        y=y, success=success, clean_correct=clean, adv_pred=adv_pred,
        norms=norm_of((x_adv - ctx.x).cpu(), Norm(p["norm"])) * clean, norm=p["norm"],
        extras={"surrogate_success": round(crafted.attack_success_rate, 4)})
    out = evasion_result(step, result, ctx.x)
    out.notes = ["TRANSFER: PGD on a surrogate distilled from the model's probabilities (no gradient of the model "
                 f"used; surrogate broken {crafted.attack_success_rate:.0%}); no BPDA rewrite applies to this model",
                 *out.notes]
    return out


_SURROGATES: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[Any, ...], TorchTarget]] = \
    weakref.WeakKeyDictionary()
"""Distilled surrogates by model, then by (seed, noise, data): trained once per audit, reused at every budget."""


def _distilled(target: TorchTarget, x: torch.Tensor, noise: float, seed: int, knockoff: Any) -> TorchTarget:
    """The surrogate: KnockoffNets on ``x`` and noisy copies (uniform in ±``noise``, clipped to the bounds)."""
    key = (seed, noise, tuple(x.shape), float(x.double().sum()), float((x.double() ** 2).sum()))
    cached = _SURROGATES.setdefault(target.model, {})
    if key not in cached:
        cached.clear()  # one audit's surrogate at a time
        cached[key] = _distil(target, x, noise, seed, knockoff)
    return cached[key]


def _distil(target: TorchTarget, x: torch.Tensor, noise: float, seed: int, knockoff: Any) -> TorchTarget:
    gen = torch.Generator(device=x.device).manual_seed(seed)
    low, high = target.spec.bounds_tensors(x.device, x.dtype)
    copies = [x] + [torch.clamp(x + noise * (2 * torch.rand(x.shape, generator=gen, device=x.device,
                                                            dtype=x.dtype) - 1), low, high)
                    for _ in range(TRANSFER_COPIES)]
    pool = torch.cat(copies)
    res = knockoff(budget=len(pool), strategy="natural", labels="soft", rounds=1, epochs=30, lr=3e-3,
                   seed=seed)(target, pool)
    surrogate: TorchTarget = res.surrogate
    return surrogate
