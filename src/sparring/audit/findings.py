"""From step results to gate verdicts and findings.

Everything here is a pure function of the threat model and the step results, so an audit resumed from checkpoints
produces exactly the findings of an uninterrupted one. Robust accuracy is the per-point worst case over every
attack run at a budget: a point counts as robust only if no attack broke it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any, Literal

from sparring.audit.llm_results import RECOMMEND_LLM_GATE, counts_for, llm_gate_value
from sparring.audit.metrics import LLM_METRICS
from sparring.audit.registry import Skip, StepResult, Threat
from sparring.audit.threat import Gate, ThreatModel
from sparring.audit.worstcase import (
    drift_gate_value,
    evasion_steps,
    same_eps,
    step_broken,
    step_unknown,
    text_union,
    worst_case,
    worst_cases,
)

__all__ = [
    "Finding",
    "GateResult",
    "clean_accuracy",
    "evaluate_gates",
    "find",
    "gate_depends_on",
    "masking_findings",
    "robust_curves",
    "worst_case_robust",
]

Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")

RECOMMEND_LINF = (
    "Train with PGD adversarial training or TRADES (Madry et al. 2018; Zhang et al. 2019: "
    "sparring.defenses.training.adversarial_train, or `sparring train --method pgd`) or certifiably with "
    "IBP/CROWN-IBP (sparring.defenses.training.train_certified), then verify with sparring.defenses.certify.verify."
)
RECOMMEND_L2 = (
    "Train with Gaussian noise (sparring.defenses.training.train_with_noise) and serve the smoothed classifier "
    "(sparring.defenses.certify.SmoothedClassifier), which comes with a certified L2 radius."
)
RECOMMEND_TEXT = ("Put sparring.defenses.preprocess.text.normalize in front of the model (display order, NFKC, "
                  "confusables, invisible characters stripped) and train on attack outputs "
                  "(sparring.defenses.training.text.train_robust_text); see the text-evasion findings.")
RECOMMEND_DRIFT = (
    "Find what changed between the reference and the current data (the report's most shifted features; sparring "
    "drift REFERENCE CURRENT --window N for when): a new source, a broken pipeline, or injected inputs (drift can "
    "be poisoning or probing); re-validate the model on current data before trusting it, and watch live inputs "
    "with an online detector (sparring.defenses.detect.drift.OnlineMMD, CUSUM on confidence)."
)
RECOMMEND_UNMEASURED = (
    "Make the gate measurable or remove it: the plan's skipped checks say what was missing (e.g. bound propagation "
    "needs Linear/Conv2d/ReLU/AvgPool layers; gradient attacks need a white-box model)."
)
RECOMMEND_MASKING = (
    "Do not trust the gradient-based numbers: evaluate with an adaptive attack (BPDA through non-differentiable "
    "transforms, EOT over randomness; Athalye et al. 2018) and with gradient-free attacks (Square, HopSkipJump), "
    "and report the worst case."
)


@dataclass
class Finding:
    id: str
    title: str
    severity: Severity
    threat: Threat
    evidence: dict[str, Any]
    recommendation: str
    steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GateResult:
    gate: str
    metric: str
    status: Literal["pass", "fail", "not-evaluated"]
    value: float | None
    threshold: float | None
    op: Literal[">=", "<="]
    message: str
    steps: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- measurements
def _evasion(results: list[StepResult]) -> list[StepResult]:
    return evasion_steps(results)


def worst_case_robust(results: list[StepResult], norm: str, eps: float) -> tuple[list[bool], list[str]] | None:
    """Per point, robust under every attack run at (norm, eps); and the steps that contributed. None if none ran.

    The tuple form of :func:`sparring.audit.worstcase.worst_case` (unknown points are not robust).
    """
    wc = worst_case(results, norm, eps)
    return None if wc is None else (list(wc.robust), list(wc.steps))


def _label(r: StepResult, n: int) -> str:
    """The curve name of a step: its attack, marked when it is the retry's gradient-free run (the sanity Square
    over all points is otherwise the same name at the same budget) or ran on a prefix of the points."""
    k = len(r.per_point["robust"])
    retry = " (retry)" if "gradient_free" in r.params else ""
    return str(r.params["attack"]) + retry + (f" (first {k} points)" if k < n else "")


def robust_curves(results: list[StepResult]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{norm: {attack: [(eps, robust accuracy), ...], "worst case": [...]}}`` over the audit's budgets.

    Every evasion step at a budget is a line (an attack run on a prefix of the data is labelled so); the worst case
    is :func:`sparring.audit.worstcase.worst_cases`, the same per-point worst case the gates use. The unbounded
    sanity attack (eps = the whole input range) is left out.
    """
    curves: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    steps = [r for r in _evasion(results) if r.params.get("kind") != "unbounded"]
    n = max((len(r.per_point["robust"]) for r in steps), default=0)
    for r in steps:
        acc = r.value("robust_accuracy")
        if acc is not None:
            curves[r.params["norm"]][_label(r, n)].append((float(r.params["eps"]), acc))
    for wc in worst_cases(results):
        curves[wc.norm]["worst case"].append((wc.eps, wc.accuracy))
    return {k: {a: sorted(p) for a, p in c.items()} for k, c in curves.items()}


def _same(a: Any, b: float) -> bool:
    return same_eps(a, b)


def clean_accuracy(results: list[StepResult]) -> float | None:
    """The baseline step's clean accuracy, or None if it did not run."""
    for r in results:
        if r.step_id == "baseline/clean" and r.status == "done":
            return r.value("clean_accuracy")
    return None


# ---------------------------------------------------------------------------------------------- gates
def evaluate_gates(tm: ThreatModel, results: list[StepResult], skipped: list[Skip] | None = None,
                   baseline: Mapping[str, float] | None = None) -> list[GateResult]:
    """Each gate against the measurements; ``skipped`` (the plan's) explains gates nothing could measure.

    A gate is *unmeasured* (status ``not-evaluated``: it fails) when no step measured it, when a step it depends on
    could not run (:func:`gate_depends_on`), or when its value depends on points an attack left unfinished. A
    regression gate (``max_drop``) compares with ``baseline`` (gate key -> value before, see
    :mod:`sparring.audit.baseline`); without a value there it is unmeasured too (its measured value is kept).
    """
    return [_gate(g, results, skipped or [], baseline or {}) for g in tm.gates]


def gate_depends_on(g: Gate, r: StepResult) -> bool:
    """Whether step ``r`` (had it run) could change gate ``g``'s value.

    Robust accuracy depends on every evasion step at its budget and on the evasion steps that have no budget (the
    gradient and randomness sanity checks, a follow-up's planning): without them masking cannot be ruled out.
    """
    p = r.params
    if g.metric == "clean_accuracy":
        return r.check == "baseline"
    if g.metric == "robust_accuracy":
        assert g.eps is not None
        return r.threat == "evasion" and ("norm" not in p or (p.get("norm") == g.norm and _same(p.get("eps"), g.eps)))
    if g.metric == "certified_accuracy":
        return r.threat == "certification" and p.get("norm", g.norm) == g.norm
    if g.metric in ("drift_p_value", "drift_detected"):
        return r.threat == "drift" and g.method in (None, r.params.get("test"))
    if g.metric == "text_evasion_rate":
        return r.threat == "text" and p.get("max_chars", g.max_chars) == g.max_chars and \
            p.get("defence", g.method or "none") == (g.method or "none")
    if g.metric in LLM_METRICS:
        return counts_for(g.metric, g.method, r)
    return False


def _max_measured(results: list[StepResult], metric: str,
                  match: Callable[[dict[str, Any]], bool]) -> tuple[float | None, list[str]]:
    """The largest value of ``metric`` over the measurements whose params ``match``, and the steps that had one."""
    value: float | None = None
    steps: list[str] = []
    for r in results:
        for m in r.measurements:
            if m.metric == metric and match(m.params):
                value = m.value if value is None else max(value, m.value)
                steps.append(r.step_id)
    return value, steps


def _gate(g: Gate, results: list[StepResult], skipped: list[Skip], baseline: Mapping[str, float]) -> GateResult:
    value: float | None = None
    steps: list[str] = []
    unmeasured: str | None = None
    if g.metric == "clean_accuracy":
        value, steps = clean_accuracy(results), ["baseline/clean"]
    elif g.metric == "robust_accuracy":
        assert g.norm is not None and g.eps is not None
        wc = worst_case(results, g.norm, g.eps)
        if wc is not None:
            value, steps = wc.accuracy, list(wc.steps)
            if wc.n_unknown:
                unmeasured = (f"{wc.n_unknown} of {wc.n} points are unknown (an attack ran out of queries before "
                              f"finishing them): robust accuracy is between {wc.accuracy:.4f} and {wc.upper:.4f}")
    elif g.metric == "certified_accuracy":
        key, want = ("eps", g.eps) if g.norm == "linf" else ("radius", g.radius)
        assert want is not None
        value, steps = _max_measured(results, g.metric, lambda p: p.get("norm") == g.norm
                                     and _same(p.get(key), want) and g.method in (None, p.get("method")))
    elif g.metric == "text_evasion_rate":
        tu = text_union(results, g.max_chars, g.method or "none")
        if tu is not None:
            value, steps = tu.rate, list(tu.steps)
            if tu.partial:
                unmeasured = (f"the query budget ran out before every message was attacked ({', '.join(tu.partial)}"
                              f"): the evasion rate is at least {tu.rate:.4f}")
    elif g.metric in ("drift_p_value", "drift_detected"):
        value, steps = drift_gate_value(results, g.metric, g.method)
    elif g.metric in LLM_METRICS:
        value, steps, unmeasured = llm_gate_value(results, g.metric, g.method)
    op: Literal[">=", "<="] = "<=" if g.max is not None else ">="
    before = baseline.get(g.key()) if g.max_drop is not None else None
    threshold = (None if before is None else before - g.max_drop) if g.max_drop is not None \
        else float(g.min if g.min is not None else g.max)  # type: ignore[arg-type]
    failed = [r for r in results if r.status == "error" and gate_depends_on(g, r)]
    if failed:
        unmeasured = "; ".join(f"step {r.step_id} could not run ({r.error})" for r in failed[:3]) + (
            f" and {len(failed) - 3} more" if len(failed) > 3 else "")
    if unmeasured is not None:
        return GateResult(g.describe(), g.metric, "not-evaluated", None, threshold, op,
                          f"unmeasured, so the gate fails: {unmeasured}",
                          sorted({*steps, *(r.step_id for r in failed)}))
    if value is None:
        why = [f"{s.check}: {s.reason}" for s in skipped if s.threat == _gate_threat(g.metric)]
        return GateResult(g.describe(), g.metric, "not-evaluated", None, threshold, op,
                          "unmeasured: no step measured this metric, so the gate fails"
                          + (f" (skipped: {'; '.join(why)})" if why else ""), steps)
    if g.max_drop is not None:
        if before is None or threshold is None:
            return GateResult(g.describe(), g.metric, "not-evaluated", value, None, op,
                              f"measured {value:.4f}, but the baseline has no value of {g.key()} to compare with, so "
                              "the gate fails: run with --baseline DIR/report.json from an audit that measured it",
                              steps)
        ok = g.passes(value, before)
        msg = (f"measured {value:.4f}, baseline {before:.4f} (delta {value - before:+.4f}) "
               f"{'meets' if ok else 'misses'} drop <= {g.max_drop:g}")
        return GateResult(g.describe(), g.metric, "pass" if ok else "fail", value, threshold, op, msg, steps)
    assert threshold is not None
    ok = g.passes(value)
    msg = f"measured {value:.4f} {'meets' if ok else 'misses'} {op} {threshold:g}"
    return GateResult(g.describe(), g.metric, "pass" if ok else "fail", value, threshold, op, msg, steps)


# ---------------------------------------------------------------------------------------------- findings
def find(tm: ThreatModel, results: list[StepResult], gates: list[GateResult]) -> list[Finding]:
    """All findings, most severe first (stable order for equal severity)."""
    out: list[Finding] = []
    for g in gates:
        if not g.passed:
            out.append(Finding(
                id=f"gate:{g.gate}", title=f"Gate not met: {g.gate}" + (
                    " (unmeasured)" if g.status == "not-evaluated" else ""),
                severity="high", threat=_gate_threat(g.metric),
                evidence={"value": g.value, "threshold": g.threshold, "status": g.status, "message": g.message},
                recommendation=(RECOMMEND_UNMEASURED if g.status == "not-evaluated"
                                else RECOMMEND_TEXT if g.metric == "text_evasion_rate"
                                else RECOMMEND_LLM_GATE if g.metric in LLM_METRICS
                                else RECOMMEND_DRIFT if g.metric.startswith("drift_")
                                else RECOMMEND_L2 if "l2" in g.gate else RECOMMEND_LINF), steps=g.steps,
            ))
    out += _evasion_findings(results)
    out += _unknown_findings(results)
    masking = masking_findings(results)
    out += masking + _retry_findings(results, bool(masking))
    out += _certification_findings(results)
    out += family_findings(tm, results)
    out += error_findings(tm, results)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(out, key=lambda f: order[f.severity])


def error_findings(tm: ThreatModel, results: list[StepResult]) -> list[Finding]:
    """One finding per step that could not run: what failed, and which gates it leaves unmeasured."""
    out = []
    for r in results:
        if r.status != "error":
            continue
        gates = [g.describe() for g in tm.gates if gate_depends_on(g, r)]
        fault = bool(getattr(r, "fault", False))
        what = "the model or endpoint failed" if fault else "the check failed"
        out.append(Finding(
            id=f"error:{r.step_id}", severity="high", threat=r.threat,
            title=(f"Check {r.check} could not run ({r.step_id}): {r.error}; "
                   + (f"gate {', '.join(gates)} unmeasured" if gates else "no gate depends on it")),
            evidence={"error": r.error, "error_type": getattr(r, "error_type", None), "fault": fault,
                      "unmeasured_gates": gates},
            recommendation=(f"{what.capitalize()}: fix the cause in the message (or bring the endpoint back), then "
                            "re-run with --resume: finished steps are kept, this one runs again. Re-run with --debug "
                            "for the traceback."),
            steps=[r.step_id]))
    return out


def family_findings(tm: ThreatModel, results: list[StepResult]) -> list[Finding]:
    """Findings of the checks that define ``findings(threat_model, results)``, each given only its own results.

    A hook that raises becomes a finding saying so; the other findings and the reports are still written.
    """
    from sparring.audit.registry import CHECKS

    out: list[Finding] = []
    for check in CHECKS.values():
        fn = getattr(check, "findings", None)
        own = [r for r in results if r.check == check.name]
        if fn is None or not own:
            continue
        try:
            out += fn(tm, own)
        except Exception as exc:  # a family's report hook must not take the audit down
            out.append(Finding(
                id=f"error:{check.name}:findings", severity="high", threat=check.threat,
                title=f"Check {check.name} could not summarise its results: {type(exc).__name__}: {exc}",
                evidence={"error": f"{type(exc).__name__}: {exc}"},
                recommendation="A bug in the check's findings hook: please report it; its step results are in the "
                               "JSON report.", steps=[r.step_id for r in own]))
    return out


def _gate_threat(metric: str) -> Threat:
    return {"certified_accuracy": "certification", "clean_accuracy": "baseline",  # type: ignore[return-value]
            "text_evasion_rate": "text", "drift_p_value": "drift",
            "drift_detected": "drift", **dict.fromkeys(LLM_METRICS, "llm")}.get(metric, "evasion")  # type: ignore[return-value]


def _evasion_findings(results: list[StepResult]) -> list[Finding]:
    clean = clean_accuracy(results)
    if clean is None:
        return []
    out = []
    for norm, curves in sorted(robust_curves(results).items()):
        worst = curves.get("worst case", [])
        if not worst:
            continue
        eps0, acc0 = worst[0]
        eps1, acc1 = worst[-1]
        # The threat model grants the attacker every declared budget, so the largest one sets the severity.
        drop = clean - acc1
        severity: Severity = ("critical" if drop >= 0.5 else "high" if drop >= 0.3 else "medium" if drop >= 0.1
                              else "low" if drop >= 0.02 else "info")
        unknown = {wc.eps: wc.n_unknown for wc in worst_cases(results) if wc.norm == norm and wc.n_unknown}
        out.append(Finding(
            id=f"evasion:{norm}",
            title=(f"{norm.upper()} evasion: accuracy {clean:.2f} → {acc0:.2f} at eps {eps0:g}"
                   + (f", {acc1:.2f} at eps {eps1:g}" if eps1 != eps0 else "")
                   + (f" ({sum(unknown.values())} point-budgets unknown: query budget ran out)" if unknown else "")),
            severity=severity, threat="evasion",
            evidence={"clean_accuracy": clean, "worst_case": [[e, a] for e, a in worst],
                      "unknown_points": [[e, k] for e, k in sorted(unknown.items())],
                      "attacks": sorted(a for a in curves if a != "worst case")},
            recommendation=RECOMMEND_L2 if norm == "l2" else RECOMMEND_LINF,
            steps=[r.step_id for r in _evasion(results) if r.params.get("norm") == norm],
        ))
    return out


def _unknown_findings(results: list[StepResult]) -> list[Finding]:
    """One finding per evasion step that left points unfinished because the query budget ran out."""
    out = []
    for r in _evasion(results):
        k = sum(step_unknown(r))
        if not k:
            continue
        p = r.params
        out.append(Finding(
            id=f"budget:{r.step_id}", severity="medium", threat="evasion",
            title=(f"{p.get('attack')} at {str(p.get('norm')).upper()} eps {float(p.get('eps', 0)):g} ran out of "
                   f"queries on {k} of {len(r.per_point['robust'])} points: unknown, not robust"),
            evidence={"unknown": k, "points": len(r.per_point["robust"]),
                      "unknown_points": [i for i, u in enumerate(step_unknown(r)) if u][:20]},
            recommendation="Raise attacker.query_budget (or the target's query budget) and re-run: a gate whose "
                           "value depends on unknown points is unmeasured and fails.", steps=[r.step_id]))
    return out


def _iterative(results: list[StepResult]) -> list[StepResult]:
    return [r for r in _evasion(results) if r.step_id.startswith("evasion/") and r.check == "evasion-gradient"]


def _retry_findings(results: list[StepResult], suspected: bool) -> list[Finding]:
    retried = [r for r in _evasion(results) if r.check == "adaptive-retry"]
    if not retried:
        return []
    rows: list[dict[str, Any]] = []
    for r in retried:
        naive = worst_case_robust(_iterative(results), r.params["norm"], float(r.params["eps"]))
        before = sum(naive[0]) / len(naive[0]) if naive else None
        rows.append({"step": r.step_id, "naive": before, "adaptive": r.value("robust_accuracy"), "notes": r.notes})
    drops = [row["naive"] - row["adaptive"] for row in rows if row["naive"] is not None and row["adaptive"] is not None]
    worst = max(drops, default=0.0)
    confirmed = worst >= 0.05
    applied = sorted({n.split(":")[0] for r in retried for n in r.notes if "BPDA" in n or "EOT" in n})
    what = ", ".join(applied) or "no wrapper applicable"
    title = (f"Adaptive retry ({what}) lowers robust accuracy by up to {worst:.2f}: the naive evaluation "
             "overstated robustness" if confirmed else f"Adaptive retry ({what}) did not lower robust accuracy")
    severity: Severity = "high" if confirmed else "medium" if suspected else "info"
    return [Finding(id="masking:retry", title=title, severity=severity, threat="evasion", evidence={"retries": rows},
                    recommendation=RECOMMEND_MASKING, steps=[r.step_id for r in retried])]


def masking_findings(results: list[StepResult]) -> list[Finding]:
    """The gradient-masking sanity checks (Carlini et al. 2019) over the white-box evaluation's results."""
    out: list[Finding] = []
    iterative = _iterative(results)

    def suspect(key: str, title: str, evidence: dict[str, Any], steps: list[str]) -> None:
        out.append(Finding(id=f"masking:{key}", title=f"Suspected gradient masking: {title}", severity="high",
                           threat="evasion", evidence=evidence, recommendation=RECOMMEND_MASKING, steps=steps))

    by_attack: dict[tuple[str, str], list[tuple[float, float, int]]] = defaultdict(list)
    for r in iterative:
        acc = r.value("robust_accuracy")
        if acc is not None:
            by_attack[(r.params["attack"], r.params["norm"])].append(
                (float(r.params["eps"]), acc, len(r.per_point["robust"])))
    for (attack, norm), pts in sorted(by_attack.items()):
        pts.sort()
        rises = [(a[0], b[0]) for a, b in pairwise(pts) if b[1] > a[1] + 1.0 / a[2]]
        if rises:
            suspect(f"monotonic:{attack}:{norm}", f"{attack} robust accuracy rises with eps ({norm})",
                    {"curve": [[e, a] for e, a, _ in pts], "rises_between": rises}, [])

    for r in _evasion(results):
        kind = r.params.get("kind")
        if kind in ("fgsm", "blackbox"):
            wc = worst_case_robust(iterative, r.params["norm"], float(r.params["eps"]))
            if wc is None:
                continue
            beats = [i for i, b in enumerate(step_broken(r)) if b and wc[0][i]]
            limit = max(1, round(0.02 * len(r.per_point["robust"])))
            if len(beats) > limit:
                what = "single-step FGSM" if kind == "fgsm" else "gradient-free Square"
                suspect(f"{kind}:{r.params['norm']}:{r.params['eps']:g}",
                        f"{what} breaks {len(beats)} points the iterative gradient attacks did not "
                        f"({r.params['norm']} eps {r.params['eps']:g})",
                        {"points": beats[:20], "count": len(beats), "allowed": limit}, [r.step_id, *wc[1]])
        elif kind == "unbounded":
            acc = r.value("robust_accuracy") or 0.0
            if acc > 0.05:
                suspect("unbounded", f"robust accuracy {acc:.2f} with the whole input range allowed (should be ~0)",
                        {"robust_accuracy": acc, "eps": r.params["eps"]}, [r.step_id])
    for r in results:
        frac = r.value("zero_gradient_fraction")
        if frac is not None and frac > 0.1:
            suspect("gradients", f"the input gradient is zero on {frac:.0%} of the points",
                    {"zero_gradient_fraction": frac}, [r.step_id])
        rand = r.value("randomized_fraction")
        if rand is not None and rand > 0:
            suspect("randomness", f"the model's scores change between two passes on {rand:.0%} of the points "
                    "(a randomized defence: gradients need EOT)", {"randomized_fraction": rand}, [r.step_id])
    return out


def _certification_findings(results: list[StepResult]) -> list[Finding]:
    out = []
    for r in results:
        if r.threat != "certification" or r.status != "done":
            continue
        cert = [m for m in r.measurements if m.metric == "certified_accuracy"]
        if not cert:
            continue
        desc = ", ".join(f"{m.value:.2f} at {'eps' if 'eps' in m.params else 'radius'} "
                         f"{m.params.get('eps', m.params.get('radius')):g}" for m in cert)
        out.append(Finding(id=f"certified:{r.step_id}", title=f"Certified accuracy ({r.params['norm']}): {desc}",
                           severity="info", threat="certification",
                           evidence={"certified": [[m.params.get("eps", m.params.get("radius")), m.value]
                                                   for m in cert]},
                           recommendation="Guarantees hold for every attack within the budget; raise them with "
                                          "certified (IBP/CROWN-IBP) or noise training.", steps=[r.step_id]))
    return out
