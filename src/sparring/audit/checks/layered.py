"""Layered defence: the threat model's ``defence`` section built around the audited model and attacked adaptively.

The defended system is the classifier (the audited model, or ``defence.robust_model`` with the audited model as the
undefended baseline), the ``defence.preprocess`` transforms and the ``defence.detector``; every input ends
**correct**, **wrong** or **rejected**. :func:`sparring.defenses.layered.evaluate_layers` attacks each sub-system
with the same adaptive pair — PGD with BPDA through the preprocessing (Athalye, Carlini, Wagner 2018) and PGD that
also minimises the detector's score (Carlini & Wagner 2017) — so the table shows what each layer adds under an
attacker who knows about it. Planned for a white-box attacker with L∞ budgets (one step per budget).

The detector is calibrated on clean data held apart from the audited points: Mahalanobis class statistics come from
the zoo model's training split (its test split when the audit reads the training split), and the threshold is set
at ``defence.detector.fpr`` on up to 500 examples of the audited split that follow the audited ones (the other
split when fewer than 100 remain).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

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
from sparring.errors import ParameterError
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["LayeredDefenceCheck"]

_STEPS = {"quick": 10, "standard": 40, "thorough": 100}
"""PGD iterations of each adaptive attack, by effort."""
_MIN_HELD_OUT = 100
_MAX_CAL = 500
_LITTLE = 0.05
"""A layer "adds little" when it moves less than this share of attacked points out of ``wrong``."""
RECOMMEND_LAYERED = (
    "Do not count on preprocessing or a detector against an attacker who knows about them: adaptive attacks (BPDA, "
    "detector-aware losses) get through. Invest in the model itself (adversarial training: sparring.defenses."
    "training, e.g. digits-cnn-pgdat) and treat detectors as a way to raise the cost of naive attacks only."
)


def _detector_note(tm: Any) -> str:
    split = tm.system.data.split
    other = "test" if split == "train" else "train"
    return (f"detector statistics from the zoo {other} split; threshold at {tm.defence.detector.fpr:g} false "
            f"positives on clean {split}-split examples after the {tm.system.data.n} audited ones (the {other} "
            f"split if fewer than {_MIN_HELD_OUT} remain)")


@register_check
class LayeredDefenceCheck:
    name = "layered-defence"
    threat = "evasion"
    needs = Access.GRADIENTS

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        tm = ctx.threat_model
        d = tm.defence
        if d is None:
            return Skip(self.name, "evasion", "no defence to evaluate (add a defence: section with preprocess, "
                        "detector and/or robust_model)")
        if tm.attacker.knowledge != "white-box" or ctx.access < Access.GRADIENTS:
            return Skip(self.name, "evasion", "the adaptive attacks on a layered defence need gradients: the "
                        "attacker must be white-box (attacker.knowledge: white-box, exposure.output: scores)")
        if not isinstance(ctx.target, TorchTarget):
            return Skip(self.name, "evasion", f"a layered defence wraps a torch model; {type(ctx.target).__name__} "
                        "is not one")
        eps = sorted({float(e) for b in tm.attacker.evasion if b.norm == "linf" for e in b.eps})
        if not eps:
            return Skip(self.name, "evasion", "no L∞ evasion budget (attacker.evasion with norm: linf): the adaptive "
                        "attacks of the layered evaluation are L∞")
        if d.preprocess:
            from sparring.defenses.preprocess.image import image_bounds

            try:
                image_bounds(ctx.target.spec, "defence.preprocess", "defence.preprocess")
            except ParameterError as exc:
                return Skip(self.name, "evasion", f"defence.preprocess cannot apply: {exc}")
        if d.detector is not None:
            from sparring.data import zoo

            if tm.system.model not in zoo.names() or tm.system.data.source != "zoo":
                return Skip(self.name, "evasion", "a detector is calibrated on clean data held apart from the audit "
                            "points, which sparring knows for zoo models audited on zoo data only")
        layers = [p.name for p in d.preprocess] + ([f"{d.detector.kind} detector"] if d.detector else [])
        if d.robust_model:
            layers.insert(0, f"robust model {d.robust_model}")
        why = (f"adaptive PGD ({_STEPS[tm.effort]} steps, BPDA + detector-aware) on every sub-system of "
               f"{' + '.join(layers)}")
        if d.detector is not None:
            why += f"; {_detector_note(tm)}"
        params: dict[str, Any] = {"norm": "linf", "steps": _STEPS[tm.effort], **d.model_dump(mode="json")}
        return [Step(id=f"layered/linf/{e:g}", check=self.name, threat="evasion", params={**params, "eps": e},
                     reason=f"{why} (L∞ eps {e:g})") for e in eps]

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.defenses.layered import LayeredDefence, evaluate_layers

        assert isinstance(ctx.target, TorchTarget)
        t0 = time.perf_counter()
        p = step.params
        baseline = ctx.target if p["robust_model"] else None
        model = _robust(ctx, p["robust_model"]) if p["robust_model"] else ctx.target
        counted = [ctx.target] if model is ctx.target else [ctx.target, model]
        q0 = sum(t.counter.used for t in counted)
        detector = _detector(ctx, model, p["detector"]) if p["detector"] else None
        system = LayeredDefence(model, _preprocess(model, p["preprocess"]), detector)
        ev = evaluate_layers(system, ctx.x, ctx.y, eps=p["eps"], steps=p["steps"], baseline=baseline,
                             seed=ctx.generator_seed % (2**31))
        meas = [Measurement(f"layered_{when}_{what}", v, {"norm": "linf", "eps": p["eps"], "configuration": r.name})
                for r in ev.rows for when, rates in (("clean", r.clean), ("attacked", r.attacked))
                for what, v in rates.items()]
        return StepResult(step_id=step.id, check=self.name, threat="evasion", params=dict(p), measurements=meas,
                          examples={"layered": ev.to_dict()},
                          cost={"queries": sum(t.counter.used for t in counted) - q0, "gradients": 0,
                                "seconds": round(time.perf_counter() - t0, 6)},
                          notes=[f"{len(ev.rows)} configurations, {ev.n} points, worst case of 2 adaptive attacks"])

    def findings(self, tm: Any, results: list[StepResult]) -> list[Finding]:
        out: list[Finding] = []
        for r in results:
            if r.status != "done":
                continue
            rows = {row["name"]: row for row in r.examples["layered"]["rows"]}
            eps = r.params["eps"]
            model = rows["model"]
            det = rows.get("model + detector")
            if det is not None and det["attacked"]["wrong"] > 0 and (
                    det["attacked"]["rejected"] - det["clean"]["rejected"] < _LITTLE):
                out.append(Finding(
                    id=f"layered:detector:{eps:g}", severity="medium", threat="evasion",
                    title=f"The detector adds little under adaptive attack (L∞ {eps:g})",
                    evidence={"clean_rejected": det["clean"]["rejected"],
                              "attacked_rejected": det["attacked"]["rejected"],
                              "attacked_wrong": det["attacked"]["wrong"]},
                    recommendation=RECOMMEND_LAYERED, steps=[r.step_id]))
            pre = rows.get("model + preprocessing")
            if pre is not None and model["attacked"]["wrong"] > 0 and (
                    model["attacked"]["wrong"] - pre["attacked"]["wrong"] < _LITTLE):
                out.append(Finding(
                    id=f"layered:preprocessing:{eps:g}", severity="medium", threat="evasion",
                    title=f"Preprocessing adds nothing under BPDA (L∞ {eps:g})",
                    evidence={"model_attacked_wrong": model["attacked"]["wrong"],
                              "preprocessed_attacked_wrong": pre["attacked"]["wrong"]},
                    recommendation=RECOMMEND_LAYERED, steps=[r.step_id]))
            full = r.examples["layered"]["rows"][-1]
            if full["attacked"]["wrong"] >= 0.5:
                out.append(Finding(
                    id=f"layered:system:{eps:g}", severity="high", threat="evasion",
                    title=f"The defended system ({full['name']}) is fooled on "
                          f"{full['attacked']['wrong']:.0%} of inputs at L∞ {eps:g}",
                    evidence={"configuration": full["name"], **{f"attacked_{k}": v
                                                                for k, v in full["attacked"].items()}},
                    recommendation=RECOMMEND_LAYERED, steps=[r.step_id]))
        return out

    def section(self, results: list[StepResult]) -> ReportSection | None:
        done = [r for r in results if r.status == "done"]
        if not done:
            return None
        tables = [ReportTable(
            f"outcomes per configuration, clean and under adaptive attack at L∞ eps {r.params['eps']:g} "
            f"(n = {r.examples['layered']['n']})",
            ["configuration", "clean correct", "clean wrong", "clean rejected", "attacked correct", "attacked wrong",
             "attacked rejected"],
            [[row["name"], *[row["clean"][k] for k in _OUTCOMES], *[row["attacked"][k] for k in _OUTCOMES]]
             for row in r.examples["layered"]["rows"]]) for r in done]
        return ReportSection(
            title="Layered defence",
            text="Each configuration of the defence is attacked adaptively (PGD with BPDA through the preprocessing, "
                 "and PGD that also keeps the detector's score low); per input the worst outcome of the two counts. "
                 "Correct: accepted and classified right; wrong: accepted and misclassified (the attacker's win); "
                 "rejected: flagged by the detector. A layer helps when it moves attacked inputs from wrong to "
                 "correct or rejected without rejecting many clean ones.",
            tables=tables, figures=[ReportFigure("outcome shares per configuration", _figure(done))])


_OUTCOMES = ("correct", "wrong", "rejected")
_COLOURS = {"correct": "#4c9a5b", "wrong": "#c8553d", "rejected": "#8d8d8d"}


def _robust(ctx: RunContext, source: str) -> TorchTarget:
    from sparring.data import zoo
    from sparring.targets.load import load_target

    s = ctx.threat_model.system
    spec = None if source in zoo.names() else s.spec or ctx.target.spec  # a zoo model carries its own spec
    t = load_target(source, spec=spec, entry_point=s.entry_point, trust_pickle=s.trust_pickle,
                    device=s.device, batch_size=s.batch_size)
    if not isinstance(t, TorchTarget):
        raise ParameterError(f"defence.robust_model must be a torch model; {source!r} loaded as {type(t).__name__}.")
    if t.spec.shape != ctx.target.spec.shape or t.spec.n_classes != ctx.target.spec.n_classes:
        raise ParameterError(
            f"defence.robust_model {source!r} takes shape {t.spec.shape} with {t.spec.n_classes} classes; the "
            f"audited model takes {ctx.target.spec.shape} with {ctx.target.spec.n_classes}. Use a model of the "
            "same task.")
    return t


def _preprocess(model: TorchTarget, steps: list[dict[str, Any]]) -> list[nn.Module]:
    from sparring.defenses.preprocess import image as im

    bounds = im.image_bounds(model.spec, "defence.preprocess", "defence.preprocess") if steps else (0.0, 1.0)
    build: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
        "bit-depth": lambda s: im.BitDepth(s["bits"], bounds=bounds),
        "median": lambda s: im.MedianSmoothing(s["kernel"]),
        "spatial": lambda s: im.SpatialSmoothing(s["kernel"], mode=s["mode"]),
        "jpeg": lambda s: im.JpegCompression(s["quality"], bounds=bounds),
        "tv": lambda s: im.TotalVariation(s["weight"], s["steps"], bounds=bounds),
    }
    return [build[s["name"]](s) for s in steps]


def _detector(ctx: RunContext, model: TorchTarget, cfg: dict[str, Any]) -> Any:
    from sparring.data import zoo
    from sparring.defenses.detect.features import EnergyDetector, MahalanobisDetector, MaxSoftmaxDetector

    s = ctx.threat_model.system
    ds = zoo.data(s.model)
    own = (ds.x_test, ds.y_test) if s.data.split == "test" else (ds.x_train, ds.y_train)
    other = (ds.x_train, ds.y_train) if s.data.split == "test" else (ds.x_test, ds.y_test)
    held = own[0][s.data.n: s.data.n + _MAX_CAL]
    x_cal = held if len(held) >= _MIN_HELD_OUT else other[0][:_MAX_CAL]
    if cfg["kind"] == "mahalanobis":
        return MahalanobisDetector(model).fit(other[0], other[1]).calibrate(x_cal, cfg["fpr"])
    if cfg["kind"] == "energy":
        return EnergyDetector(model).calibrate(x_cal, cfg["fpr"])
    return MaxSoftmaxDetector(model).calibrate(x_cal, cfg["fpr"])


def _figure(results: list[StepResult]) -> str:
    from sparring.audit.report import plots

    fig = plots.figure(3.4 * len(results) + 1.6, 0.45 * len(results[0].examples["layered"]["rows"]) * 2 + 1.5)
    for k, r in enumerate(results):
        rows = r.examples["layered"]["rows"]
        labels = [f"{row['name']} ({when})" for row in rows for when in ("clean", "attacked")]
        shares = np.array([[row[when][o] for o in _OUTCOMES] for row in rows for when in ("clean", "attacked")])
        ax = fig.add_subplot(1, len(results), k + 1)
        left = np.zeros(len(labels))
        for j, o in enumerate(_OUTCOMES):
            ax.barh(range(len(labels)), shares[:, j], left=left, color=_COLOURS[o], label=o)
            left += shares[:, j]
        ax.set_yticks(range(len(labels)), labels if k == 0 else [""] * len(labels), fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(f"L∞ eps {r.params['eps']:g}", fontsize=9)
        ax.set_xlabel("share of inputs", fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=7)
    return str(plots.png(fig))

