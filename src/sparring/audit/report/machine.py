"""The machine-readable reports: JSON (versioned schema), JUnit XML (one case per gate) and a Markdown summary."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from sparring.audit.baseline import markdown_lines
from sparring.audit.runner import Audit
from sparring.audit.worstcase import step_unknown

__all__ = ["REPORT_SCHEMA_VERSION", "render_junit", "render_markdown", "report_dict"]

REPORT_SCHEMA_VERSION = 1


def report_dict(audit: Audit) -> dict[str, Any]:
    """The JSON report: everything except per-point arrays and example inputs (those stay in the checkpoints)."""
    steps = []
    reasons = {s.id: s.reason for s in audit.plan.steps}
    for r in audit.results:
        step: dict[str, Any] = {
            "id": r.step_id, "check": r.check, "threat": r.threat, "status": r.status, "params": r.params,
            "reason": reasons.get(r.step_id, ""),
            "measurements": [{"metric": m.metric, "value": m.value, "params": m.params} for m in r.measurements],
            "cost": r.cost, "notes": r.notes, "error": r.error, "error_type": r.error_type, "fault": r.fault,
        }
        if r.status == "done" and "robust" in r.per_point:
            step["unknown"] = sum(step_unknown(r))  # points the attack did not finish (query budget): not robust
        if r.traceback:
            step["traceback"] = r.traceback
        steps.append(step)
    out = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "name": audit.threat_model.name,
        "status": audit.status,
        "verdict": audit.verdict,
        "errors": len(audit.errors),
        "faults": len(audit.faults),
        "gates": [g.to_dict() for g in audit.gates],
        "baseline": audit.baseline,
        "findings": [f.to_dict() for f in audit.findings],
        "plan": audit.plan.to_dict(),
        "steps": steps,
        "target": audit.target,
        "threat_model": audit.threat_model.to_dict(),
        "environment": audit.environment,
    }
    families = _family_data(audit)
    if families:
        out["families"] = families
    return out


def _family_data(audit: Audit) -> dict[str, Any]:
    """The ``report_data(results)`` blocks of the checks that define one (e.g. the LLM ASR tables and the judge's
    measured sensitivity and specificity), each given only its own results; a hook that raises gives its error."""
    from sparring.audit.registry import CHECKS

    out: dict[str, Any] = {}
    for check in CHECKS.values():
        fn = getattr(check, "report_data", None)
        own = [r for r in audit.results if r.check == check.name]
        if fn is None or not own:
            continue
        try:
            out[check.name] = fn(own)
        except Exception as exc:  # a family's report hook must not cost the report
            out[check.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def render_junit(data: dict[str, Any]) -> str:
    """JUnit XML: one test case per gate (failing gates fail), plus one error case per step that could not run."""
    gates = data["gates"]
    errors = [s for s in data["steps"] if s["status"] == "error"]
    suite = ET.Element("testsuite", {
        "name": f"sparring audit: {data['name']}", "tests": str(len(gates) + len(errors)),
        "failures": str(sum(g["status"] != "pass" for g in gates)), "errors": str(len(errors)),
        "time": str(data["environment"].get("seconds", 0)),
    })
    base = data.get("baseline")
    if base:
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", {"name": "baseline", "value": base["path"]})
    deltas = {b["gate"]: b for b in base["gates"]} if base else {}
    for g in gates:
        case = ET.SubElement(suite, "testcase", {"classname": "sparring.gates", "name": g["gate"]})
        if g["gate"] in deltas:  # the comparison with --baseline: value before and the change
            props = ET.SubElement(case, "properties")
            for k in ("before", "now", "delta"):
                v = deltas[g["gate"]][k]
                ET.SubElement(props, "property", {"name": k, "value": "" if v is None else f"{v:.6g}"})
        if g["status"] != "pass":
            fail = ET.SubElement(case, "failure", {"message": g["message"], "type": g["status"]})
            fail.text = f"{g['gate']}: {g['message']} (steps: {', '.join(g['steps']) or 'none'})"
    for s in errors:
        case = ET.SubElement(suite, "testcase", {"classname": "sparring.steps", "name": s["id"]})
        ET.SubElement(case, "error", {"message": s["error"] or "error"}).text = s["error"]
    if data["status"] != "complete":
        ET.SubElement(suite, "system-out").text = "audit interrupted: results are partial; re-run with --resume"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


_ICON = {"pass": "✅", "fail": "❌", "not-evaluated": "⚠️"}


def render_markdown(data: dict[str, Any]) -> str:
    """A short summary for a pull request comment: verdict, gates, the most severe findings."""
    lines = [f"## sparring audit: {data['name']}", ""]
    status = "" if data["status"] == "complete" else " (interrupted: partial results)"
    lines.append(f"**Verdict: {data['verdict'].upper()}**{status}")
    lines.append("")
    failed = [s for s in data["steps"] if s["status"] == "error"]
    if failed:
        lines.append(f"**{len(failed)} step(s) could not run** ({sum(bool(s.get('fault')) for s in failed)} "
                     "model/endpoint fault(s)); re-run with `--resume` once fixed:")
        lines += [f"- `{s['id']}`: {s['error']}" for s in failed[:8]]
        lines.append("")
    if data["gates"]:
        lines += ["| gate | value | result |", "|---|---|---|"]
        for g in data["gates"]:
            v = "—" if g["value"] is None else f"{g['value']:.4f}"
            lines.append(f"| {g['gate']} | {v} | {_ICON[g['status']]} {g['status']} |")
        lines.append("")
    if data.get("baseline"):
        lines += markdown_lines(data["baseline"])
    shown = [f for f in data["findings"] if f["severity"] != "info"][:8]
    if shown:
        lines.append("### Findings")
        lines += [f"- **{f['severity']}** ({f['threat']}): {f['title']}" for f in shown]
        lines.append("")
    env = data["environment"]
    lines.append(f"<sub>{len(data['steps'])} steps · {env.get('seconds', 0):.0f} s · sparring {env.get('sparring')} · "
                 f"torch {env.get('torch')} · threat model {env.get('spec_hash', '')[:12]}</sub>")
    return "\n".join(lines) + "\n"
