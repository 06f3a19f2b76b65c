"""Drift in the audit: a threat model's monitoring data (reference vs current files) are tested, gated on, and
reported in HTML, JSON and JUnit like every other check. Real data: the Wisconsin breast-cancer rows the
breast-cancer-mlp zoo model was trained on (reference) against its held-out rows (no drift) and against held-out
malignant tumours only, with the benign class knocked out (a real shift in p(x))."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from sparring.audit import parse_threat_model, run_audit
from sparring.audit.report import write_reports
from sparring.cli import EXIT_GATE, EXIT_OK, build_cli
from sparring.data import load_breast_cancer
from sparring.errors import ThreatModelError

TM: dict[str, Any] = {
    "schema_version": 1,
    "name": "drift audit",
    "system": {"model": "breast-cancer-mlp", "data": {"source": "zoo", "n": 16}},
    "attacker": {"knowledge": "black-box"},
    "effort": "quick",
    "seed": 0,
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """reference.csv: the 427 training rows with their label column (left out of the features); held.npz: the 143
    held-out rows; malignant.npz: the held-out malignant tumours only (benign knocked out); short.npz: 29 columns."""
    ds = load_breast_cancer()
    xtr, ytr = ds.x_train.numpy().astype(np.float64), ds.y_train.numpy()
    xte, yte = ds.x_test.numpy().astype(np.float64), ds.y_test.numpy()
    d = tmp_path_factory.mktemp("monitoring")
    out = {"reference": d / "reference.csv", "held": d / "held.npz", "malignant": d / "malignant.npz",
           "short": d / "short.npz"}
    with out["reference"].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([f"f{j}" for j in range(30)] + ["label"])
        w.writerows([[repr(float(v)) for v in row] + [int(lab)] for row, lab in zip(xtr, ytr, strict=True)])
    np.savez(out["held"], x=xte)
    np.savez(out["malignant"], x=xte[yte == 0])
    np.savez(out["short"], x=xte[:, :29])
    return out


def _tm(files: dict[str, Path], current: str, gates: list[dict[str, Any]], **mon: Any) -> Any:
    monitoring = {"reference": str(files["reference"]), "current": str(files[current]), "tests": ["mmd", "ks", "bbsd"],
                  "n_permutations": 200, **mon}
    return parse_threat_model({**TM, "monitoring": monitoring, "gates": gates})


GATES = [{"metric": "drift_p_value", "min": 0.01}, {"metric": "drift_detected", "max": 0}]


def test_drift_gates_pass_on_held_out_rows_and_fail_on_a_class_knockout(files: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    quiet = run_audit(_tm(files, "held", GATES), tmp_path / "quiet")
    drift_steps = [r for r in quiet.results if r.check == "drift"]
    assert [r.step_id for r in drift_steps] == ["drift/mmd", "drift/ks", "drift/bbsd"]
    assert all(r.status == "done" for r in drift_steps)
    assert [g.status for g in quiet.gates] == ["pass", "pass"], [g.message for g in quiet.gates]
    ps = {r.params["test"]: r.value("drift_p_value") for r in drift_steps}
    assert all(p is not None and p > 0.05 for p in ps.values()), ps
    assert quiet.gates[0].value == pytest.approx(min(1.0, 3 * min(ps.values())))  # type: ignore[type-var]
    n_ref, n_cur = len(load_breast_cancer().y_train), len(load_breast_cancer().y_test)
    assert drift_steps[0].examples["result"]["n_reference"] == n_ref
    assert drift_steps[0].examples["n_features"] == 30  # the CSV's label column is not a feature
    assert drift_steps[2].cost["queries"] == n_ref + n_cur  # BBSD queried the model on both samples
    assert any(f.id == "drift:none" and f.severity == "info" for f in quiet.findings)

    shifted = run_audit(_tm(files, "malignant", GATES), tmp_path / "shifted")
    assert [g.status for g in shifted.gates] == ["fail", "fail"]
    assert shifted.gates[0].value is not None and shifted.gates[0].value < 1e-3
    assert shifted.gates[1].value == 1.0
    assert shifted.verdict == "fail"
    found = {f.id: f for f in shifted.findings}
    assert "drift:detected" in found and found["drift:detected"].threat == "drift"
    assert found["gate:drift_p_value >= 0.01"].recommendation.startswith("Find what changed")
    ks = next(r for r in shifted.results if r.step_id == "drift/ks")
    assert ks.examples["features"][0]["drift"]  # the most shifted feature is named, with its adjusted p-value


def test_a_gate_on_one_test_reads_that_test_alone(files: dict[str, Path], tmp_path: Path) -> None:
    gates = [{"metric": "drift_p_value", "method": "ks", "min": 0.01},
             {"metric": "drift_p_value", "method": "lsdd", "min": 0.01}]
    audit = run_audit(_tm(files, "held", gates, tests=["ks"]), tmp_path / "one")
    ks = next(r for r in audit.results if r.step_id == "drift/ks")
    assert audit.gates[0].status == "pass" and audit.gates[0].value == ks.value("drift_p_value")
    assert audit.gates[0].gate == "drift_p_value (method=ks) >= 0.01"
    assert audit.gates[1].status == "not-evaluated"  # lsdd was not among monitoring.tests: unmeasured, fails


def test_bad_monitoring_data_leave_the_gate_unmeasured_with_the_reason(files: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    audit = run_audit(_tm(files, "short", GATES[:1], tests=["mmd"]), tmp_path / "bad")
    step = next(r for r in audit.results if r.step_id == "drift/mmd")
    assert step.status == "error" and step.error_type == "InputSpecError" and "30 features" in str(step.error)
    assert audit.gates[0].status == "not-evaluated" and "drift/mmd could not run" in audit.gates[0].message
    missing = {**_tm(files, "held", GATES[:1]).to_dict()}
    missing["monitoring"]["current"] = str(tmp_path / "nope.npz")
    audit = run_audit(parse_threat_model(missing), tmp_path / "missing")
    assert {r.error_type for r in audit.results if r.check == "drift"} == {"DataLoadError"}
    assert audit.verdict == "fail"


def test_threat_model_refuses_drift_gates_without_monitoring_and_unknown_tests() -> None:
    with pytest.raises(ThreatModelError, match="monitoring"):
        parse_threat_model({**TM, "gates": GATES})
    with pytest.raises(ThreatModelError, match=r"monitoring\.tests"):
        parse_threat_model({**TM, "monitoring": {"reference": "a.npz", "current": "b.npz", "tests": ["t-test"]}})
    with pytest.raises(ThreatModelError, match="method"):
        parse_threat_model({**TM, "monitoring": {"reference": "a.npz", "current": "b.npz"},
                            "gates": [{"metric": "drift_detected", "method": "normalize", "max": 0}]})
    tm = parse_threat_model({**TM, "monitoring": {"reference": "a.npz", "current": "b.npz"}})
    assert tm.monitoring is not None and tm.monitoring.tests == ["mmd", "ks"] and tm.monitoring.alpha == 0.05


def test_cli_audit_gates_on_drift_in_json_junit_and_html(files: dict[str, Path], tmp_path: Path) -> None:
    import yaml

    for current, code in (("held", EXIT_OK), ("malignant", EXIT_GATE)):
        tm = _tm(files, current, GATES, tests=["mmd", "ks"], window=40).to_dict()
        path = tmp_path / f"{current}.yaml"
        path.write_text(yaml.safe_dump(tm), encoding="utf-8")
        out = tmp_path / current
        r = CliRunner().invoke(build_cli(), ["audit", str(path), "--out", str(out), "--no-progress",
                                             "--format", "json,junit,html"])
        assert r.exit_code == code, r.output
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        assert [g["metric"] for g in report["gates"]] == ["drift_p_value", "drift_detected"]
        assert {s["id"] for s in report["steps"] if s["threat"] == "drift"} == {"drift/mmd", "drift/ks"}
        cases = {c.get("name"): c for c in ET.parse(out / "junit.xml").getroot().iter("testcase")}
        assert "drift_p_value >= 0.01" in cases and "drift_detected <= 0.0" in cases
        failed = cases["drift_p_value >= 0.01"].find("failure") is not None
        assert failed == (code == EXIT_GATE)
        html = (out / "report.html").read_text(encoding="utf-8")
        assert "Data drift (monitoring)" in html and "p-value per window" in html
        assert ("drift." in html) == (code == EXIT_GATE)


def test_reports_written_from_the_library_carry_the_drift_section(files: dict[str, Path], tmp_path: Path) -> None:
    audit = run_audit(_tm(files, "malignant", GATES[:1], tests=["ks"]), tmp_path / "lib")
    paths = write_reports(audit, tmp_path / "lib", ("html", "markdown"))
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "drift" in md.lower() and "FAIL" in md.upper()
