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


def test_audit_refuses_a_broken_constraints_file_naming_the_feature(tmp_path: Path) -> None:
    """Issue 17: a wrong feature count or a bad value used to skip the check silently (exit 0, "NO GATES")."""
    import yaml

    good = json.loads(json.dumps(transactions_constraints().to_dict()))
    bad_value = json.loads(json.dumps(good))
    bad_value["features"][0]["low"] = "zero"
    short = json.loads(json.dumps(good))
    short["features"] = short["features"][:-1]
    for name, doc, words in (("value", bad_value, ("low", "zero")), ("count", short, ("features",))):
        (tmp_path / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")
        tm = {"schema_version": 1, "name": "fraud", "effort": "quick",
              "system": {"model": "fraud-mlp", "constraints": str(tmp_path / f"{name}.json"),
                         "data": {"source": "zoo", "split": "test", "n": 20}},
              "gates": [{"metric": "clean_accuracy", "min": 0.5}]}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(tm), encoding="utf-8")
        r = CliRunner().invoke(build_cli(), ["audit", str(tmp_path / f"{name}.yaml"), "--out",
                                             str(tmp_path / f"out-{name}")])
        assert r.exit_code == 3, r.output
        assert all(w in r.output for w in words), r.output
        assert not (tmp_path / f"out-{name}" / "report.json").exists()


def test_audit_refuses_a_typo_a_missing_file_and_a_feature_the_csv_does_not_have(tmp_path: Path) -> None:
    """The other broken constraints files of issue 17, through ``sparring audit``: a typo key, a missing file, and a
    renamed feature that no column of the audit's CSV has (was exit 0: the names were never compared)."""
    import csv

    import yaml

    from sparring import zoo

    good = json.loads(json.dumps(transactions_constraints().to_dict()))
    names = [f["name"] for f in good["features"]]
    typo = json.loads(json.dumps(good))
    typo["features"][0]["lwo"] = typo["features"][0].pop("low", 0.0)
    renamed = json.loads(json.dumps(good))
    j = names.index("failed_logins_7d")  # a feature no group, derived feature or inequality refers to
    renamed["features"][j]["name"] = "failed_logins_week"
    ds = zoo.data("fraud-mlp")
    with (tmp_path / "rows.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*names, "label"])
        for row, label in zip(ds.x_test[:30].numpy(), ds.y_test[:30].numpy(), strict=True):
            w.writerow([*(f"{v:.9g}" for v in row), int(label)])
    cases = (("typo", typo, "zoo", ("lwo",)), ("missing", None, "zoo", ("nowhere.json",)),
             ("renamed", renamed, str(tmp_path / "rows.csv"), ("failed_logins_week", "failed_logins_7d")),
             ("good", good, str(tmp_path / "rows.csv"), ()))
    for name, doc, source, words in cases:
        path = tmp_path / (f"{name}.json" if doc is not None else "nowhere.json")
        if doc is not None:
            path.write_text(json.dumps(doc), encoding="utf-8")
        tm = {"schema_version": 1, "name": "fraud", "effort": "quick",
              "system": {"model": "fraud-mlp", "constraints": str(path),
                         "data": {"source": source, "split": "test", "n": 20}},
              "gates": [{"metric": "clean_accuracy", "min": 0.5}]}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(tm), encoding="utf-8")
        r = CliRunner().invoke(build_cli(), ["audit", str(tmp_path / f"{name}.yaml"), "--out",
                                             str(tmp_path / f"out-{name}")])
        if name == "good":  # the same constraints under the CSV's own names are accepted
            assert r.exit_code in (0, 6), r.output
            continue
        assert r.exit_code == 3, (name, r.output)
        assert all(w in r.output for w in words), (name, r.output)


def test_tabular_rows_cut_by_the_query_budget_are_a_finding_not_robust(tmp_path: Path) -> None:
    from sparring import zoo
    from sparring.targets.base import QueryCounter

    transactions_constraints().save(tmp_path / "tx.json")
    tm = parse_threat_model({
        "schema_version": 1, "name": "fraud", "effort": "quick", "seed": 0,
        "system": {"model": "fraud-gbm", "constraints": str(tmp_path / "tx.json")},
        "attacker": {"knowledge": "black-box"},
    })
    gbm = zoo.load("fraud-gbm")
    ds = zoo.data("fraud-gbm")
    x, y = ds.x_test[:80], ds.y_test[:80]
    gbm.counter = QueryCounter(budget=80 + 80 + 400)  # the clean baseline, the rows to attack, then 400 queries
    audit = run_audit(tm, tmp_path / "out", target=gbm, data=(x, y))
    search = {r.step_id: r for r in audit.results}["tabular/search/constrained"]
    assert search.status == "done", search.error
    k = sum(search.per_point["unknown"])
    assert k > 0 and search.value("tabular_unknown_rate") == k / len(search.per_point["unknown"])
    (f,) = [f for f in audit.findings if f.id == "budget:tabular/search/constrained"]
    assert f.evidence["unknown"] == k and "unknown" in f.title
