"""From step results to gate verdicts and findings.

Everything here is a pure function of the threat model and the step results, so an audit resumed from checkpoints
produces exactly the findings of an uninterrupted one. Robust accuracy is the per-point worst case over every
attack run at a budget: a point counts as robust only if no attack broke it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any, Literal

from sparring.audit.registry import Skip, StepResult, Threat
from sparring.audit.threat import Gate, ThreatModel

__all__ = [
    "Finding",
    "GateResult",
    "clean_accuracy",
    "evaluate_gates",
    "find",
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
    threshold: float
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
    return [r for r in results if r.threat == "evasion" and r.status == "done" and "robust" in r.per_point]


def worst_case_robust(results: list[StepResult], norm: str, eps: float) -> tuple[list[bool], list[str]] | None:
    """Per point, robust under every attack run at (norm, eps); and the steps that contributed. None if none ran.

    Attacks run on a prefix of the data (the gradient-free comparison) only constrain that prefix.
    """
    steps = [r for r in _evasion(results) if r.params.get("norm") == norm and _same(r.params.get("eps"), eps)]
    if not steps:
        return None
    n = max(len(r.per_point["robust"]) for r in steps)
    robust = [True] * n
    for r in steps:
        for i, ok in enumerate(r.per_point["robust"]):
            robust[i] = robust[i] and bool(ok)
    return robust, [r.step_id for r in steps]


def robust_curves(results: list[StepResult]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{norm: {attack: [(eps, robust accuracy), ...], "worst case": [...]}}`` over the audit's budgets
    (full-data attacks only; the unbounded sanity attack is left out)."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    full = [r for r in _evasion(results) if r.params.get("kind") not in ("unbounded", "blackbox")]
    for r in full:
        acc = r.value("robust_accuracy")
        if acc is not None:
            curves[r.params["norm"]][r.params["attack"]].append((float(r.params["eps"]), acc))
    for norm in list(curves):
        for eps in sorted({e for pts in curves[norm].values() for e, _ in pts}):
            wc = worst_case_robust(full, norm, eps)
            if wc is not None:
                curves[norm]["worst case"].append((eps, sum(wc[0]) / len(wc[0])))
    return {n: {a: sorted(p) for a, p in c.items()} for n, c in curves.items()}


def _same(a: Any, b: float) -> bool:
    return a is not None and abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(b))


def clean_accuracy(results: list[StepResult]) -> float | None:
    """The baseline step's clean accuracy, or None if it did not run."""
    for r in results:
        if r.step_id == "baseline/clean" and r.status == "done":
            return r.value("clean_accuracy")
    return None


# ---------------------------------------------------------------------------------------------- gates
def evaluate_gates(tm: ThreatModel, results: list[StepResult], skipped: list[Skip] | None = None) -> list[GateResult]:
    """Each gate against the measurements; ``skipped`` (the plan's) explains gates nothing could measure."""
    return [_gate(g, results, skipped or []) for g in tm.gates]


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


def _gate(g: Gate, results: list[StepResult], skipped: list[Skip]) -> GateResult:
    value: float | None = None
    steps: list[str] = []
    if g.metric == "clean_accuracy":
        value, steps = clean_accuracy(results), ["baseline/clean"]
    elif g.metric == "robust_accuracy":
        assert g.norm is not None and g.eps is not None
        wc = worst_case_robust(results, g.norm, g.eps)
        if wc is not None:
            value, steps = sum(wc[0]) / len(wc[0]), wc[1]
    elif g.metric == "certified_accuracy":
        key, want = ("eps", g.eps) if g.norm == "linf" else ("radius", g.radius)
        assert want is not None
        value, steps = _max_measured(results, g.metric, lambda p: p.get("norm") == g.norm
                                     and _same(p.get(key), want) and g.method in (None, p.get("method")))
    elif g.metric == "text_evasion_rate":
        defence = g.method or "none"
        value, steps = _max_measured(results, g.metric, lambda p: p.get("max_chars") == g.max_chars
                                     and p.get("defence") == defence)
    op: Literal[">=", "<="] = ">=" if g.min is not None else "<="
    threshold = float(g.min if g.min is not None else g.max)  # type: ignore[arg-type]
    if value is None:
        why = [f"{s.check}: {s.reason}" for s in skipped if s.threat == _gate_threat(g.metric)]
        return GateResult(g.describe(), g.metric, "not-evaluated", None, threshold, op,
                          "no step measured this metric, so the gate fails"
                          + (f" (skipped: {'; '.join(why)})" if why else ""), steps)
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
                id=f"gate:{g.gate}", title=f"Gate not met: {g.gate}", severity="high", threat=_gate_threat(g.metric),
                evidence={"value": g.value, "threshold": g.threshold, "status": g.status, "message": g.message},
                recommendation=(RECOMMEND_UNMEASURED if g.status == "not-evaluated"
                                else RECOMMEND_TEXT if g.metric == "text_evasion_rate"
                                else RECOMMEND_L2 if "l2" in g.gate else RECOMMEND_LINF), steps=g.steps,
            ))
    out += _evasion_findings(results)
    masking = masking_findings(results)
    out += masking + _retry_findings(results, bool(masking))
    out += _certification_findings(results)
    out += family_findings(tm, results)
    errors = [r for r in results if r.status == "error"]
    for r in errors:
        out.append(Finding(id=f"error:{r.step_id}", title=f"Step could not complete: {r.step_id}", severity="medium",
                           threat=r.threat, evidence={"error": r.error}, steps=[r.step_id],
                           recommendation="Fix the cause in the message and re-run with --resume."))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(out, key=lambda f: order[f.severity])


def family_findings(tm: ThreatModel, results: list[StepResult]) -> list[Finding]:
    """Findings of the checks that define ``findings(threat_model, results)``, each given only its own results."""
    from sparring.audit.registry import CHECKS

    out: list[Finding] = []
    for check in CHECKS.values():
        fn = getattr(check, "findings", None)
        own = [r for r in results if r.check == check.name]
        if fn is not None and own:
            out += fn(tm, own)
    return out


def _gate_threat(metric: str) -> Threat:
    return {"certified_accuracy": "certification", "clean_accuracy": "baseline",  # type: ignore[return-value]
            "text_evasion_rate": "text"}.get(metric, "evasion")  # type: ignore[return-value]


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
        out.append(Finding(
            id=f"evasion:{norm}",
            title=(f"{norm.upper()} evasion: accuracy {clean:.2f} → {acc0:.2f} at eps {eps0:g}"
                   + (f", {acc1:.2f} at eps {eps1:g}" if eps1 != eps0 else "")),
            severity=severity, threat="evasion",
            evidence={"clean_accuracy": clean, "worst_case": [[e, a] for e, a in worst],
                      "attacks": sorted(a for a in curves if a != "worst case")},
            recommendation=RECOMMEND_L2 if norm == "l2" else RECOMMEND_LINF,
            steps=[r.step_id for r in _evasion(results) if r.params.get("norm") == norm],
        ))
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
            beats = [i for i, ok in enumerate(r.per_point["robust"]) if not ok and wc[0][i]]
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
