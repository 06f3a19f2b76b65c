"""An endpoint that goes down mid-audit is a fault (exit 4), not a failed gate; once it is back, ``--resume`` finishes
the audit with the findings of an undisturbed run. All traffic stays on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from sparring.cli import EXIT_MODEL, EXIT_OK, build_cli
from sparring.serving import PredictionServer, make_server
from sparring.targets import TorchTarget

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: a 2nd thread only spins
N = 8


class Killable(nn.Module):
    """The served model; after ``alive_for`` forward passes it asks for the server to be killed and fails."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0
        self.alive_for: int | None = None
        self.kill = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.alive_for is not None and self.calls > self.alive_for:
            self.kill.set()
            raise RuntimeError("the server is going down")
        return self.model(x)  # type: ignore[no-any-return]


class Endpoint:
    """A prediction server on one fixed port that a test can kill and bring back."""

    def __init__(self, target: TorchTarget, model: Killable) -> None:
        self.target, self.model = target, model
        self.server: PredictionServer | None = None
        self.port = 0

    def start(self) -> str:
        self.model.calls, self.model.alive_for = 0, None
        self.model.kill.clear()
        self.server = make_server(self.target, port=self.port).start()
        self.port = int(self.server.url.rsplit(":", 1)[1])
        return self.server.predict_url

    def kill_after(self, calls: int) -> threading.Thread:
        """Stop the server (close its socket) as soon as the model has answered ``calls`` batches."""
        self.model.alive_for = calls

        def watch() -> None:
            self.model.kill.wait(120)
            self.stop()

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def endpoint(digits_cnn: TorchTarget) -> Iterator[Endpoint]:
    model = Killable(digits_cnn.model).eval()
    ep = Endpoint(TorchTarget(model, digits_cnn.spec), model)
    log = logging.getLogger("sparring.serving")
    level = log.level
    log.setLevel(logging.CRITICAL)  # the server logs the failures it answers with 500; not the audit's output
    yield ep
    log.setLevel(level)
    ep.stop()


def _threat_model(tmp_path: Path, url: str, digits_cnn: TorchTarget) -> Path:
    from sparring.data import zoo

    ds = zoo.data("digits-cnn")
    np.savez(tmp_path / "data.npz", x=ds.x_test[:N].numpy(), y=ds.y_test[:N].numpy())
    (tmp_path / "spec.json").write_text(json.dumps(digits_cnn.spec.to_dict()), encoding="utf-8")
    tm = {"schema_version": 1, "name": "endpoint audit",
          "system": {"model": url, "spec": str(tmp_path / "spec.json"), "http": {"output": "logits"},
                     "data": {"source": str(tmp_path / "data.npz"), "n": N}},
          "attacker": {"knowledge": "black-box", "query_budget": 40,
                       "evasion": [{"norm": "linf", "eps": [0.05, 0.1]}]},
          "effort": "quick", "seed": 0,
          "gates": [{"metric": "clean_accuracy", "min": 0.5},
                    {"metric": "robust_accuracy", "norm": "linf", "eps": 0.1, "min": 0.0}]}
    path = tmp_path / "threat.yaml"
    path.write_text(yaml.safe_dump(tm), encoding="utf-8")
    return path


def _audit(tm: Path, out: Path, *extra: str) -> Any:
    r = CliRunner().invoke(build_cli(), ["audit", str(tm), "--out", str(out), "--no-progress", *extra])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def _report(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_endpoint_killed_mid_audit_exits_4_and_resume_matches_an_undisturbed_run(
    tmp_path: Path, endpoint: Endpoint, digits_cnn: TorchTarget
) -> None:
    url = endpoint.start()
    tm = _threat_model(tmp_path, url, digits_cnn)
    undisturbed = _audit(tm, tmp_path / "ref")
    assert undisturbed.exit_code == EXIT_OK, undisturbed.output
    endpoint.stop()

    assert endpoint.start() == url
    watcher = endpoint.kill_after(6)  # the clean pass, then a few Square iterations of the first budget
    killed = _audit(tm, tmp_path / "out")
    watcher.join(10)
    assert killed.exit_code == EXIT_MODEL, killed.output  # a fault, not "gate failed" (6)
    assert "because the model or endpoint failed" in killed.output and "Traceback" not in killed.output
    data = _report(tmp_path / "out")  # every report is still written
    assert data["faults"] >= 1 and data["errors"] == data["faults"]
    errored = [s for s in data["steps"] if s["status"] == "error"]
    assert {s["error_type"] for s in errored} == {"EndpointError"} and all(s["fault"] for s in errored)
    assert next(s for s in data["steps"] if s["id"] == "baseline/clean")["status"] == "done"
    gate = next(g for g in data["gates"] if g["metric"] == "robust_accuracy")
    assert gate["status"] == "not-evaluated" and "could not run" in gate["message"]
    assert any(f["id"].startswith("error:evasion/square") and f["evidence"]["fault"] for f in data["findings"])
    for name in ("report.html", "summary.md", "junit.xml"):
        assert (tmp_path / "out" / name).exists()

    assert endpoint.start() == url  # the endpoint is back
    resumed = _audit(tm, tmp_path / "out", "--resume")
    assert resumed.exit_code == EXIT_OK, resumed.output
    a, b = _report(tmp_path / "out"), _report(tmp_path / "ref")
    assert a["errors"] == 0 and a["findings"] == b["findings"]
    assert [(g["status"], g["value"]) for g in a["gates"]] == [(g["status"], g["value"]) for g in b["gates"]]
