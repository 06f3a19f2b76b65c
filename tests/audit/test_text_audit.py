"""Auditing a text model: the planner picks the text checks, skips the tensor ones with reasons, reports evasions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sparring.audit import parse_threat_model, run_audit
from sparring.audit.report import write_reports
from sparring.audit.runner import load_system, plan_audit
from sparring.audit.worstcase import text_union
from sparring.cli import EXIT_GATE, EXIT_OK, build_cli
from sparring.data.text import load_sms_spam
from sparring.errors import DataLoadError, InputSpecError, ThreatModelError
from sparring.targets.text import TextTarget

TEXT_TM: dict[str, Any] = {
    "schema_version": 1,
    "name": "sms spam filter",
    "system": {"model": "spam-tfidf-logreg", "data": {"source": "zoo", "split": "test", "n": 40}},
    "attacker": {"knowledge": "black-box", "query_budget": 300},
    "effort": "quick",
    "gates": [{"metric": "clean_accuracy", "min": 0.9}],
    "seed": 0,
}
TEXT_GATES = [{"metric": "clean_accuracy", "min": 0.9},
              {"metric": "text_evasion_rate", "max_chars": 12, "max": 0.2},  # the filter as it is: fails
              {"metric": "text_evasion_rate", "max_chars": 3, "method": "normalize", "max": 0.2}]  # passes


def test_load_system_gives_a_text_target_and_messages() -> None:
    target, attacker, x, y = load_system(parse_threat_model(TEXT_TM))
    ds = load_sms_spam()
    assert isinstance(target, TextTarget) and attacker is target
    assert x == ds.x_test[:40] and y.tolist() == ds.y_test[:40].tolist()


def test_plan_has_baseline_and_text_evasion_and_skips_tensor_checks_with_reasons() -> None:
    tm = parse_threat_model(TEXT_TM)
    target = load_system(tm)[0]
    plan = plan_audit(tm, target)
    checks = {s.check for s in plan.steps}
    assert checks == {"clean-accuracy", "text-evasion"}
    text_steps = [s for s in plan.steps if s.check == "text-evasion"]
    assert len(text_steps) == 3 * 2 * 2  # {bad-characters, typos, reorder} x {none, normalize} x budgets {3, 12}
    assert all(s.reason and s.params["max_queries"] == 300 for s in text_steps)
    skipped = {s.check: s.reason for s in plan.skipped}
    for name in ("evasion-gradient", "evasion-scores", "certify-bounds", "certify-smoothing", "tabular-constrained"):
        assert "text model" in skipped[name], (name, skipped[name])


def test_text_audit_reports_section_findings_and_measurements(tmp_path: Path) -> None:
    tm = parse_threat_model({**TEXT_TM, "gates": TEXT_GATES})
    audit = run_audit(tm, tmp_path / "out")
    assert audit.status == "complete" and all(r.status == "done" for r in audit.results), \
        [r.error for r in audit.results]
    rates = {(r.params["attack"], r.params["defence"], r.params["max_chars"]): r.value("text_evasion_rate")
             for r in audit.results if r.check == "text-evasion"}
    assert rates[("bad-characters", "none", 12)] >= 0.5  # homoglyphs get through the unprotected filter ...
    assert rates[("bad-characters", "normalize", 12)] <= 0.2  # ... but not through normalisation
    assert rates[("bad-characters", "none", 3)] <= rates[("bad-characters", "none", 12)]
    assert rates[("reorder", "none", 12)] >= rates[("reorder", "normalize", 12)]  # display order undoes it
    assert [g.status for g in audit.gates] == ["pass", "fail", "pass"] and audit.verdict == "fail"
    worst = max(v for (a, d, b), v in rates.items() if d == "none" and b == 12)
    union = text_union(audit.results, 12, "none")  # per message: evaded by at least one attack (issue 22.2)
    assert union is not None and audit.gates[1].value == pytest.approx(union.rate) and union.rate >= worst - 1e-6
    assert any(f.id.startswith("gate:text_evasion_rate") and "normalize" in f.recommendation for f in audit.findings)
    finding = next(f for f in audit.findings if f.id == "text:bad-characters:none")
    assert "homoglyph" in finding.title and "normalize" in finding.recommendation
    paths = write_reports(audit, tmp_path / "out")  # all four formats
    assert "clean_accuracy" in paths["junit"].read_text(encoding="utf-8")  # JUnit lists the gates
    assert "homoglyph" in paths["markdown"].read_text(encoding="utf-8")
    html = paths["html"].read_text(encoding="utf-8")
    assert "Text evasion: homoglyphs, invisible characters, reordering and typos" in html
    assert "success rate vs edit budget" in html and "[[" in html and "&lt;U+" in html  # escaped, marked edits
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    metrics = {m["metric"] for s in data["steps"] for m in s["measurements"]}
    assert {"clean_accuracy", "text_evasion_rate", "mean_edited_chars"} <= metrics


ROBUST_GATE = {"metric": "robust_accuracy", "norm": "linf", "eps": 0.1, "min": 0.5}  # not measurable on text


@pytest.mark.parametrize(("gate", "code"), [({"metric": "clean_accuracy", "min": 0.8}, EXIT_OK),
                                            (ROBUST_GATE, EXIT_GATE)])
def test_cli_audits_a_text_model(tmp_path: Path, gate: dict[str, Any], code: int) -> None:
    tm_path = tmp_path / "text.yaml"
    tm = {**TEXT_TM, "system": {**TEXT_TM["system"], "data": {"source": "zoo", "n": 12}}, "gates": [gate],
          "attacker": {"knowledge": "black-box", "query_budget": 40}}
    tm_path.write_text(yaml.safe_dump(tm), encoding="utf-8")
    r = CliRunner().invoke(build_cli(), ["audit", str(tm_path), "--out", str(tmp_path / "o"), "--format", "json",
                                         "--no-progress"])
    assert r.exit_code == code, r.output
    assert (tmp_path / "o" / "report.json").exists()


def test_text_gate_needs_a_budget_and_a_known_defence() -> None:
    with pytest.raises(ThreatModelError, match="max_chars"):
        parse_threat_model({**TEXT_TM, "gates": [{"metric": "text_evasion_rate", "max": 0.1}]})
    with pytest.raises(ThreatModelError, match="none or normalize"):
        parse_threat_model({**TEXT_TM, "gates": [{"metric": "text_evasion_rate", "max_chars": 3, "max": 0.1,
                                                 "method": "jpeg"}]})
    tm = parse_threat_model({**TEXT_TM, "gates": [{"metric": "text_evasion_rate", "max_chars": 5, "max": 0.1}]})
    plan = plan_audit(tm, load_system(tm)[0])
    assert {s.params["max_chars"] for s in plan.steps if s.check == "text-evasion"} == {3, 5, 12}


def test_text_system_errors_are_typed() -> None:
    bad_source = {**TEXT_TM, "system": {**TEXT_TM["system"], "data": {"source": "messages.csv", "n": 5}}}
    with pytest.raises(DataLoadError, match=r"messages\.csv"):  # a text system reads its own messages' file
        load_system(parse_threat_model(bad_source))
    tm = parse_threat_model(TEXT_TM)
    target = load_system(tm)[0]
    with pytest.raises(InputSpecError, match=r"texts\[1\]"):
        load_system(tm, target, (["win cash now", ""], [1, 0]))
