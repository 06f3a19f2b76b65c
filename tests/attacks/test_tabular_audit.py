"""The tabular audit check and the attack-tabular command: constrained beside unconstrained, violations shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparring.audit import parse_threat_model, run_audit
from sparring.audit.report import write_reports
from sparring.cli import build_cli
from sparring.data.transactions import transactions_constraints

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: see conftest


def test_audit_runs_constrained_and_unconstrained_side_by_side(tmp_path: Path) -> None:
    transactions_constraints().save(tmp_path / "tx.json")
    tm = parse_threat_model({
        "schema_version": 1, "name": "fraud", "effort": "quick", "seed": 0,
        "system": {"model": "fraud-mlp", "constraints": str(tmp_path / "tx.json"),
                   "data": {"source": "zoo", "split": "test", "n": 160}},
        "attacker": {"knowledge": "white-box"},
    })
    audit = run_audit(tm, tmp_path / "out")
    res = {r.step_id: r for r in audit.results if r.check == "tabular-constrained"}
    assert set(res) == {"tabular/cpgd/constrained", "tabular/cpgd/unconstrained", "tabular/search/constrained",
                        "tabular/search/unconstrained"}
    for attack in ("cpgd", "search"):
        con, unc = res[f"tabular/{attack}/constrained"], res[f"tabular/{attack}/unconstrained"]
        assert con.value("feasible_rate") == 1.0 and (con.value("tabular_evasion_rate") or 0) >= 0.7
        feasible = unc.value("feasible_rate")
        assert feasible is not None and feasible < 0.5 and unc.examples["violations"]
    assert any(f.threat == "tabular" for f in audit.findings)
    paths = write_reports(audit, tmp_path / "out", ("html",))
    html = paths["html"].read_text()
    assert "Tabular evasion within feature constraints" in html and "no (baseline)" in html


def test_audit_plans_by_constraints_and_knowledge(tmp_path: Path) -> None:
    from sparring import zoo
    from sparring.audit.runner import plan_audit

    tm = parse_threat_model({"schema_version": 1, "system": {"model": "fraud-gbm", "data": {"n": 20}},
                             "attacker": {"knowledge": "black-box"}})
    gbm = zoo.load("fraud-gbm")
    plan = plan_audit(tm, gbm)
    assert any(s.check == "tabular-constrained" and "system.constraints" in s.reason for s in plan.skipped)
    transactions_constraints().save(tmp_path / "tx.json")
    for knowledge, milp in (("white-box", True), ("black-box", False)):
        tm = parse_threat_model({"schema_version": 1, "attacker": {"knowledge": knowledge},
                                 "system": {"model": "fraud-gbm", "constraints": str(tmp_path / "tx.json")}})
        ids = {s.id for s in plan_audit(tm, gbm).steps if s.check == "tabular-constrained"}
        assert {"tabular/search/constrained", "tabular/search/unconstrained"} <= ids
        assert ("tabular/tree-milp/constrained" in ids) == milp and "tabular/cpgd/constrained" not in ids


def test_cli_attack_tabular_shows_the_baseline_violations() -> None:
    r = CliRunner().invoke(build_cli(), ["attack-tabular", "search", "-m", "fraud-gbm", "--n", "12", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    con, unc = out["results"]
    assert con["constrained"] and con["feasible_rows"] == 1.0 and con["evasion_rate"] >= 0.9
    assert not unc["constrained"] and unc["feasible_rows"] < 0.5 and unc["violations"]
    bad = CliRunner().invoke(build_cli(), ["attack-tabular", "cpgd", "-m", "digits-cnn"])
    assert bad.exit_code == 3 and "--constraints" in bad.output
