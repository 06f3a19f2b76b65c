"""Tabular checks: evasion within the domain's feature constraints, beside the unconstrained baseline.

They run when the threat model names a constraints file (``system.constraints``). Attacked rows: the audit rows the
model classifies correctly, of class 1 for a binary model (fraud, malware, "malignant": the class an attacker wants
to leave), of every class otherwise. Each attack runs twice: within the constraints (every returned row re-checked)
and with bounds only, so the report shows how much of the unconstrained "vulnerability" no attacker could produce.
Attacks: constrained PGD (Simonetto et al. 2022) with gradients, the black-box minimum-cost search with scores or
labels, and, for a white-box attacker, the exact tree-ensemble MILP (Kantchelian et al. 2016) for scikit-learn tree
ensembles.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from sparring.audit.findings import Finding
from sparring.audit.registry import (
    Measurement,
    PlanContext,
    ReportSection,
    ReportTable,
    RunContext,
    Skip,
    Step,
    StepResult,
    register_check,
)
from sparring.targets.spec import Access

__all__ = ["TabularCheck"]

_RECOMMEND = ("Raise the cost of the cheapest evasions: adversarial training with constrained examples "
              "(sparring.defenses.training.constrained), features the attacker cannot control, and monitoring of "
              "the changes that evasions use most.")


def _attacks(ctx: PlanContext) -> list[str]:
    out = []
    if ctx.access >= Access.GRADIENTS:
        out.append("cpgd")
    out.append("search")
    est = getattr(ctx.target, "estimator", None)
    if type(est).__name__ in ("GradientBoostingClassifier", "RandomForestClassifier", "ExtraTreesClassifier",
                              "DecisionTreeClassifier") and ctx.threat_model.attacker.knowledge == "white-box":
        out.append("tree-milp")
    return out


@register_check
class TabularCheck:
    name = "tabular-constrained"
    threat = "tabular"
    needs = Access.LABELS

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        path = ctx.threat_model.system.constraints
        if path is None:
            return Skip(self.name, "tabular", "no feature constraints declared (system.constraints)")
        # Read strictly: a broken file (missing, wrong feature count, unknown key or feature, bad types) is the
        # user's error to fix, raised with the feature named (sparring audit exits 3), never a silent skip.
        # A CSV's header names the columns: constraints must name the same features in the same order.
        from sparring.data.files import csv_feature_columns
        from sparring.targets.constraints import FeatureConstraints

        d = ctx.threat_model.system.data
        columns = None if d.source == "zoo" else csv_feature_columns(d.source, d.label_column)
        FeatureConstraints.load(path, n_features=ctx.target.spec.n_features, columns=columns)
        steps = []
        for attack in _attacks(ctx):
            for constrained in ((True,) if attack == "tree-milp" else (True, False)):
                mode = "constrained" if constrained else "unconstrained"
                how = "within the feature constraints" if constrained else "with bounds only (baseline)"
                steps.append(Step(id=f"tabular/{attack}/{mode}", check=self.name, threat="tabular",
                                  params={"attack": attack, "constrained": constrained, "constraints": path},
                                  reason=f"{attack} evasion {how}"))
        return steps

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.attacks.tabular import CPGD, CostSearch, TreeEvasion
        from sparring.targets.constraints import FeatureConstraints

        p = step.params
        c = FeatureConstraints.load(p["constraints"])
        t = ctx.attacker_target
        pred = t.predict(ctx.x)
        keep = pred.cpu() == ctx.y.cpu()
        if t.spec.n_classes == 2:
            keep &= ctx.y.cpu() == 1
        x, y = ctx.x[keep], ctx.y[keep]
        if len(x) == 0:
            return StepResult(step_id=step.id, check=self.name, threat="tabular", params=dict(p),
                              notes=["no correctly classified rows of the attacked class"])
        attack: Any
        if p["attack"] == "cpgd":
            attack = CPGD(constraints=c, constrained=p["constrained"], seed=ctx.generator_seed)
        elif p["attack"] == "search":
            attack = CostSearch(constraints=c, constrained=p["constrained"], seed=ctx.generator_seed)
        else:
            attack = TreeEvasion(constraints=c)
        r = attack(ctx.target if p["attack"] == "tree-milp" else t, x, y)
        checked = c.check(x, torch.as_tensor(r.x_adv))
        success = torch.as_tensor(r.success).cpu()
        feasible = checked.ok.cpu()
        costs = torch.as_tensor(r.costs).cpu()
        evaded = success & feasible
        median = float(costs[evaded].median()) if bool(evaded.any()) else None
        claimed = float(costs[success].median()) if bool(success.any()) else None
        unknown = torch.as_tensor(r.unknown).cpu() & ~evaded  # the query budget ran out first: neither way
        meas = [Measurement("tabular_evasion_rate", float(evaded.float().mean()), {"attack": p["attack"]}),
                Measurement("tabular_unknown_rate", float(unknown.float().mean()), {"attack": p["attack"]}),
                Measurement("tabular_claimed_evasion_rate", float(success.float().mean()), {"attack": p["attack"]}),
                Measurement("feasible_rate", float(feasible.float().mean()), {"attack": p["attack"]})]
        return StepResult(
            step_id=step.id, check=self.name, threat="tabular", params=dict(p), measurements=meas,
            per_point={"success": success.tolist(), "feasible": feasible.tolist(), "unknown": unknown.tolist(),
                       "cost": [round(float(v), 6) for v in costs]},
            examples={"violations": checked.by_rule(), "median_cost": median, "median_claimed_cost": claimed,
                      "n": len(x)},
            cost={"queries": r.cost.queries, "gradients": r.cost.gradients, "seconds": round(r.cost.seconds, 6)},
        )

    def findings(self, tm: Any, results: list[StepResult]) -> list[Finding]:
        out = []
        for r in results:
            k = sum(bool(u) for u in r.per_point.get("unknown", []))
            if k:
                out.append(Finding(
                    id=f"budget:{r.step_id}", threat="tabular", severity="medium",
                    title=f"{r.params['attack']} ran out of queries on {k} of {len(r.per_point['unknown'])} rows: "
                          "unknown, neither evaded nor robust",
                    evidence={"unknown": k, "n": len(r.per_point["unknown"]),
                              "evasion_rate_at_least": r.value("tabular_evasion_rate")},
                    recommendation="Raise attacker.query_budget (or the target's query budget) and re-run: the "
                                   "evasion rate is a lower bound while rows are unknown.", steps=[r.step_id]))
            if not r.params.get("constrained") or r.value("tabular_evasion_rate") is None:
                continue
            rate = float(r.value("tabular_evasion_rate") or 0.0)
            if rate == 0:
                continue
            severity: Literal["high", "medium", "low"] = "high" if rate >= 0.5 else "medium" if rate >= 0.1 else "low"
            med = r.examples.get("median_cost")
            out.append(Finding(
                id=f"tabular:{r.step_id}", threat="tabular", severity=severity,
                title=f"{rate:.0%} of attacked rows evade {r.params['attack']} with feasible changes "
                      f"(median cost {med:.3g})" if med is not None else f"{rate:.0%} of rows evade",
                evidence={"evasion_rate": rate, "median_cost": med, "n": r.examples.get("n")},
                recommendation=_RECOMMEND, steps=[r.step_id]))
        return out

    def section(self, results: list[StepResult]) -> ReportSection | None:
        rows: list[list[Any]] = []
        for r in results:
            if r.value("tabular_evasion_rate") is None:
                continue
            viol = r.examples.get("violations") or {}
            top = ", ".join(f"{k} ({v})" for k, v in sorted(viol.items(), key=lambda kv: -kv[1])[:4])
            rows.append([r.params["attack"], "yes" if r.params["constrained"] else "no (baseline)",
                         r.value("tabular_claimed_evasion_rate"), r.value("feasible_rate"),
                         r.value("tabular_evasion_rate"), r.examples.get("median_cost"),
                         r.examples.get("median_claimed_cost"), sum(viol.values()), top or "-"])
        if not rows:
            return None
        return ReportSection(
            title="Tabular evasion within feature constraints",
            text="Each attack ran within the declared feature constraints and, as a baseline, with bounds only. "
                 "'claimed' counts every misclassified row; 'feasible evasion' only rows that pass the separate "
                 "constraint checker. The gap between them is vulnerability no real attacker could exploit.",
            tables=[ReportTable("constrained vs unconstrained", [
                "attack", "constrained", "claimed evasion", "feasible rows", "feasible evasion", "median cost",
                "median claimed cost", "violations", "most violated rules"], rows)],
        )
