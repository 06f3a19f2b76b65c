"""The HTML report: one self-contained file (inline CSS, plots as PNG data URIs, no scripts, no network)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sparring.audit.findings import clean_accuracy, robust_curves
from sparring.audit.registry import CHECKS, ReportSection, StepResult
from sparring.audit.report import plots
from sparring.audit.runner import Audit

if TYPE_CHECKING:
    from sparring.audit.history import Run

__all__ = ["render_html"]

MAX_EXAMPLES = 6


def render_html(audit: Audit, data: dict[str, Any], *, history: Sequence[Run] | None = None) -> str:
    """Render the report page from the audit (for its evidence) and its JSON report dict; ``history`` (this model's
    recorded runs, this one last) adds the trend over them when there are two or more."""
    import jinja2
    import yaml

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sparring.audit.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
    )
    spec = audit.target.get("spec", {})
    ctx = {
        "d": data,
        "clean": clean_accuracy(audit.results),
        "curves": _curve_figures(audit),
        "tables": _robust_tables(audit),
        "examples": _example_figures(audit, spec),
        "confusions": _confusion_figures(audit, spec),
        "certification": _certification(audit),
        "sections": _family_sections(audit),
        "threat_yaml": yaml.safe_dump(audit.threat_model.to_dict(), sort_keys=False),
        "target_json": json.dumps(audit.target, indent=2),
        "trend": _trend(history),
    }
    return env.get_template("report.html.j2").render(**ctx)


def _trend(history: Sequence[Run] | None) -> dict[str, Any] | None:
    """The audit history's trend plot (inline PNG) and the last two runs' gates side by side, from two runs on."""
    if history is None or len(history) < 2:
        return None
    from sparring.audit.history import trend_figure, trend_table
    from sparring.errors import ParameterError

    try:
        png = plots.png(trend_figure(history))
    except ParameterError:  # no run has a measured gate: the table still says so
        png = None
    prev, last = history[-2], history[-1]
    return {"png": png, "rows": trend_table(history), "n": len(history),
            "previous": {"id": prev.id, "at": prev.recorded_at, "verdict": prev.verdict},
            "now": {"id": last.id, "at": last.recorded_at, "verdict": last.verdict}}


def _family_sections(audit: Audit) -> list[ReportSection]:
    """Sections of the checks that define ``section(results)``, each given only its own results (a hook that raises
    gives a section saying so instead)."""
    out = []
    for check in CHECKS.values():
        fn = getattr(check, "section", None)
        own = [r for r in audit.results if r.check == check.name]
        if fn is None or not own:
            continue
        try:
            sec = fn(own)
        except Exception as exc:  # a family's report hook must not cost the whole report
            sec = ReportSection(title=f"{check.name}: section unavailable",
                                text=f"The check's report section could not be drawn ({type(exc).__name__}: {exc}); "
                                     "its results are in report.json.")
        if sec is not None:
            out.append(sec)
    return out


def _curve_figures(audit: Audit) -> list[dict[str, str]]:
    clean = clean_accuracy(audit.results)
    units = audit.threat_model.system.units
    return [{"norm": norm, "png": plots.robust_curve(norm, curves, clean, units), "units": plots.budget_units(units)}
            for norm, curves in sorted(robust_curves(audit.results).items())]


def _robust_tables(audit: Audit) -> list[dict[str, Any]]:
    out = []
    for norm, curves in sorted(robust_curves(audit.results).items()):
        eps = sorted({e for pts in curves.values() for e, _ in pts})
        rows = [{"attack": a, "values": [dict(pts).get(e) for e in eps]} for a, pts in curves.items()]
        out.append({"norm": norm, "eps": eps, "rows": rows})
    return out


def _main_steps(audit: Audit) -> dict[str, StepResult]:
    """Per norm, the full-data evasion step at the largest budget with the most broken examples."""
    best: dict[str, StepResult] = {}
    for r in audit.results:
        if r.threat != "evasion" or r.status != "done" or "adv_pred" not in r.per_point:
            continue
        if r.params.get("kind") in ("unbounded", "blackbox", "fgsm"):
            continue
        norm = r.params["norm"]
        cur = best.get(norm)
        key = (float(r.params["eps"]), len(r.examples.get("index", [])))
        if cur is None or key > (float(cur.params["eps"]), len(cur.examples.get("index", []))):
            best[norm] = r
    return best


def _is_image(spec: dict[str, Any]) -> bool:
    shape = spec.get("shape", [])
    if spec.get("layout") not in ("chw", "hwc") or len(shape) != 3:
        return False
    channels = shape[0] if spec["layout"] == "chw" else shape[2]
    return channels in (1, 3)


def _bounds(spec: dict[str, Any]) -> tuple[float, float]:
    lo, hi = spec.get("bounds", [0.0, 1.0])
    return min(_flatten(lo)), max(_flatten(hi))


def _flatten(v: Any) -> list[float]:
    if isinstance(v, int | float):
        return [float(v)]
    return [f for item in v for f in _flatten(item)]


def _example_figures(audit: Audit, spec: dict[str, Any]) -> list[dict[str, str]]:
    if not _is_image(spec):
        return []
    names = spec.get("class_names")
    out = []
    for norm, r in sorted(_main_steps(audit).items()):
        ex = r.examples
        k = min(MAX_EXAMPLES, len(ex.get("index", [])))
        if k == 0:
            continue
        title = f"{r.params['attack']} at {norm.upper()} eps {r.params['eps']:g}: clean (top), adversarial, difference"
        png = plots.examples_grid(ex["x"][:k], ex["x_adv"][:k], ex["y"][:k], ex["adv_pred"][:k], spec["layout"],
                                  _bounds(spec), names, title)
        out.append({"norm": norm, "step": r.step_id, "png": png})
    return out


def _confusion_figures(audit: Audit, spec: dict[str, Any]) -> list[dict[str, str]]:
    n_classes = int(spec.get("n_classes", 0))
    if not n_classes or n_classes > 40:
        return []
    y = None
    for r in audit.results:
        if r.step_id == "baseline/clean":
            y = r.per_point.get("y")
    if y is None:
        return []
    out = []
    for norm, r in sorted(_main_steps(audit).items()):
        title = f"{r.params['attack']}, {norm.upper()} eps {r.params['eps']:g}"
        out.append({"norm": norm, "step": r.step_id,
                    "png": plots.confusion(y, r.per_point["adv_pred"], n_classes, spec.get("class_names"), title)})
    return out


def _certification(audit: Audit) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    bounds = [(m.params["eps"], m.value, r.step_id) for r in audit.results if r.check == "certify-bounds"
              and r.status == "done" for m in r.measurements if m.metric == "certified_accuracy"]
    if bounds:
        pts = [(e, v) for e, v, _ in bounds]
        out.append({"title": "Bound propagation (L∞, IBP/CROWN)", "rows": pts, "key": "eps",
                    "png": plots.certified_curve(pts, "verified accuracy", "L∞ eps")})
    for r in audit.results:
        if r.check != "certify-smoothing" or r.status != "done":
            continue
        pts = [(m.params["radius"], m.value) for m in r.measurements if m.metric == "certified_accuracy"]
        extra = {m.metric: m.value for m in r.measurements if m.metric in ("smoothed_accuracy", "abstain_rate")}
        out.append({"title": f"Randomized smoothing (L2, sigma {r.params['sigma']:g}, n {r.params['n']}, "
                             f"alpha {r.params['alpha']:g})", "rows": pts, "key": "radius", "extra": extra,
                    "png": plots.certified_curve(pts, f"sigma {r.params['sigma']:g}", "L2 radius")})
    return out
