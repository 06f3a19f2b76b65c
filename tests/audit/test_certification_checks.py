"""Certification inside an audit: bound propagation and randomized smoothing feed certified_accuracy gates."""

from __future__ import annotations

from pathlib import Path

from sparring.audit import parse_threat_model, run_audit
from sparring.audit.report import write_reports


def test_certified_gates_are_measured_by_bounds_and_smoothing(tmp_path: Path) -> None:
    tm = parse_threat_model({
        "system": {"model": "digits-mlp", "data": {"n": 24}},
        "certification": {"bounds": {"eps": [0.001]}, "smoothing": {"sigma": 0.25, "n0": 16, "n": 128,
                                                                     "radii": [0.0, 0.25]}},
        "gates": [
            {"metric": "certified_accuracy", "norm": "linf", "eps": 0.001, "min": 0.5},
            {"metric": "certified_accuracy", "norm": "linf", "eps": 0.004, "min": 0.0},  # added to the bounds steps
            {"metric": "certified_accuracy", "norm": "l2", "radius": 0.25, "max": 1.0},
        ],
    })
    audit = run_audit(tm, tmp_path)
    ids = [r.step_id for r in audit.results]
    assert "certify/bounds/linf/0.001" in ids and "certify/bounds/linf/0.004" in ids
    assert "certify/smoothing/l2/sigma=0.25" in ids
    g1, g2, g3 = audit.gates
    assert g1.status == "pass" and g1.value is not None and g1.value > 0.5
    assert g2.value is not None and g2.value <= g1.value  # a larger ball certifies no more points
    assert g3.status == "pass" and g3.value is not None
    html = write_reports(audit, tmp_path)["html"].read_text()
    assert "Bound propagation" in html and "Randomized smoothing" in html


def test_an_unmeasurable_certified_gate_fails_and_says_why(tmp_path: Path) -> None:
    tm = parse_threat_model({
        "system": {"model": "digits-cnn", "data": {"n": 8}},
        "gates": [{"metric": "certified_accuracy", "norm": "linf", "eps": 0.01, "min": 0.1}],
    })
    audit = run_audit(tm, tmp_path)
    gate = audit.gates[0]
    assert gate.status == "not-evaluated" and "MaxPool2d" in gate.message
    assert audit.verdict == "fail"
