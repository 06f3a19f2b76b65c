"""The poisoning audit check: when it plans, what its findings and report section say."""

from __future__ import annotations

from pathlib import Path

import pytest

import sparring.audit.checks  # noqa: F401  (registers the built-in checks)
from sparring.audit import CHECKS, parse_threat_model, run_audit
from sparring.audit.registry import PlanContext, Skip, StepResult
from sparring.audit.report import write_reports
from sparring.targets.torch import TorchTarget
from tests import poison_helpers as H
from tests.audit.conftest import SMALL


def test_poisoning_check_plans_only_with_a_poisoning_share_and_a_zoo_model() -> None:
    check = CHECKS["poisoning-scan"]
    target = TorchTarget(H.small_cnn(), H.digits().spec)  # planning needs no trained weights
    none = check.plan(PlanContext(parse_threat_model(SMALL), target))
    assert isinstance(none, Skip) and "poisoning_share" in none.reason
    tm = parse_threat_model({**SMALL, "attacker": {**SMALL["attacker"], "poisoning_share": 0.05}})
    steps = check.plan(PlanContext(tm, target))
    assert isinstance(steps, list) and [s.id for s in steps] == ["poisoning/data-scan", "poisoning/neural-cleanse"]
    assert steps[1].params["steps"] == 100  # effort: quick
    other = parse_threat_model({**SMALL, "system": {"model": "model.onnx", "spec": "spec.json"},
                                "attacker": {"poisoning_share": 0.05}})
    skip = check.plan(PlanContext(other, target))
    assert isinstance(skip, Skip) and "zoo models" in skip.reason


def _results() -> list[StepResult]:
    nc = StepResult(step_id="poisoning/neural-cleanse", check="poisoning-scan", threat="poisoning", params={},
                    examples={"flagged": [0], "mask_l1": [8.0] + [60.0] * 9,
                              "anomaly_index": [3.2] + [0.0] * 9, "layout": "chw",
                              "triggers": {"0": [[[0.0, 1.0], [1.0, 0.0]]], "1": [[[0.2, 0.2], [0.2, 0.2]]]}})
    scan = StepResult(step_id="poisoning/data-scan", check="poisoning-scan", threat="poisoning", params={},
                      examples={"classes": [[0, 202, 0.95, 0.43, 0.33, "spectral, clustering"]],
                                "spectral_flagged": [0], "ac_flagged": [0]})
    return [scan, nc]


def test_poisoning_findings_and_section_come_from_the_results_alone() -> None:
    check = CHECKS["poisoning-scan"]
    found = check.findings(None, _results())  # type: ignore[attr-defined]
    assert {f.id for f in found} == {"poisoning:backdoor", "poisoning:data"}
    assert next(f for f in found if f.id == "poisoning:backdoor").severity == "high"
    sec = check.section(_results())  # type: ignore[attr-defined]
    assert sec.title == "Poisoning and backdoors" and len(sec.tables) == 2
    assert sec.figures[0].png.startswith("data:image/png;base64,")
    assert check.section([]) is None  # type: ignore[attr-defined]


def test_poisoning_section_shows_labels_that_never_converged() -> None:
    scan, nc = _results()
    nc.examples["anomaly_index"] = [3.2, None] + [0.0] * 8  # label 1: no trigger reached the success target
    sec = CHECKS["poisoning-scan"].section([scan, nc])  # type: ignore[attr-defined]
    assert sec.tables[1].rows[1] == [1, 60.0, "not converged"] and sec.tables[1].rows[0][2] == 3.2
    assert sec.figures[0].png.startswith("data:image/png;base64,")  # label 1's figure title reads "n/c"


@pytest.mark.slow  # trains the zoo digits-cnn and runs Neural Cleanse on it (≈ 1-3 min on a busy 2-core box)
def test_audit_with_a_poisoning_share_reports_the_scans(tmp_path: Path) -> None:
    tm = parse_threat_model({**SMALL, "attacker": {"knowledge": "white-box", "poisoning_share": 0.05},
                             "certification": {}})
    audit = run_audit(tm, tmp_path / "out")
    paths = write_reports(audit, tmp_path / "out", ("html",))
    html = paths["html"].read_text(encoding="utf-8")
    assert "Poisoning and backdoors" in html and 'alt="reverse-engineered triggers"' in html
    assert not any(f.id == "poisoning:backdoor" for f in audit.findings)  # the zoo model is clean
