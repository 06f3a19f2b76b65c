"""The audit evaluates a layered defence declared in the threat model's ``defence:`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sparring import zoo
from sparring.audit import parse_threat_model, plan_audit, run_audit
from sparring.audit.checks.layered import LayeredDefenceCheck, _detector, _preprocess
from sparring.audit.registry import RunContext, Step, StepResult
from sparring.audit.report import write_reports
from sparring.defenses.preprocess import BitDepth, JpegCompression, MedianSmoothing, SpatialSmoothing, TotalVariation
from sparring.errors import ThreatModelError
from sparring.targets.torch import TorchTarget
from tests.audit.conftest import SMALL

DEFENCE: dict[str, Any] = {"preprocess": [{"name": "bit-depth", "bits": 3}],
                           "detector": {"kind": "mahalanobis", "fpr": 0.05}}
LAYERED: dict[str, Any] = {
    **SMALL, "certification": {}, "gates": [],
    "attacker": {"knowledge": "white-box", "evasion": [{"norm": "linf", "eps": [0.1]}]},
    "defence": DEFENCE,
}


def _skip_reason(tm_data: dict[str, Any]) -> str:
    plan = plan_audit(parse_threat_model(tm_data), zoo.load("digits-cnn"))
    assert not [s for s in plan.steps if s.check == "layered-defence"]
    (skip,) = [s for s in plan.skipped if s.check == "layered-defence"]
    return skip.reason


def test_plan_has_one_layered_step_per_linf_budget_with_its_reason() -> None:
    tm = parse_threat_model({**LAYERED, "attacker": {"evasion": [{"norm": "linf", "eps": [0.05, 0.1]},
                                                                 {"norm": "l2", "eps": [1.0]}]}})
    steps = [s for s in plan_audit(tm, zoo.load("digits-cnn")).steps if s.check == "layered-defence"]
    assert [s.id for s in steps] == ["layered/linf/0.05", "layered/linf/0.1"]
    assert "bit-depth + mahalanobis detector" in steps[0].reason
    assert "train split" in steps[0].reason and "after the 24 audited ones" in steps[0].reason
    assert steps[1].params["detector"] == {"kind": "mahalanobis", "fpr": 0.05} and steps[1].params["steps"] == 10


def test_audit_reports_layered_outcomes_section_and_findings(tmp_path: Path) -> None:
    tm = parse_threat_model({**LAYERED, "defence": {**DEFENCE, "robust_model": "digits-cnn"}})
    audit = run_audit(tm, tmp_path / "out")
    (res,) = [r for r in audit.results if r.check == "layered-defence"]
    assert res.status == "done", res.error
    rows = {r["name"]: r for r in res.examples["layered"]["rows"]}
    assert list(rows) == ["undefended", "model", "model + preprocessing", "model + detector", "all layers"]
    for row in rows.values():
        for rates in (row["clean"], row["attacked"]):
            assert sum(rates.values()) == pytest.approx(1.0)
    assert rows["model"]["attacked"]["correct"] < rows["model"]["clean"]["correct"] - 0.3
    assert rows["all layers"]["attacked"]["correct"] < rows["all layers"]["clean"]["correct"]
    assert rows["model + detector"]["clean"]["rejected"] <= 0.25  # calibrated at 5% on held-out data
    assert res.value("layered_attacked_wrong") is not None
    assert res.cost["queries"] > 0
    html = write_reports(audit, tmp_path / "out", ("html",))["html"].read_text(encoding="utf-8")
    assert "Layered defence" in html and 'alt="outcome shares per configuration"' in html
    assert "attacked rejected" in html
    assert any(f.id.startswith("layered:") for f in audit.findings)


def _result(model: dict[str, float], det_clean: float, det_attacked: dict[str, float]) -> StepResult:
    rows = [{"name": "model", "clean": {"correct": 1.0, "wrong": 0.0, "rejected": 0.0}, "attacked": model},
            {"name": "model + detector", "clean": {"correct": 1 - det_clean, "wrong": 0.0, "rejected": det_clean},
             "attacked": det_attacked}]
    return StepResult(step_id="layered/linf/0.1", check="layered-defence", threat="evasion", params={"eps": 0.1},
                      examples={"layered": {"eps": 0.1, "steps": 10, "n": 20, "rows": rows}})


def test_findings_flag_a_detector_only_when_it_rejects_no_more_under_attack() -> None:
    broken = {"correct": 0.1, "wrong": 0.9, "rejected": 0.0}
    weak = _result(broken, 0.05, {"correct": 0.1, "wrong": 0.83, "rejected": 0.07})
    strong = _result(broken, 0.05, {"correct": 0.1, "wrong": 0.2, "rejected": 0.7})
    check = LayeredDefenceCheck()
    assert "layered:detector:0.1" in {f.id for f in check.findings(None, [weak])}
    ids = {f.id for f in check.findings(None, [strong])}
    assert "layered:detector:0.1" not in ids and "layered:system:0.1" not in ids
    section = check.section([strong])
    assert section is not None and section.tables[0].rows[1][-1] == 0.7 and section.figures


def test_no_defence_section_is_skipped_with_a_reason_and_keeps_the_hash() -> None:
    assert "no defence" in _skip_reason({**LAYERED, "defence": None})
    assert parse_threat_model({**SMALL, "defence": None}).spec_hash() == parse_threat_model(SMALL).spec_hash()


@pytest.mark.parametrize(("attacker", "expected"), [
    ({"knowledge": "black-box", "evasion": [{"norm": "linf", "eps": [0.1]}]}, "white-box"),
    ({"knowledge": "white-box", "evasion": [{"norm": "l2", "eps": [1.0]}]}, "no L∞ evasion budget"),
    ({"knowledge": "white-box"}, "no L∞ evasion budget"),
])
def test_layered_check_needs_a_white_box_linf_attacker(attacker: dict[str, Any], expected: str) -> None:
    assert expected in _skip_reason({**LAYERED, "attacker": attacker})


@pytest.mark.parametrize(("defence", "named"), [
    ({"preprocess": [{"name": "blur"}]}, "defence.preprocess.0"),
    ({"preprocess": [{"name": "median", "kernal": 2}]}, "defence.preprocess.0.median.kernal"),
    ({"preprocess": [{"name": "jpeg", "quality": 0}]}, "defence.preprocess.0.jpeg.quality"),
    ({"detector": {"kind": "squeezing"}}, "defence.detector.kind"),
    ({"detector": {"kind": "energy", "fpr": 1.5}}, "defence.detector.fpr"),
    ({"robust_modle": "digits-cnn-pgdat"}, "defence.robust_modle"),
    ({}, "at least one layer"),
])
def test_bad_defence_keys_name_the_key(defence: dict[str, Any], named: str) -> None:
    with pytest.raises(ThreatModelError, match=named.replace(".", r"\.")) as info:
        parse_threat_model({**SMALL, "defence": defence})
    if "kernal" in named:
        assert "allowed keys here: name, kernel" in str(info.value)
    if "blur" in str(defence):
        assert "'bit-depth'" in str(info.value)


def test_the_documented_defence_example_is_a_valid_threat_model() -> None:
    import re

    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "audit.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M) if "defence:" in b]
    tm = parse_threat_model(yaml.safe_load(block))
    assert tm.defence is not None and tm.defence.detector is not None and tm.defence.robust_model == "digits-cnn-pgdat"



def test_every_preprocessing_and_detector_kind_builds_and_runs() -> None:
    defence = {"preprocess": [{"name": n} for n in ("bit-depth", "median", "spatial", "jpeg", "tv")],
               "detector": {"kind": "energy", "fpr": 0.1}}
    tm = parse_threat_model({**LAYERED, "defence": defence})
    target = zoo.load("digits-cnn")
    assert isinstance(target, TorchTarget)
    (step,) = [s for s in plan_audit(tm, target).steps if s.check == "layered-defence"]
    built = _preprocess(target, step.params["preprocess"])
    assert [type(m) for m in built] == [BitDepth, MedianSmoothing, SpatialSmoothing, JpegCompression, TotalVariation]
    data = zoo.data("digits-cnn")
    ctx = RunContext(tm, target, target, data.x_test[:8], data.y_test[:8], generator_seed=1)
    for kind in ("energy", "max-softmax"):
        assert _detector(ctx, target, {"kind": kind, "fpr": 0.1}).threshold is not None
    cheap = {**step.params, "preprocess": [{"name": "bit-depth", "bits": 4}]}
    res = LayeredDefenceCheck().run(Step(step.id, step.check, step.threat, cheap, step.reason), ctx)
    rows = {r["name"]: r for r in res.examples["layered"]["rows"]}
    assert rows["model + detector"]["clean"]["rejected"] <= 0.5 and rows["all layers"]["attacked"]["wrong"] >= 0.5


def test_a_robust_model_of_another_task_or_a_missing_file_is_refused() -> None:
    from sparring.audit.checks.layered import _robust
    from sparring.errors import ModelLoadError, ParameterError

    tm = parse_threat_model({**LAYERED, "defence": {"robust_model": "breast-cancer-mlp"}})
    target = zoo.load("digits-cnn")
    ctx = RunContext(tm, target, target, zoo.data("digits-cnn").x_test[:4], zoo.data("digits-cnn").y_test[:4], 0)
    with pytest.raises(ParameterError, match=r"breast-cancer-mlp.*same task"):
        _robust(ctx, "breast-cancer-mlp")
    with pytest.raises(ModelLoadError):
        _robust(ctx, "no-such-robust-model.pt")
