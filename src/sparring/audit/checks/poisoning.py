"""Poisoning: scan the training set for poisoned examples and the model for a backdoor.

Planned when the threat model gives the attacker a share of the training data (``attacker.poisoning_share``) and
the system is a torch zoo model (its training data is known). Two steps:

* data scan: spectral signatures (Tran et al. 2018) and activation clustering (Chen et al. 2018) on the training set,
  read through the audited model's representations; expected poison share = ``poisoning_share``;
* model scan: Neural Cleanse (Wang et al. 2019) with the audit's clean data; reverse-engineered triggers are shown.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

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
from sparring.targets.torch import TorchTarget

__all__ = ["PoisoningCheck"]

_NC_STEPS = {"quick": 100, "standard": 300, "thorough": 600}
RECOMMEND_POISON = (
    "Trace where the training data came from; remove the flagged examples (sparring scan-data --out) and retrain; "
    "repair a backdoored model with fine-pruning (sparring.defenses.backdoor.FinePruning) and screen inputs at run "
    "time with STRIP (sparring.defenses.detect.strip.STRIP)."
)


@register_check
class PoisoningCheck:
    name = "poisoning-scan"
    threat = "poisoning"
    needs = Access.GRADIENTS

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        from sparring.data import zoo

        tm = ctx.threat_model
        share = tm.attacker.poisoning_share
        if share is None:
            return Skip(self.name, "poisoning", "the attacker has no share of the training data "
                        "(attacker.poisoning_share)")
        if tm.system.model not in zoo.names() or not isinstance(ctx.target, TorchTarget):
            return Skip(self.name, "poisoning", "scans need the training data and the network's layers: only torch "
                        "zoo models qualify (use sparring scan-data / scan-model on your own model and data)")
        share = min(max(float(share), 0.01), 0.5)
        steps = _NC_STEPS[tm.effort]
        return [
            Step(id="poisoning/data-scan", check=self.name, threat="poisoning", params={"expected_share": share},
                 reason=f"spectral signatures and activation clustering of the training set (poison ≤ {share:g})"),
            Step(id="poisoning/neural-cleanse", check=self.name, threat="poisoning", params={"steps": steps},
                 reason=f"Neural Cleanse: reverse-engineer a trigger per label ({steps} steps)"),
        ]

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        assert isinstance(ctx.target, TorchTarget)
        t0 = time.perf_counter()
        if step.id == "poisoning/data-scan":
            meas, examples, notes = _data_scan(ctx, step.params["expected_share"])
        else:
            meas, examples, notes = _model_scan(ctx, step.params["steps"])
        return StepResult(step_id=step.id, check=self.name, threat="poisoning", params=dict(step.params),
                          measurements=meas, examples=examples, notes=notes,
                          cost={"queries": 0, "gradients": 0, "seconds": round(time.perf_counter() - t0, 6)})

    def findings(self, tm: Any, results: list[StepResult]) -> list[Finding]:
        out = []
        for r in results:
            if r.status != "done":
                continue
            if r.step_id == "poisoning/neural-cleanse" and r.examples.get("flagged"):
                out.append(Finding(
                    id="poisoning:backdoor", title=f"Backdoor suspected towards label(s) {r.examples['flagged']}",
                    severity="high", threat="poisoning",
                    evidence={"anomaly_index": r.examples["anomaly_index"], "mask_l1": r.examples["mask_l1"]},
                    recommendation=RECOMMEND_POISON, steps=[r.step_id]))
            if r.step_id == "poisoning/data-scan":
                flagged = sorted(set(r.examples.get("spectral_flagged", [])) & set(r.examples.get("ac_flagged", [])))
                if flagged:
                    out.append(Finding(
                        id="poisoning:data", title=f"Training data of class(es) {flagged} look poisoned",
                        severity="medium", threat="poisoning",
                        evidence={"classes": flagged, "suspicious": r.value("poison_suspicious")},
                        recommendation=RECOMMEND_POISON, steps=[r.step_id]))
        return out

    def section(self, results: list[StepResult]) -> ReportSection | None:
        done = {r.step_id: r for r in results if r.status == "done"}
        if not done:
            return None
        tables, figures = [], []
        scan = done.get("poisoning/data-scan")
        if scan is not None:
            tables.append(ReportTable("training-set scan per class", ["class", "n", "spectral separation",
                                                                       "AC silhouette", "AC smaller cluster",
                                                                       "flagged by"], scan.examples["classes"]))
        nc = done.get("poisoning/neural-cleanse")
        if nc is not None:
            ex = nc.examples
            tables.append(ReportTable("Neural Cleanse per label", ["label", "trigger mask L1", "anomaly index"],
                                      [[i, n1, "not converged" if a is None else a] for i, (n1, a) in enumerate(
                                          zip(ex["mask_l1"], ex["anomaly_index"], strict=True))]))
            figures.append(ReportFigure("reverse-engineered triggers", _trigger_figure(ex)))
        return ReportSection(
            title="Poisoning and backdoors",
            text="The training set is scanned through the model's representations (a class is flagged when its "
                 "examples split into a large and a small well-separated group); Neural Cleanse looks, for every "
                 "label, for the smallest patch that sends clean inputs there: a label whose trigger is much smaller "
                 "than the others' (anomaly index > 2) is a likely backdoor target. Image-wide blended triggers can "
                 "escape both scans.",
            tables=tables, figures=figures)


def _data_scan(ctx: RunContext, share: float) -> tuple[list[Measurement], dict[str, Any], list[str]]:
    from sparring.data import zoo
    from sparring.defenses.detect.poison import ActivationClustering, SpectralSignatures, representations

    assert isinstance(ctx.target, TorchTarget)
    ds = zoo.data(ctx.threat_model.system.model)
    feats = representations(ctx.target, ds.x_train, layer="last-conv")  # both scans find the poison there (docs)
    ss = SpectralSignatures(expected_share=share)(feats, ds.y_train)
    ac = ActivationClustering(seed=ctx.generator_seed % (2**31))(feats, ds.y_train)
    rows = []
    for s, a in zip(ss.classes, ac.classes, strict=True):
        by = [n for n, f in (("spectral", s["flagged"]), ("clustering", a["flagged"])) if f]
        rows.append([s["class"], s["n"], s["statistic"], a["statistic"], a["relative_size"], ", ".join(by) or "-"])
    both = sorted(set(ss.flagged_classes) & set(ac.flagged_classes))
    sus = set(ss.suspicious.tolist()) & set(ac.suspicious.tolist()) if both else set()
    meas = [Measurement("poison_suspicious", float(len(sus))),
            Measurement("poison_flagged_classes", float(len(both)))]
    examples = {"classes": rows, "spectral_flagged": ss.flagged_classes, "ac_flagged": ac.flagged_classes,
                "suspicious": sorted(sus)[:500]}
    return meas, examples, [f"{len(ds.y_train)} training examples scanned"]


def _model_scan(ctx: RunContext, steps: int) -> tuple[list[Measurement], dict[str, Any], list[str]]:
    from sparring.defenses.backdoor import NeuralCleanse

    assert isinstance(ctx.target, TorchTarget)
    gen = torch.Generator().manual_seed(ctx.generator_seed)
    res = NeuralCleanse(steps=steps, seed=ctx.generator_seed)(ctx.target, ctx.x[:200], generator=gen)
    summary = res.summary()  # labels that never converged: anomaly index None, left out of the median/MAD
    order = [i for i in res.norms.argsort().tolist() if bool(res.converged[i])]
    show = sorted(set(res.flagged) | set(order[:3]))
    images = {str(i): np.round((res.masks[i] * res.patterns[i]).numpy(), 3).tolist() for i in show}
    examples = {"flagged": res.flagged, "mask_l1": summary["mask_l1"], "anomaly_index": summary["anomaly_index"],
                "not_converged": res.not_converged, "triggers": images, "layout": ctx.target.spec.layout}
    scored = [a for a in summary["anomaly_index"] if a is not None]
    meas = [Measurement("backdoor_max_anomaly_index", max(scored))] if scored else []  # none converged: unmeasured
    meas.append(Measurement("backdoor_labels_flagged", float(len(res.flagged))))
    notes = [f"label(s) {res.not_converged}: no trigger reached the success target in {steps} steps; left out of "
             "the anomaly index"] if res.not_converged else []
    return meas, examples, notes


def _trigger_figure(ex: dict[str, Any]) -> str:
    from sparring.audit.report import plots

    items = sorted(ex["triggers"].items(), key=lambda kv: int(kv[0]))
    fig = plots.figure(1.6 * len(items), 1.9)
    for k, (label, img) in enumerate(items):
        a = np.asarray(img, dtype=np.float64)
        if a.ndim == 3:
            a = a.mean(0) if ex.get("layout") == "chw" else a.mean(-1)
        elif a.ndim == 1:
            a = a[None]
        ax = fig.add_subplot(1, len(items), k + 1)
        ax.imshow(a, cmap="gray", vmin=0, vmax=max(float(a.max()), 1e-6))
        idx = ex["anomaly_index"][int(label)]
        shown = "n/c" if idx is None else f"{idx:.1f}"
        ax.set_title(f"label {label}\nindex {shown}" + (" *" if int(label) in ex["flagged"] else ""), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return str(plots.png(fig))
