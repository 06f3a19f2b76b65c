"""Certification checks: guarantees, not attacks.

* bound propagation (IBP / CROWN, Gowal et al. 2018; Zhang et al. 2018) verifies L∞ balls on supported torch models;
* randomized smoothing (Cohen, Rosenfeld, Kolter 2019) certifies L2 radii of the smoothed classifier on any model
  that returns labels.

They run when the threat model's ``certification`` section asks for them or a gate tests ``certified_accuracy``.
Both can run on point shards (``run_audit(..., shard_points=k)``, :mod:`sparring.audit.shards`): each shard is
certified on its own (smoothing with the shard's seed) and ``merge`` puts the shards back together. Bound
propagation is deterministic, so its sharded results equal the unsharded ones.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sparring.audit.registry import Measurement, PlanContext, RunContext, Skip, Step, StepResult, register_check
from sparring.errors import ParameterError
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["BoundsCheck", "SmoothingCheck"]


@register_check
class BoundsCheck:
    name = "certify-bounds"
    threat = "certification"
    needs = Access.GRADIENTS

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        tm = ctx.threat_model
        cfg = tm.certification.bounds
        eps = set(cfg.eps) if cfg else set()
        eps |= {g.eps for g in tm.gates if g.metric == "certified_accuracy" and g.norm == "linf" and g.eps}
        if not eps:
            return Skip(self.name, "certification", "no L∞ certification asked (certification.bounds or a gate)")
        if not isinstance(ctx.target, TorchTarget):
            return Skip(self.name, "certification",
                        f"bound propagation needs the network's layers; {type(ctx.target).__name__} hides them")
        from sparring.defenses.certify.bounds import BoundedModel

        try:
            BoundedModel(ctx.target.model, ctx.target.spec)
        except ParameterError as exc:
            return Skip(self.name, "certification", f"model not supported by bound propagation: {exc}")
        method = cfg.method if cfg else "best"
        return [Step(id=f"certify/bounds/linf/{e:g}", check=self.name, threat="certification",
                     params={"norm": "linf", "eps": e, "method": method},
                     reason=f"verify every L∞ perturbation within {e:g} ({method} of IBP and CROWN bounds)")
                for e in sorted(eps)]

    def merge(self, step: Step, parts: list[StepResult]) -> StepResult:
        """The shards' verified points concatenated; the certified accuracy over all of them (as ``verify`` on all
        points computes it); the methods' win counts added."""
        from sparring.audit.shards import concat_per_point, merge_notes, sum_cost

        per_point = concat_per_point(parts)
        first = parts[0].measurements[0]
        acc = float(np.asarray(per_point["verified"], dtype=bool).mean()) if per_point["verified"] else 0.0
        return StepResult(step_id=step.id, check=self.name, threat="certification", params=dict(step.params),
                          measurements=[Measurement("certified_accuracy", acc, dict(first.params))],
                          per_point=per_point, cost=sum_cost(parts), notes=merge_notes(parts))

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.defenses.certify.verify import verify

        assert isinstance(ctx.target, TorchTarget)
        p = step.params
        res = verify(ctx.target, ctx.x, ctx.y, p["eps"], method=p["method"])
        verified = torch.as_tensor(res.verified).cpu()
        return StepResult(
            step_id=step.id, check=self.name, threat="certification", params=dict(p),
            measurements=[Measurement("certified_accuracy", res.verified_accuracy,
                                      {"norm": "linf", "eps": p["eps"], "method": p["method"]})],
            per_point={"verified": verified.tolist()},
            cost={"queries": 0, "gradients": 0, "seconds": round(res.seconds, 6)},
            notes=[f"{k} gave the tighter bound on {v} margins" for k, v in sorted(res.wins().items())],
        )


@register_check
class SmoothingCheck:
    name = "certify-smoothing"
    threat = "certification"
    needs = Access.LABELS

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        tm = ctx.threat_model
        cfg = tm.certification.smoothing
        gated = sorted({g.radius for g in tm.gates if g.metric == "certified_accuracy" and g.norm == "l2"
                        and g.radius is not None})
        if cfg is None and not gated:
            return Skip(self.name, "certification", "no L2 certification asked (certification.smoothing or a gate)")
        from sparring.audit.threat import SmoothingCert

        c = cfg or SmoothingCert()
        radii = sorted(set(c.radii) | set(gated))
        return [Step(id=f"certify/smoothing/l2/sigma={c.sigma:g}", check=self.name, threat="certification",
                     params={"norm": "l2", "sigma": c.sigma, "n0": c.n0, "n": c.n, "alpha": c.alpha, "radii": radii},
                     reason=f"randomized smoothing certificate (sigma {c.sigma:g}, {c.n} samples, alpha {c.alpha:g})")]

    def merge(self, step: Step, parts: list[StepResult]) -> StepResult:
        """The shards' radii and correctness concatenated; every measurement (a fraction of points: certified at a
        radius, smoothed accuracy, abstentions) over all points, from the shards' exact counts."""
        from sparring.audit.shards import concat_per_point, count_fraction, sum_cost

        sizes = [len(p.per_point["radius"]) for p in parts]
        meas = [Measurement(m.metric, count_fraction([p.measurements[i].value for p in parts], sizes),
                            dict(m.params)) for i, m in enumerate(parts[0].measurements)]
        return StepResult(step_id=step.id, check=self.name, threat="certification", params=dict(step.params),
                          measurements=meas, per_point=concat_per_point(parts), cost=sum_cost(parts))

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.defenses.certify.smoothing import SmoothedClassifier

        p = step.params
        t0 = time.perf_counter()
        q0 = ctx.target.counter.used
        gen = torch.Generator(device=ctx.target.device).manual_seed(ctx.generator_seed)
        res = SmoothedClassifier(ctx.target, p["sigma"]).certify(
            ctx.x, ctx.y, n0=p["n0"], n=p["n"], alpha=p["alpha"], generator=gen, progress=ctx.progress)
        radii = np.asarray(torch.as_tensor(res.radii).cpu())
        meas = [Measurement("certified_accuracy", res.certified_accuracy(r),
                            {"norm": "l2", "radius": r, "method": "smoothing", "sigma": p["sigma"]})
                for r in p["radii"]]
        meas.append(Measurement("smoothed_accuracy", res.smoothed_accuracy, {"sigma": p["sigma"]}))  # Cohen: r = 0
        meas.append(Measurement("abstain_rate", res.abstain_rate, {"sigma": p["sigma"]}))
        return StepResult(
            step_id=step.id, check=self.name, threat="certification", params=dict(p), measurements=meas,
            per_point={"radius": [round(float(r), 6) for r in radii],
                       "correct": torch.as_tensor(res.correct).cpu().tolist()},
            cost={"queries": ctx.target.counter.used - q0, "gradients": 0,
                  "seconds": round(time.perf_counter() - t0, 6)},
        )
