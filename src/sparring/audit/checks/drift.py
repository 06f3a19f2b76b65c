"""Drift: is the data the deployed model sees now still drawn like its reference data?

Planned when the threat model has a ``monitoring`` section (reference and current data files). One step per test
in ``monitoring.tests``, each a two-sample test of the whole current sample against the reference at level
``monitoring.alpha`` (:mod:`sparring.defenses.detect.drift`):

* ``mmd``: kernel MMD with a permutation test (Gretton et al. 2012); ``lsdd``: least-squares density difference
  (Bu et al. 2016); ``classifier``: classifier two-sample test (Lopez-Paz and Oquab 2017);
* ``ks`` / ``cvm``: Kolmogorov–Smirnov / Cramér–von Mises per feature, Bonferroni or FDR over the features;
* ``bbsd``: KS on the audited model's softmax outputs (BBSD, Rabanser, Günnemann, Lipton 2019), the strongest
  detector of "Failing Loudly" on image shifts; it queries the model on both samples.

Gates: ``drift_p_value`` (the smallest p-value over the tests times the number of tests, capped at 1: a
Bonferroni-corrected combination, so gating on several tests keeps the false-alarm rate at the level asked for)
and ``drift_detected`` (1 when that p-value is below ``alpha``); ``method: <test>`` gates on one test alone.
Sudden drift in a model's inputs can be a data-poisoning campaign or probing in progress, not only a changed world.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparring.audit.findings import RECOMMEND_DRIFT, Finding
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
from sparring.audit.worstcase import drift_gate_value
from sparring.errors import InputSpecError, ParameterError
from sparring.targets.spec import Access

__all__ = ["DriftCheck", "drift_gate_value"]

_MAX_FEATURES_KEPT = 2000  # per-feature detail kept in the checkpoint (the report shows the most shifted)


@register_check
class DriftCheck:
    name = "drift"
    threat = "drift"
    needs = Access.LABELS
    inputs = ("tensor", "text")

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        mon = ctx.threat_model.monitoring
        if mon is None:
            return Skip(self.name, "drift", "no monitoring data (monitoring: {reference: ..., current: ...})")
        common = {"reference": mon.reference, "current": mon.current, "key": mon.key,
                  "label_column": mon.label_column, "alpha": mon.alpha, "n_tests": len(mon.tests),
                  "n_permutations": mon.n_permutations, "correction": mon.correction, "window": mon.window}
        what = {"mmd": "kernel MMD, permutation test", "lsdd": "LSDD, permutation test",
                "ks": f"Kolmogorov–Smirnov per feature ({mon.correction})",
                "cvm": f"Cramér–von Mises per feature ({mon.correction})",
                "classifier": "classifier two-sample test", "bbsd": "KS on the model's softmax outputs (BBSD)"}
        return [Step(id=f"drift/{t}", check=self.name, threat="drift", params={"test": t, **common},
                     reason=f"{what[t]}: {mon.current} against {mon.reference} at alpha {mon.alpha:g}")
                for t in mon.tests]

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.defenses.detect.drift.report import drift_report, read_samples

        p = step.params
        t0 = time.perf_counter()
        q0 = ctx.target.counter.used
        ref = read_samples(p["reference"], key=p["key"], label_column=p["label_column"])
        cur = read_samples(p["current"], key=p["key"], label_column=p["label_column"])
        seed = ctx.generator_seed % (2**31)
        if p["test"] == "bbsd":
            rep = _bbsd_report(ctx, step, ref, cur, seed)
        else:
            rep = drift_report(ref, cur, method=p["test"], alpha=p["alpha"], window=p["window"],
                               n_permutations=p["n_permutations"], correction=p["correction"], seed=seed)
        r = rep["result"]
        feats = sorted(rep["features"], key=lambda f: f["p_adjusted"])[:_MAX_FEATURES_KEPT]
        notes = [f"{r['n_reference']} reference and {r['n_current']} current examples, "
                 f"{len(rep['features'])} features"]
        if rep["windows"]:
            notes.append(f"windows of {p['window']} current rows: {rep['n_windows_drift']} of {len(rep['windows'])} "
                         "drift (each at alpha, not corrected over the windows)")
        return StepResult(
            step_id=step.id, check=self.name, threat="drift", params=dict(p),
            measurements=[Measurement("drift_p_value", float(r["p_value"]), {"test": p["test"]}),
                          Measurement("drift_statistic", float(r["statistic"]), {"test": p["test"]})],
            examples={"result": {k: v for k, v in r.items() if k != "features"}, "features": feats,
                      "n_features": len(rep["features"]), "windows": rep["windows"]},
            cost={"queries": ctx.target.counter.used - q0, "gradients": 0,
                  "seconds": round(time.perf_counter() - t0, 6)},
            notes=notes)

    def findings(self, tm: Any, results: list[StepResult]) -> list[Finding]:
        done = [r for r in results if r.status == "done"]
        p, _ = drift_gate_value(done, "drift_p_value", None)
        if p is None:
            return []
        alpha = float(done[0].params["alpha"])
        per_test = {str(r.params["test"]): r.value("drift_p_value") for r in done}
        shown = ", ".join(f"{t} p = {v:.3g}" for t, v in per_test.items())
        top = [f["feature"] for f in done[0].examples["features"] if f["drift"]][:10]
        evidence = {"p_value": p, "alpha": alpha, "per_test": per_test, "reference": done[0].params["reference"],
                    "current": done[0].params["current"], "shifted_features": top}
        steps = [r.step_id for r in done]
        if p < alpha:
            return [Finding(id="drift:detected", severity="medium", threat="drift", evidence=evidence,
                            title=f"Monitoring data drifted from the reference ({shown}; combined p = {p:.3g} < "
                                  f"{alpha:g})", recommendation=RECOMMEND_DRIFT, steps=steps)]
        return [Finding(id="drift:none", severity="info", threat="drift", evidence=evidence,
                        title=f"No drift detected in the monitoring data ({shown}; combined p = {p:.3g})",
                        recommendation="Keep monitoring: an offline test on one sample misses drift that starts "
                                       "later; run sparring drift with --window, or an online detector.",
                        steps=steps)]

    def section(self, results: list[StepResult]) -> ReportSection | None:
        done = [r for r in results if r.status == "done"]
        if not done:
            return None
        rows = []
        for r in done:
            res = r.examples["result"]
            thr = res.get("threshold")
            rows.append([r.params["test"], res["statistic"], None if thr is None or not math.isfinite(thr) else thr,
                         res["p_value"], "drift" if res["drift"] else "-"])
        p, _ = drift_gate_value(done, "drift_p_value", None)
        first = next((r for r in done if r.params["test"] != "bbsd"), done[0])
        feats = first.examples["features"]
        tables = [ReportTable("two-sample tests (each at alpha)", ["test", "statistic", "threshold", "p-value",
                                                                   "verdict"], rows)]
        ftable = [[f["feature"], f["statistic"], f["p_adjusted"], f.get("mean_reference"), f.get("mean_current")]
                  for f in feats[:15]]
        corr = first.params["correction"] if first.params["test"] in ("ks", "cvm") else "bonferroni"
        tables.append(ReportTable(f"most shifted features ({feats[0]['test'] if feats else 'ks'} per feature, {corr})",
                                  ["feature", "statistic", "p adjusted", "mean reference", "mean current"], ftable))
        figures = [ReportFigure("-log10 adjusted p-value per feature (dashed: alpha)", _feature_figure(first))]
        windows = [r for r in done if r.examples["windows"]]
        if windows:
            figures.append(ReportFigure("p-value per window of current rows", _window_figure(windows)))
        alpha = float(done[0].params["alpha"])
        return ReportSection(
            title="Data drift (monitoring)",
            text=(f"{Path(done[0].params['current']).name} tested against {Path(done[0].params['reference']).name} "
                  f"with {', '.join(str(r.params['test']) for r in done)} at alpha {alpha:g}; combined "
                  f"(Bonferroni over the tests) p = {p:.3g}: "
                  + ("drift." if p is not None and p < alpha else "no drift detected.")
                  + " Drift means the model now works on data it was not validated on; a sudden change in its "
                    "inputs can also be a poisoning campaign or probing in progress."),
            tables=tables, figures=figures)


def _bbsd_report(ctx: RunContext, step: Step, ref: torch.Tensor, cur: torch.Tensor, seed: int) -> dict[str, Any]:
    """BBSD on the audited model (its full access, as the owner monitoring it has), shaped like drift_report."""
    from sparring.defenses.detect.drift import bbsd_test

    if isinstance(ctx.x, list):
        raise ParameterError("monitoring test bbsd queries the model on the monitoring rows, which this text system "
                             "cannot take as embeddings; drop bbsd from monitoring.tests (mmd, ks on the text "
                             "embeddings still run).")
    if ctx.target.access < Access.SCORES:
        raise ParameterError(f"monitoring test bbsd needs the model's scores; {type(ctx.target).__name__} gives labels "
                          "only. Drop bbsd from monitoring.tests or expose scores.")
    shape = tuple(ctx.target.spec.shape)
    size = math.prod(shape)
    if ref.reshape(ref.shape[0], -1).shape[1] != size or cur.reshape(cur.shape[0], -1).shape[1] != size:
        raise InputSpecError(f"monitoring test bbsd feeds the rows to the model, which takes {size} features per "
                             f"example (shape {shape}); reference has {ref[0].numel()} and current {cur[0].numel()}. "
                             "Give monitoring files in the model's input layout, or drop bbsd.")

    def model_input(a: torch.Tensor) -> torch.Tensor:
        return a.reshape(a.shape[0], *shape).float()

    p = step.params
    r = bbsd_test(ctx.target, model_input(ref), model_input(cur), correction=p["correction"], alpha=p["alpha"],
                  seed=seed)
    windows = []
    if p["window"] is not None:
        w = int(p["window"])
        if w > cur.shape[0]:
            raise InputSpecError(f"monitoring.window={w} is longer than the current sample ({cur.shape[0]} rows).")
        for start in range(0, cur.shape[0] - w + 1, w):
            rw = bbsd_test(ctx.target, model_input(ref), model_input(cur[start: start + w]),
                           correction=p["correction"], alpha=p["alpha"], seed=seed)
            windows.append({"start": start, "stop": start + w, "statistic": rw.statistic, "threshold": rw.threshold,
                            "p_value": rw.p_value, "drift": rw.drift})
    feats = [{**f.to_dict(), "mean_reference": None, "mean_current": None} for f in r.features]
    return {"result": r.to_dict(), "features": feats, "windows": windows,
            "n_windows_drift": sum(1 for w_ in windows if w_["drift"])}


def _feature_figure(r: StepResult) -> str:
    from sparring.audit.report import plots

    feats = sorted(r.examples["features"], key=lambda f: f["feature"])
    neglog = np.array([min(-math.log10(max(f["p_adjusted"], 1e-300)), 300.0) for f in feats])
    fig = plots.figure(6.5, 2.2)
    ax = fig.add_subplot()
    alpha = float(r.params["alpha"])
    ax.bar([f["feature"] for f in feats], neglog, width=1.0,
           color=["#c0392b" if f["drift"] else "#7f8c8d" for f in feats])
    ax.axhline(-math.log10(alpha), color="#2c3e50", linestyle="--", linewidth=1)
    ax.set_xlabel("feature")
    ax.set_ylabel("-log10 p (adjusted)")
    return str(plots.png(fig))


def _window_figure(steps: list[StepResult]) -> str:
    from sparring.audit.report import plots

    fig = plots.figure(6.5, 2.2)
    ax = fig.add_subplot()
    for r in steps:
        w = r.examples["windows"]
        ax.plot([x["start"] for x in w], [max(x["p_value"], 1e-300) for x in w], marker="o", markersize=3,
                label=str(r.params["test"]))
    ax.set_yscale("log")
    ax.axhline(float(steps[0].params["alpha"]), color="#2c3e50", linestyle="--", linewidth=1)
    ax.set_xlabel("first current row of the window")
    ax.set_ylabel("p-value")
    ax.legend(fontsize=7)
    return str(plots.png(fig))
