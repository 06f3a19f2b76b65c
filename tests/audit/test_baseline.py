"""Audits over time: ``sparring audit --baseline old/report.json`` deltas in every format, and regression gates.

The model is an MLP on 8×8 digits trained here and saved as TorchScript; the same threat model file audits it twice
(zero deltas, pass), then the file is overwritten with a weaker model (noise on its weights) and audited again
against the first report (negative deltas, the regression gate fails, exit 6).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner, Result
from pydantic import ValidationError
from torch import nn

from sparring.audit import parse_threat_model
from sparring.audit.baseline import load_baseline
from sparring.audit.threat import Gate
from sparring.cli import EXIT_GATE, EXIT_INPUT, EXIT_OK, build_cli
from sparring.data import Dataset, load_digits
from sparring.errors import BaselineError, ThreatModelError

pytestmark = pytest.mark.usefixtures("one_thread")
N = 32
ROBUST = {"metric": "robust_accuracy", "norm": "linf", "eps": 0.05}


@pytest.fixture(scope="module")
def digits8() -> Dataset:
    return load_digits(8)


@pytest.fixture(scope="module")
def mlp(digits8: Dataset) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(digits8.x_train), digits8.y_train).backward()
        opt.step()
    return model.eval()


def _save(model: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():  # TorchScript warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(path))


def _weaker(model: nn.Module) -> nn.Module:
    """The same network with Gaussian noise on every weight: a regressed model."""
    import copy

    weak = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in weak.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return weak


@pytest.fixture
def setup(tmp_path: Path, digits8: Dataset, mlp: nn.Module) -> Path:
    """A threat model file auditing ``model.pt`` (the trained MLP) on saved 8×8 digits, with regression gates."""
    _save(mlp, tmp_path / "model.pt")
    (tmp_path / "spec.json").write_text(json.dumps(digits8.spec.to_dict()), encoding="utf-8")
    np.savez(tmp_path / "data.npz", x=digits8.x_test[:N].numpy(), y=digits8.y_test[:N].numpy())
    tm = {"schema_version": 1, "name": "baseline audit",
          "system": {"model": str(tmp_path / "model.pt"), "spec": str(tmp_path / "spec.json"),
                     "data": {"source": str(tmp_path / "data.npz"), "n": N}},
          "attacker": {"evasion": [{"norm": "linf", "eps": [0.05]}]}, "effort": "quick",
          "gates": [{"metric": "clean_accuracy", "min": 0.5}, {**ROBUST, "min": 0.0},
                    {**ROBUST, "max_drop": 0.02}, {"metric": "clean_accuracy", "max_drop": 0.02}]}
    (tmp_path / "tm.yaml").write_text(yaml.safe_dump(tm), encoding="utf-8")
    return tmp_path


def _audit(d: Path, out: str, *extra: str) -> tuple[Result, dict[str, Any]]:
    r = CliRunner().invoke(build_cli(), ["audit", str(d / "tm.yaml"), "--out", str(d / out), "--no-progress",
                                         *extra])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    data = json.loads((d / out / "report.json").read_text(encoding="utf-8")) if (d / out).exists() else {}
    return r, data


def _statuses(data: dict[str, Any]) -> dict[str, str]:
    return {g["gate"]: g["status"] for g in data["gates"]}


def test_baseline_deltas_are_zero_for_the_same_model_and_negative_for_a_weaker_one(setup: Path,
                                                                                    mlp: nn.Module) -> None:
    d = setup
    # 1. without a baseline the regression gates are unmeasured (they fail), their values are still recorded
    r, first = _audit(d, "first")
    assert r.exit_code == EXIT_GATE, r.output
    regression = [g for g in first["gates"] if "vs baseline" in g["gate"]]
    assert [g["status"] for g in regression] == ["not-evaluated", "not-evaluated"]
    assert all(g["value"] is not None and "--baseline" in g["message"] for g in regression)
    assert first["baseline"] is None
    page = (d / "first" / "report.html").read_text(encoding="utf-8")
    assert 'id="plan"' in page and 'id="baseline"' not in page  # the full page (not the fallback), no comparison

    # 2. the same model against the first report: every delta is zero, every gate passes
    r, second = _audit(d, "second", "--baseline", str(d / "first" / "report.json"))
    assert r.exit_code == EXIT_OK, r.output
    b = second["baseline"]
    assert b["path"] == str(d / "first" / "report.json") and b["same_threat_model"]
    assert [g["delta"] for g in b["gates"]] == [0.0, 0.0, 0.0, 0.0]
    assert b["steps"] and all(s["delta"] == 0.0 for s in b["steps"])
    assert {s["id"] for s in b["steps"]} >= {"baseline/clean"} and not b["new_steps"] and not b["missing_steps"]
    assert set(_statuses(second).values()) == {"pass"}
    assert "before" in r.output and "delta" in r.output  # the CLI summary's gate table

    # 3. a weaker model in the same file: negative deltas, the regression gates fail, exit 6
    _save(_weaker(mlp), d / "model.pt")
    r, third = _audit(d, "third", "--baseline", str(d / "first"))  # the --out folder works too
    assert r.exit_code == EXIT_GATE, r.output
    b = third["baseline"]
    deltas = {g["gate"]: g["delta"] for g in b["gates"]}
    drop_robust = deltas["robust_accuracy (norm=linf, eps=0.05) drop <= 0.02 vs baseline"]
    drop_clean = deltas["clean_accuracy drop <= 0.02 vs baseline"]
    assert drop_clean < -0.02 and drop_robust < -0.02, deltas
    st = _statuses(third)
    assert st["robust_accuracy (norm=linf, eps=0.05) drop <= 0.02 vs baseline"] == "fail"
    assert st["clean_accuracy drop <= 0.02 vs baseline"] == "fail"
    assert st["robust_accuracy (norm=linf, eps=0.05) >= 0.0"] == "pass"  # absolute gates are unchanged by it
    clean = next(s for s in b["steps"] if s["id"] == "baseline/clean" and s["metric"] == "clean_accuracy")
    assert clean["delta"] == pytest.approx(drop_clean) and clean["before"] > clean["now"]
    gate = next(g for g in third["gates"] if g["gate"] == "clean_accuracy drop <= 0.02 vs baseline")
    assert gate["threshold"] == pytest.approx(clean["before"] - 0.02) and "misses" in gate["message"]
    assert any(f["id"] == "gate:clean_accuracy drop <= 0.02 vs baseline" for f in third["findings"])

    # every format shows the comparison
    md = (d / "third" / "summary.md").read_text(encoding="utf-8")
    assert "### Compared with baseline" in md and f"{drop_clean:+.4f}" in md and "`baseline/clean`" in md
    html = (d / "third" / "report.html").read_text(encoding="utf-8")
    assert 'id="baseline"' in html and f"{drop_robust:+.4f}" in html
    suite = ET.parse(d / "third" / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert any(p.get("name") == "baseline" for p in suite.iter("property"))
    case = next(c for c in suite.iter("testcase") if c.get("name") == "clean_accuracy drop <= 0.02 vs baseline")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert float(props["delta"]) == pytest.approx(drop_clean, abs=1e-5) and case.find("failure") is not None


def test_a_missing_or_foreign_baseline_is_a_typed_error_naming_the_file(setup: Path, tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="no such baseline report"):
        load_baseline(tmp_path / "nope" / "report.json")
    (tmp_path / "other.json").write_text('{"results": []}', encoding="utf-8")
    with pytest.raises(BaselineError, match=r"other\.json.*not a sparring audit report"):
        load_baseline(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(BaselineError, match="is not JSON"):
        load_baseline(tmp_path / "broken.json")
    r, _ = _audit(setup, "out", "--baseline", str(tmp_path / "other.json"))
    assert r.exit_code == EXIT_INPUT and "other.json" in r.output
    assert not (setup / "out").exists()  # refused before any step ran


def test_a_regression_gate_takes_max_drop_alone_on_an_accuracy() -> None:
    g = Gate(**ROBUST, max_drop=0.02)  # type: ignore[arg-type]
    assert g.key() == "robust_accuracy (norm=linf, eps=0.05)" and g.describe().endswith("drop <= 0.02 vs baseline")
    assert g.passes(0.78, before=0.80) and not g.passes(0.77, before=0.80)  # a drop of exactly max_drop is allowed
    assert not g.passes(0.99)  # no baseline value: the gate fails
    with pytest.raises(ValidationError, match="exactly one of min, max or max_drop"):
        Gate(**ROBUST, min=0.5, max_drop=0.02)  # type: ignore[arg-type]
    with pytest.raises(ThreatModelError, match="max_drop"):
        parse_threat_model({"system": {"model": "digits-cnn"},
                            "gates": [{"metric": "text_evasion_rate", "max_chars": 3, "max_drop": 0.1}]})


def test_a_baseline_without_its_threat_model_gates_matches_gates_by_name(tmp_path: Path) -> None:
    report = {"schema_version": 1, "name": "old", "verdict": "pass", "threat_model": {"system": {"model": "m.pt"}},
              "steps": [{"id": "baseline/clean", "status": "done",
                         "measurements": [{"metric": "clean_accuracy", "value": 0.9, "params": {}}]}],
              "gates": [{"gate": "robust_accuracy (norm=linf, eps=0.05) >= 0.5", "value": 0.6},
                        {"gate": "clean_accuracy drop <= 0.02 vs baseline", "value": 0.9}]}
    (tmp_path / "report.json").write_text(json.dumps(report), encoding="utf-8")
    base = load_baseline(tmp_path)
    assert base.gates == {"robust_accuracy (norm=linf, eps=0.05)": 0.6, "clean_accuracy": 0.9}
    assert base.steps["baseline/clean"][0]["value"] == 0.9 and base.model == "m.pt"
    (tmp_path / "report.json").write_text(json.dumps({**report, "gates": [1]}), encoding="utf-8")
    with pytest.raises(BaselineError, match="damaged"):
        load_baseline(tmp_path)
