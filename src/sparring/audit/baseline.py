"""Audits over time: compare an audit with an earlier one's ``report.json`` (``sparring audit --baseline``).

An audit is a measurement; a defence only stays effective if the measurement is repeated and compared. Regression
testing of robustness follows the practice of tracking robust accuracy across model versions (Croce et al., 2021,
*RobustBench*): the same threat model, the same data, the numbers side by side.

* Gates are matched by what they measure, :meth:`~sparring.audit.threat.Gate.key` (metric and parameters, not the
  threshold), so a gate whose threshold changed still compares.
* Steps are matched by id (``evasion/pgd-linf-0.1`` ...), their measurements by metric and parameters.
* Each match gives ``now``, ``before`` and ``delta = now - before`` (``None`` when either side was unmeasured).
* A *regression gate* (``max_drop`` in the threat model's ``gates:``) passes when the metric is at least its
  baseline value minus ``max_drop``; a regression gate with no baseline value is unmeasured and fails.

    base = load_baseline("old/report.json")
    audit = run_audit(tm, "new/")
    apply_baseline(audit, base)         # re-evaluates the gates, sets audit.baseline (the JSON `baseline` object)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparring.audit.findings import evaluate_gates, find
from sparring.audit.runner import Audit
from sparring.audit.threat import Gate
from sparring.errors import BaselineError

__all__ = ["Baseline", "apply_baseline", "compare", "load_baseline"]

_SCHEMA = 1  # the report.json schema version this module reads (sparring.audit.report.REPORT_SCHEMA_VERSION)


@dataclass(frozen=True)
class Baseline:
    """What an earlier audit measured: gate values by :meth:`Gate.key`, step measurements by step id."""

    path: str
    name: str
    verdict: str
    model: str | None
    spec_hash: str | None
    started: str | None
    gates: dict[str, float | None] = field(default_factory=dict)
    steps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def gate_values(self) -> dict[str, float]:
        """The measured gate values (unmeasured gates left out): what regression gates compare with."""
        return {k: v for k, v in self.gates.items() if v is not None}


def load_baseline(path: str | Path) -> Baseline:
    """Read an earlier audit's ``report.json`` (or the ``--out`` folder holding one).

    Raises :class:`~sparring.errors.BaselineError` naming the file when it is missing, not JSON, or not a sparring
    audit report (of a schema this sparring reads).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise BaselineError(f"no such baseline report: {str(p)!r}. Pass the report.json an earlier "
                            "`sparring audit --out DIR` wrote (DIR/report.json).")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(f"baseline {str(p)!r} is not JSON ({exc}); pass the report.json of an earlier "
                            "`sparring audit`.") from None
    missing = [k for k in ("schema_version", "gates", "steps", "threat_model") if not isinstance(data, dict)
               or k not in data]
    if missing:
        raise BaselineError(f"baseline {str(p)!r} is not a sparring audit report (no {', '.join(missing)}); pass "
                            "the report.json an earlier `sparring audit` wrote, not summary.md or another file.")
    if data["schema_version"] != _SCHEMA:
        raise BaselineError(f"baseline {str(p)!r} has report schema_version {data['schema_version']!r}; this "
                            f"sparring reads {_SCHEMA}. Re-run the earlier audit with this sparring.")
    if not (isinstance(data["gates"], list) and isinstance(data["steps"], list)
            and all(isinstance(x, dict) for x in data["gates"] + data["steps"])
            and isinstance(data["threat_model"], dict)):
        raise BaselineError(f"baseline {str(p)!r}: 'gates' and 'steps' must be lists of objects and 'threat_model' "
                            "an object; the file is damaged. Re-run the earlier audit.")
    gates: dict[str, float | None] = {}
    for key, g in zip(_gate_keys(data), data["gates"], strict=True):
        value = _number(g.get("value"))
        if gates.get(key) is None:  # two gates on one metric (min and max_drop): the first measured value
            gates[key] = value
    steps = {str(s["id"]): [m for m in s.get("measurements", []) if _number(m.get("value")) is not None]
             for s in data["steps"] if "id" in s and s.get("status") == "done"}
    tm, env = data["threat_model"], data.get("environment") or {}
    return Baseline(path=str(p), name=str(data.get("name", "")), verdict=str(data.get("verdict", "")),
                    model=(tm.get("system") or {}).get("model"), spec_hash=env.get("spec_hash"),
                    started=env.get("started"), gates=gates, steps=steps)


def _gate_keys(data: dict[str, Any]) -> list[str]:
    """The key of each of the report's gates: from its threat model's gate (same order), else from its name."""
    declared = data["threat_model"].get("gates") or []
    if len(declared) == len(data["gates"]) and all(isinstance(d, dict) for d in declared):
        return [_key(d) for d in declared]
    return [re.sub(r" (>=|<=|drop <=) \S+( vs baseline)?$", "", str(g.get("gate", ""))) for g in data["gates"]]


def _key(d: dict[str, Any]) -> str:
    fields: dict[str, Any] = {k: d.get(k) for k in Gate.model_fields}
    return Gate.model_construct(**fields).key()


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _delta(now: float | None, before: float | None) -> float | None:
    return None if now is None or before is None else now - before


def _norm(params: Any) -> Any:
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def compare(audit: Audit, baseline: Baseline) -> dict[str, Any]:
    """The JSON ``baseline`` object: per gate and per step measurement, ``now``, ``before`` and ``delta``."""
    gates = []
    for g, r in zip(audit.threat_model.gates, audit.gates, strict=True):
        before = baseline.gates.get(g.key())
        gates.append({"gate": r.gate, "key": g.key(), "now": r.value, "before": before,
                      "delta": _delta(r.value, before), "status": r.status, "in_baseline": g.key() in baseline.gates})
    steps: list[dict[str, Any]] = []
    now_ids = set()
    for res in audit.results:
        if res.status != "done":
            continue
        now_ids.add(res.step_id)
        old = baseline.steps.get(res.step_id)
        if old is None:
            continue
        for m in res.measurements:
            params = _norm(m.params)
            prev = next((o for o in old if o.get("metric") == m.metric and _norm(o.get("params", {})) == params),
                        None)
            now, before = _number(m.value), None if prev is None else _number(prev["value"])
            if now is None or before is None:
                continue
            steps.append({"id": res.step_id, "check": res.check, "metric": m.metric, "params": params, "now": now,
                          "before": before, "delta": now - before})
    return {
        "path": baseline.path, "name": baseline.name, "verdict": baseline.verdict, "started": baseline.started,
        "model": baseline.model, "model_now": audit.threat_model.system.model,
        "same_threat_model": baseline.spec_hash == audit.environment.get("spec_hash"),
        "gates": gates, "steps": steps,
        "new_steps": sorted(now_ids - set(baseline.steps)), "missing_steps": sorted(set(baseline.steps) - now_ids),
        "gates_only_before": sorted(set(baseline.gates) - {g.key() for g in audit.threat_model.gates}),
    }


def apply_baseline(audit: Audit, baseline: Baseline) -> None:
    """Compare ``audit`` with ``baseline``: re-evaluate its gates (regression gates against the baseline's values),
    its findings, and set ``audit.baseline`` to :func:`compare`'s object (every report format shows it)."""
    audit.gates = evaluate_gates(audit.threat_model, audit.results, audit.plan.skipped, baseline.gate_values())
    audit.findings = find(audit.threat_model, audit.results, audit.gates)
    audit.baseline = compare(audit, baseline)


def _fmt(v: float | None, sign: bool = False) -> str:
    return "—" if v is None else (f"{v:+.4f}" if sign else f"{v:.4f}")


def largest_changes(b: dict[str, Any], k: int = 12) -> list[dict[str, Any]]:
    """The ``k`` step measurements that changed most (largest drops first), for the summaries."""
    changed = [s for s in b["steps"] if abs(s["delta"]) > 1e-12]
    return sorted(changed, key=lambda s: (s["delta"], s["id"]))[:k]


def markdown_lines(b: dict[str, Any]) -> list[str]:
    """The Markdown section of a comparison: gate deltas, then the step measurements that changed most."""
    lines = [f"### Compared with baseline `{b['path']}`", "",
             f"Before: verdict {b['verdict'].upper() or '?'}, model `{b['model']}`"
             + ("" if b["same_threat_model"] else " (a different threat model)") + f"; now: model `{b['model_now']}`.",
             ""]
    if b["gates"]:
        lines += ["| gate | before | now | delta |", "|---|---|---|---|"]
        lines += [f"| {g['gate']} | {_fmt(g['before'])} | {_fmt(g['now'])} | {_fmt(g['delta'], True)} |"
                  for g in b["gates"]]
        lines.append("")
    top = largest_changes(b)
    n_same = len(b["steps"]) - len([s for s in b["steps"] if abs(s["delta"]) > 1e-12])
    if top:
        lines += ["| step | metric | before | now | delta |", "|---|---|---|---|---|"]
        lines += [f"| `{s['id']}` | {s['metric']}{_params(s['params'])} | {_fmt(s['before'])} | {_fmt(s['now'])} | "
                  f"{_fmt(s['delta'], True)} |" for s in top]
        lines.append("")
    lines.append(f"{n_same} of {len(b['steps'])} step measurements unchanged"
                 + (f"; new steps: {', '.join(b['new_steps'])}" if b["new_steps"] else "")
                 + (f"; steps only in the baseline: {', '.join(b['missing_steps'])}" if b["missing_steps"] else "")
                 + ".")
    lines.append("")
    return lines


def _params(p: dict[str, Any]) -> str:
    shown = {k: v for k, v in p.items() if isinstance(v, int | float | str) and not isinstance(v, bool)}
    return f" ({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else ""
