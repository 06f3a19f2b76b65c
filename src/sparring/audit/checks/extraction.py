"""Model-IP check: how many queries it takes to steal a working copy of the model through its API.

Planned when the threat model protects the model's intellectual property (``assets.model_ip: true``). It runs a
Papernot-style surrogate-stealing attack (Papernot et al. 2017 Jacobian augmentation from a natural seed, trained as
in Knockoff Nets, Orekondy et al. 2019) through the target *as the attacker sees it* (labels only if the API answers
labels), within ``attacker.query_budget`` queries in total, or 1,000 when the threat model sets none. Half of the
audit data is the attacker's natural seed; fidelity (agreement with the victim, Jagielski et al. 2020) is measured on
the other half after each of four rounds, so the report shows fidelity against queries spent.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from sparring.audit.findings import Finding
from sparring.audit.registry import (
    Measurement,
    PlanContext,
    ReportFigure,
    ReportSection,
    ReportTable,
    RunContext,
    Skip,
    Step,
    StepResult,
    register_check,
)
from sparring.targets.spec import Access

__all__ = ["DEFAULT_BUDGET", "ExtractionCheck"]

DEFAULT_BUDGET = 1000
"""Total victim queries of the stealing attack when the threat model sets no ``attacker.query_budget``."""

_RECOMMEND = (
    "Serve labels only or rounded/perturbed probabilities (sparring.defenses.outputs.OutputDefense with "
    "ReverseSigmoid), rate-limit clients, and watch per-client query streams for synthetic patterns "
    "(sparring.defenses.detect.extraction.PradaDetector)."
)


@register_check
class ExtractionCheck:
    name = "extraction-surrogate"
    threat = "extraction"
    needs = Access.LABELS

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        tm = ctx.threat_model
        if not tm.assets.model_ip:
            return Skip(self.name, "extraction", "the model's IP is not an asset (assets.model_ip is false)")
        budget = tm.attacker.query_budget or DEFAULT_BUDGET
        labels = "soft" if ctx.access >= Access.SCORES else "hard"
        return [Step(id=f"extraction/surrogate/{labels}/{budget}", check=self.name, threat="extraction",
                     params={"budget": budget, "labels": labels, "strategy": "jacobian", "rounds": 4, "epochs": 10},
                     reason=f"steal a surrogate with {budget} {labels}-label queries and measure its fidelity")]

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.attacks.extraction import KnockoffNets

        p = step.params
        t0 = time.perf_counter()
        half = max(1, ctx.x.shape[0] // 2)
        seed_x, eval_x, eval_y = ctx.x[:half], ctx.x[half:], ctx.y[half:]
        if eval_x.shape[0] == 0:
            eval_x, eval_y = seed_x, ctx.y[:half]
        victim_labels = ctx.target.predict(eval_x)
        q0 = ctx.attacker_target.counter.used
        res = KnockoffNets(budget=p["budget"], strategy=p["strategy"], labels=p["labels"], rounds=p["rounds"],
                           epochs=p["epochs"], seed=ctx.generator_seed)(
            ctx.attacker_target, seed_x, eval_x=eval_x, eval_labels=victim_labels, eval_y=eval_y)
        meas = [Measurement("extraction_fidelity", row["fidelity"], {"queries": int(row["queries"])})
                for row in res.history]
        meas.append(Measurement("extraction_accuracy", res.accuracy or 0.0, {"queries": res.queries}))
        return StepResult(
            step_id=step.id, check=self.name, threat="extraction", params=dict(p), measurements=meas,
            cost={"queries": ctx.attacker_target.counter.used - q0, "gradients": 0,
                  "seconds": round(time.perf_counter() - t0, 6)},
            notes=[f"fidelity measured on {eval_x.shape[0]} held-out audit inputs"],
        )

    def findings(self, tm: Any, results: list[StepResult]) -> list[Finding]:
        out = []
        for r in results:
            curve = _curve(r)
            if not curve:
                continue
            queries, fid = curve[-1]
            first = next((q for q, f in curve if f >= 0.9), None)
            severity: Literal["high", "medium", "low"] = (
                "high" if first is not None else "medium" if fid >= 0.7 else "low")
            title = (f"A 90%-faithful copy of the model can be stolen with {first} queries" if first is not None
                     else f"A stolen copy agrees with the model on {fid:.0%} of inputs after {queries} queries")
            out.append(Finding(id=f"extraction:{r.step_id}", title=title, severity=severity, threat="extraction",
                               evidence={"fidelity": fid, "queries": queries, "labels": r.params.get("labels"),
                                         "curve": curve}, recommendation=_RECOMMEND, steps=[r.step_id]))
        return out

    def section(self, results: list[StepResult]) -> ReportSection | None:
        from sparring.audit.report import plots

        rows: list[list[Any]] = []
        fig = plots.figure(4, 2.6)
        ax = fig.add_subplot()
        for r in results:
            curve = _curve(r)
            rows += [[r.params.get("labels"), q, round(f, 4)] for q, f in curve]
            if curve:
                ax.plot([q for q, _ in curve], [f for _, f in curve], marker="o", label=f"{r.params.get('labels')}")
        if not rows:
            return None
        ax.set_xlabel("victim queries")
        ax.set_ylabel("fidelity (agreement)")
        ax.set_ylim(0, 1)
        ax.legend()
        return ReportSection(
            title="Model extraction (model IP)",
            text="Fidelity of a surrogate stolen through the API against the queries it cost (Papernot-style "
                 "synthetic queries from half of the audit data; fidelity on the other half).",
            tables=[ReportTable("fidelity against queries", ["labels", "queries", "fidelity"], rows)],
            figures=[ReportFigure("extraction fidelity against queries", plots.png(fig))],
        )


def _curve(r: StepResult) -> list[tuple[int, float]]:
    return [(int(m.params["queries"]), float(m.value)) for m in r.measurements if m.metric == "extraction_fidelity"]
