"""Running an audit: reports in four formats, gates decide the exit code, checkpoints resume to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sparring.audit import load_threat_model, run_audit
from sparring.audit.report import write_reports
from sparring.cli import EXIT_GATE, EXIT_INPUT, EXIT_OK, build_cli
from sparring.errors import CheckpointError
from tests.audit.conftest import SMALL, write_tm

FAILING_GATE = {"metric": "robust_accuracy", "norm": "linf", "eps": 0.15, "min": 0.9}


def _cli(*args: str) -> Any:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One uninterrupted audit of SMALL (with a gate that fails), run through the CLI."""
    d = tmp_path_factory.mktemp("audit")
    tm = write_tm(d / "threat.yaml", gates=[*SMALL["gates"], FAILING_GATE])
    r = _cli("audit", str(tm), "--out", str(d / "out"), "--no-progress")
    return d, r


def test_writes_all_four_reports(finished: tuple[Path, Any]) -> None:
    d, _ = finished
    out = d / "out"
    for name in ("report.html", "report.json", "summary.md", "junit.xml"):
        assert (out / name).stat().st_size > 200, name
    data = json.loads((out / "report.json").read_text())
    assert data["schema_version"] == 1 and data["status"] == "complete"
    assert {"gates", "findings", "plan", "steps", "environment", "threat_model", "target"} <= set(data)
    env = data["environment"]
    assert env["torch"] and env["python"] and env["seed"] == 0 and len(env["spec_hash"]) == 64
    clean = next(s for s in data["steps"] if s["id"] == "baseline/clean")["measurements"][0]["value"]
    assert clean > 0.8
    # The undefended CNN falls at eps 0.15: the findings say so, most severe first.
    titles = [f["title"] for f in data["findings"]]
    assert any("LINF evasion" in t for t in titles)
    order = ["critical", "high", "medium", "low", "info"]
    sev = [order.index(f["severity"]) for f in data["findings"]]
    assert sev == sorted(sev)
    assert "Verdict: FAIL" in (out / "summary.md").read_text()


def test_failing_gate_exits_non_zero_with_a_failing_junit_case(finished: tuple[Path, Any]) -> None:
    d, r = finished
    assert r.exit_code == EXIT_GATE, r.output
    suite = ET.parse(d / "out" / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["clean_accuracy >= 0.8"].find("failure") is None
    failed = cases["robust_accuracy (norm=linf, eps=0.15) >= 0.9"].find("failure")
    assert failed is not None and "misses" in (failed.get("message") or "")
    assert suite.get("failures") == "1" and suite.get("tests") == "2"


def test_passing_gates_exit_zero(tmp_path: Path) -> None:
    tm = write_tm(tmp_path / "t.yaml", attacker={"evasion": [{"norm": "linf", "eps": [0.01]}]},
                  certification={}, gates=[{"metric": "robust_accuracy", "norm": "linf", "eps": 0.01, "min": 0.5}])
    r = _cli("audit", str(tm), "--out", str(tmp_path / "o"), "--format", "junit,json", "--no-progress")
    assert r.exit_code == EXIT_OK, r.output
    assert not (tmp_path / "o" / "report.html").exists()
    suite = ET.parse(tmp_path / "o" / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"


def _findings(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["findings"]


def test_sigkill_then_resume_gives_the_same_findings(finished: tuple[Path, Any], tmp_path: Path) -> None:
    d, _ = finished
    tm = d / "threat.yaml"
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sparring.cli", "audit", str(tm), "--out", str(out),
                                 "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=err)
        ck = out / "checkpoints"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if (ck / "002.json").exists():
                break
            time.sleep(0.02)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert alive, "the audit finished (or died) before it could be killed: " + log.read_text()
    total = len(json.loads((ck / "manifest.json").read_text())["steps"])
    done = len(list(ck.glob("[0-9][0-9][0-9].json")))
    assert 0 < done < total
    assert not (out / "report.json").exists()
    r = _cli("audit", str(tm), "--out", str(out), "--resume", "--no-progress")
    assert r.exit_code == EXIT_GATE
    assert _findings(out / "report.json") == _findings(d / "out" / "report.json")
    a, b = (json.loads(p.read_text()) for p in (out / "report.json", d / "out" / "report.json"))
    assert [g["value"] for g in a["gates"]] == [g["value"] for g in b["gates"]]


def test_resume_refuses_checkpoints_of_another_threat_model(finished: tuple[Path, Any], tmp_path: Path) -> None:
    d, _ = finished
    other = write_tm(tmp_path / "other.yaml", seed=7)
    with pytest.raises(CheckpointError, match="different threat model"):
        run_audit(load_threat_model(other), d / "out", resume=True)
    r = _cli("audit", str(other), "--out", str(d / "out"), "--resume", "--no-progress")
    assert r.exit_code == EXIT_INPUT and "different threat model" in r.output


def test_ctrl_c_leaves_a_valid_partial_report(tmp_path: Path) -> None:
    tm = load_threat_model(write_tm(tmp_path / "t.yaml"))

    def interrupt(i: int, n: int, step: Any, result: Any, cached: bool) -> None:
        if i == 1:
            raise KeyboardInterrupt

    audit = run_audit(tm, tmp_path / "o", on_step=interrupt)
    assert audit.status == "interrupted" and len(audit.results) == 2
    paths = write_reports(audit, tmp_path / "o")
    data = json.loads(paths["json"].read_text())
    assert data["status"] == "interrupted"
    assert "interrupted" in paths["html"].read_text() and "--resume" in paths["markdown"].read_text() + paths[
        "html"].read_text()
    resumed = run_audit(tm, tmp_path / "o", resume=True)
    assert resumed.status == "complete" and len(resumed.results) == len(resumed.plan.steps)


def test_init_writes_a_valid_annotated_template(tmp_path: Path) -> None:
    path = tmp_path / "threat.yaml"
    r = _cli("init", "--model", "digits-cnn", "--n", "16", "--output", str(path))
    assert r.exit_code == 0, r.output
    text = path.read_text()
    assert "# " in text and "clean accuracy" in text
    tm = load_threat_model(path)
    assert tm.system.model == "digits-cnn" and tm.system.data.n == 16 and tm.gates
    assert tm.gates[0].min is not None and 0.8 < tm.gates[0].min < 1.0
    again = _cli("init", "--output", str(path))
    assert again.exit_code == 2 and "--force" in again.output
