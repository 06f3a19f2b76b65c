"""An audit never dies of a check: a step that raises is an error step with a finding, the gates it would have
measured are unmeasured (and fail), every report is written, and ``--resume`` runs the errored step again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sparring.audit.checks.evasion import EvasionScores
from sparring.audit.registry import RunContext, Step, StepResult
from sparring.cli import EXIT_GATE, EXIT_OK, build_cli
from tests.audit.conftest import write_tm

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: a 2nd thread only spins
GATE = {"metric": "robust_accuracy", "norm": "linf", "eps": 0.15, "min": 0.0}  # passes whenever it is measured


def _cli(*args: str) -> Any:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def _raise_at_015(monkeypatch: pytest.MonkeyPatch, fail: bool = True) -> list[str]:
    """Make the black-box check raise a plain bug (not a SparringError) at eps 0.15 (if ``fail``); return the steps
    it ran."""
    real = EvasionScores.run
    seen: list[str] = []

    def run(self: EvasionScores, step: Step, ctx: RunContext) -> StepResult:
        seen.append(step.id)
        if fail and step.params["eps"] == 0.15:
            raise RuntimeError("register_forward_pre_hook is not supported on ScriptModules")
        return real(self, step, ctx)

    monkeypatch.setattr(EvasionScores, "run", run)
    return seen


@pytest.fixture
def tm(tmp_path: Path) -> Path:
    """A black-box audit (Square with few queries: seconds) of the zoo CNN."""
    return write_tm(tmp_path / "t.yaml", system={"model": "digits-cnn", "data": {"n": 12}},
                    attacker={"knowledge": "black-box", "query_budget": 40,
                              "evasion": [{"norm": "linf", "eps": [0.05, 0.15]}]}, certification={},
                    gates=[{"metric": "clean_accuracy", "min": 0.5}, GATE])


def test_a_check_that_raises_gives_an_error_finding_an_unmeasured_gate_and_every_report(
    tm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _raise_at_015(monkeypatch)
    out = tmp_path / "out"
    r = _cli("audit", str(tm), "--out", str(out), "--no-progress")
    assert r.exit_code == EXIT_GATE, r.output  # a bug in a check, not a model fault: the unmeasured gate fails
    assert "Traceback" not in r.output and "could not run" in r.output
    data = json.loads((out / "report.json").read_text())
    step = next(s for s in data["steps"] if s["id"] == "evasion/square/linf/0.15")
    assert step["status"] == "error" and step["error_type"] == "RuntimeError" and step["fault"] is False
    assert "traceback" not in step and data["errors"] == 1 and data["faults"] == 0
    other = next(s for s in data["steps"] if s["id"] == "evasion/square/linf/0.05")
    assert other["status"] == "done"  # the other steps still ran
    gates = {g["gate"]: g for g in data["gates"]}
    gate = gates["robust_accuracy (norm=linf, eps=0.15) >= 0.0"]
    assert gate["status"] == "not-evaluated" and "unmeasured" in gate["message"]
    assert "evasion/square/linf/0.15" in gate["steps"]
    assert gates["clean_accuracy >= 0.5"]["status"] == "pass"  # a gate that does not depend on it is measured
    err = next(f for f in data["findings"] if f["id"] == "error:evasion/square/linf/0.15")
    assert err["title"].startswith("Check evasion-scores could not run")
    assert "RuntimeError: register_forward_pre_hook" in err["title"]
    assert "gate robust_accuracy (norm=linf, eps=0.15) >= 0.0 unmeasured" in err["title"]
    assert err["severity"] == "high" and err["evidence"]["unmeasured_gates"] == [gate["gate"]]
    for name in ("report.html", "summary.md", "junit.xml"):
        assert (out / name).stat().st_size > 200, name
    html = (out / "report.html").read_text()
    assert "1 step(s) could not run" in html and "--resume" in html
    assert "could not run" in (out / "summary.md").read_text()
    assert "unmeasured" in (out / "junit.xml").read_text()
    # the errored step is not checkpointed: the manifest lists it, no checkpoint file holds it
    ck = [json.loads(p.read_text())["step"]["id"] for p in (out / "checkpoints").glob("[0-9][0-9][0-9].json")]
    assert "evasion/square/linf/0.15" not in ck and "evasion/square/linf/0.05" in ck


def test_debug_prints_and_keeps_the_traceback(tm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _raise_at_015(monkeypatch)
    out = tmp_path / "out"
    r = _cli("audit", str(tm), "--out", str(out), "--no-progress", "--format", "json", "--debug")
    assert r.exit_code == EXIT_GATE
    assert "Traceback (most recent call last)" in r.output and "def run" not in r.output
    step = next(s for s in json.loads((out / "report.json").read_text())["steps"]
                if s["id"] == "evasion/square/linf/0.15")
    assert "RuntimeError: register_forward_pre_hook" in step["traceback"]


def test_resume_runs_the_errored_step_again_and_keeps_the_finished_ones(
    tm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    _raise_at_015(monkeypatch)
    assert _cli("audit", str(tm), "--out", str(out), "--no-progress", "--format", "json").exit_code == EXIT_GATE
    monkeypatch.undo()  # the cause is fixed
    seen = _raise_at_015(monkeypatch, fail=False)
    r = _cli("audit", str(tm), "--out", str(out), "--no-progress", "--format", "json", "--resume")
    assert r.exit_code == EXIT_OK, r.output
    assert seen == ["evasion/square/linf/0.15"]  # only the errored step ran again
    data = json.loads((out / "report.json").read_text())
    assert data["errors"] == 0 and all(g["status"] == "pass" for g in data["gates"])
    assert not [f for f in data["findings"] if f["id"].startswith("error:")]



def test_report_hooks_that_raise_cost_a_section_not_the_report(
    tm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparring.audit import load_threat_model, run_audit
    from sparring.audit.report import write_reports

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("robust")

    monkeypatch.setattr(EvasionScores, "findings", broken, raising=False)
    monkeypatch.setattr(EvasionScores, "section", broken, raising=False)
    audit = run_audit(load_threat_model(tm), tmp_path / "out")
    hook = next(f for f in audit.findings if f.id == "error:evasion-scores:findings")
    assert "could not summarise" in hook.title and "KeyError" in hook.title
    html = write_reports(audit, tmp_path / "out", ("html",))["html"].read_text(encoding="utf-8")
    assert "evasion-scores: section unavailable" in html and "Gates" in html  # the rest of the page is there

    monkeypatch.setattr("sparring.audit.report.render_html", broken)  # the whole page fails to draw
    paths = write_reports(audit, tmp_path / "out")
    page = paths["html"].read_text(encoding="utf-8")
    assert "could not be drawn (KeyError" in page and "Verdict:" in page and "robust_accuracy" in page
    assert all(p.stat().st_size > 100 for p in paths.values())
