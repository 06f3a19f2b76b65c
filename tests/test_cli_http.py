"""HTTP settings in the image threat model and on `sparring init`, and errors as JSON under ``--json``.

The endpoints are real HTTP servers on 127.0.0.1: :func:`sparring.serving.make_server` for a labels-only API, and a
gateway (below) that asks for a bearer token, takes its batch under ``batch`` and answers logits under ``preds``, as a
user's own API might.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from sparring.audit.threat import parse_threat_model
from sparring.cli import EXIT_INPUT, EXIT_MODEL, EXIT_OK, EXIT_USAGE, build_cli
from sparring.errors import ThreatModelError
from sparring.serving import make_server
from sparring.targets import TorchTarget

pytestmark = pytest.mark.usefixtures("one_thread")
N = 24
TOKEN = "tok-5f2a9c"  # the secret: in the environment only


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), list(args), env=env)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


class Gateway:
    """A user's API in front of ``target``: ``Authorization: Bearer <TOKEN>`` required (401 otherwise), the batch
    under ``batch``, log-probabilities (logits) answered under ``preds``. Counts the requests it served."""

    def __init__(self, target: TorchTarget) -> None:
        gw = self
        self.served = 0
        self.refused = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    gw.refused += 1
                    self._send(401, {"detail": "bad token"})
                    return
                x = torch.tensor(body["batch"], dtype=torch.float32)
                s = target.query(x)
                logits = s.log_softmax(dim=1) if target.output == "logits" else s.clamp_min(1e-12).log()
                gw.served += 1
                self._send(200, {"preds": logits.tolist()})

            def _send(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/predict"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Gateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def files(tmp_path: Path, digits_cnn: TorchTarget) -> tuple[Path, Path, float]:
    """spec.json, data.npz (N held-out digits) and the local model's clean accuracy on them."""
    from sparring.data import zoo

    ds = zoo.data("digits-cnn")
    x, y = ds.x_test[:N], ds.y_test[:N]
    np.savez(tmp_path / "data.npz", x=x.numpy(), y=y.numpy())
    (tmp_path / "spec.json").write_text(json.dumps(digits_cnn.spec.to_dict()), encoding="utf-8")
    acc = float((digits_cnn.query_labels(x).cpu() == y).float().mean())
    return tmp_path / "spec.json", tmp_path / "data.npz", acc


@pytest.fixture
def gateway(digits_cnn: TorchTarget) -> Iterator[Gateway]:
    with Gateway(digits_cnn) as gw:
        yield gw


def _threat_yaml(path: Path, url: str, spec: Path, data: Path, http: dict[str, Any] | None,
                 output: str = "scores") -> Path:
    system: dict[str, Any] = {"model": url, "spec": str(spec), "data": {"source": str(data), "n": N}}
    if http is not None:
        system["http"] = http
    tm = {"schema_version": 1, "name": "gateway audit", "system": system, "exposure": {"output": output},
          "attacker": {"knowledge": "black-box", "evasion": []}, "effort": "quick",
          "gates": [{"metric": "clean_accuracy", "min": 0.5}]}
    path.write_text(yaml.safe_dump(tm), encoding="utf-8")
    return path


def test_audit_yaml_http_settings_reach_an_api_with_a_token_keys_and_logits(
        tmp_path: Path, files: tuple[Path, Path, float], gateway: Gateway) -> None:
    spec, data, local_acc = files
    http = {"headers": {"Authorization": "Bearer ${SPARRING_TEST_TOKEN}"}, "input_key": "batch",
            "output_key": "preds", "output": "logits", "timeout": 20, "retries": 0}
    tm = _threat_yaml(tmp_path / "threat.yaml", gateway.url, spec, data, http)
    code, out, err = _run("audit", str(tm), "--out", str(tmp_path / "rep"), "--format", "json", "--no-progress",
                          env={"SPARRING_TEST_TOKEN": TOKEN})
    assert code == EXIT_OK, out + err
    text = (tmp_path / "rep" / "report.json").read_text(encoding="utf-8")
    report = json.loads(text)
    gate = next(g for g in report["gates"] if g["metric"] == "clean_accuracy")
    assert gate["value"] == pytest.approx(local_acc)  # the API's answers, read under 'preds', are the model's
    assert gateway.served >= 1 and gateway.refused == 0
    assert TOKEN not in text and report["threat_model"]["system"]["http"]["headers"] == {
        "Authorization": "Bearer ${SPARRING_TEST_TOKEN}"}


def test_audit_without_the_token_in_the_environment_names_the_variable(
        tmp_path: Path, files: tuple[Path, Path, float], gateway: Gateway) -> None:
    spec, data, _ = files
    tm = _threat_yaml(tmp_path / "threat.yaml", gateway.url, spec, data,
                      {"headers": {"Authorization": "Bearer ${SPARRING_TEST_UNSET_TOKEN}"}, "input_key": "batch",
                       "output_key": "preds"})
    code, out, err = _run("audit", str(tm), "--out", str(tmp_path / "rep"), "--format", "json", "--no-progress")
    assert code == EXIT_INPUT, out + err
    assert "SPARRING_TEST_UNSET_TOKEN" in err and gateway.served == 0


def test_audit_with_the_wrong_input_key_is_an_endpoint_fault_not_a_pass(
        tmp_path: Path, files: tuple[Path, Path, float], gateway: Gateway) -> None:
    spec, data, _ = files  # the gateway reads 'batch': the default 'inputs' gets a 500 from it, an endpoint fault
    tm = _threat_yaml(tmp_path / "threat.yaml", gateway.url, spec, data,
                      {"headers": {"Authorization": f"Bearer {TOKEN}"}, "output_key": "preds", "retries": 0})
    code, out, err = _run("audit", str(tm), "--out", str(tmp_path / "rep"), "--format", "json", "--no-progress")
    assert code == EXIT_MODEL, out + err
    assert TOKEN not in (tmp_path / "rep" / "report.json").read_text(encoding="utf-8")  # literal value redacted


def test_system_http_is_for_urls_and_literal_header_values_stay_out_of_reports() -> None:
    with pytest.raises(ThreatModelError, match=r"system\.http applies to an http"):
        parse_threat_model({"system": {"model": "digits-cnn", "http": {"timeout": 5}}})
    with pytest.raises(ThreatModelError, match="output"):
        parse_threat_model({"system": {"model": "http://127.0.0.1:1/p", "spec": "s.json",
                                       "http": {"output": "labels"}}})
    tm = parse_threat_model({"system": {"model": "http://127.0.0.1:1/p", "spec": "s.json",
                                        "http": {"headers": {"X-Key": "plain-secret", "A": "Bearer ${T}"}}}})
    assert tm.system.http is not None and tm.system.http.headers["X-Key"] == "plain-secret"
    assert tm.to_dict()["system"]["http"]["headers"] == {"X-Key": "<redacted>", "A": "Bearer ${T}"}


def test_init_on_a_labels_only_api_needs_exposure_labels(
        tmp_path: Path, files: tuple[Path, Path, float], digits_cnn: TorchTarget) -> None:
    spec, data, local_acc = files
    with make_server(TorchTarget(digits_cnn.model, digits_cnn.spec), output="labels") as srv:
        base = ("init", "--model", srv.predict_url, "--spec", str(spec), "--data", str(data), "--n", str(N))
        code, out, err = _run(*base, "--output", str(tmp_path / "scores.yaml"))
        assert code == EXIT_MODEL and "scores" in err  # the defect: a labels API read as scores
        code, out, err = _run(*base, "--exposure", "labels", "--output", str(tmp_path / "t.yaml"))
        assert code == EXIT_OK, out + err
    text = (tmp_path / "t.yaml").read_text(encoding="utf-8")
    assert f"clean accuracy {local_acc:.4f} on {N} examples" in text
    tm = yaml.safe_load(text)
    assert tm["exposure"]["output"] == "labels" and tm["attacker"]["knowledge"] == "black-box"
    parse_threat_model(tm)  # the file written is a valid threat model


def test_init_writes_the_http_settings_with_the_secret_as_a_variable(
        tmp_path: Path, files: tuple[Path, Path, float], gateway: Gateway) -> None:
    spec, data, local_acc = files
    out_file = tmp_path / "t.yaml"
    code, out, err = _run("init", "--model", gateway.url, "--spec", str(spec), "--data", str(data), "--n", str(N),
                          "--http-header", "Authorization: Bearer ${SPARRING_TEST_TOKEN}", "--input-key", "batch",
                          "--output-key", "preds", "--scores", "logits", "--timeout", "15",
                          "--output", str(out_file), env={"SPARRING_TEST_TOKEN": TOKEN})
    assert code == EXIT_OK, out + err
    text = out_file.read_text(encoding="utf-8")
    assert TOKEN not in text and f"clean accuracy {local_acc:.4f}" in text and gateway.served >= 1
    http = yaml.safe_load(text)["system"]["http"]
    assert http == {"headers": {"Authorization": "Bearer ${SPARRING_TEST_TOKEN}"}, "timeout": 15, "retries": 3,
                    "input_key": "batch", "output_key": "preds", "output": "logits"}


def test_init_refuses_http_options_without_a_url_model(tmp_path: Path) -> None:
    code, _, err = _run("init", "--model", "digits-mlp", "--timeout", "5", "--output", str(tmp_path / "t.yaml"))
    assert code == EXIT_INPUT and "--timeout applies to a URL --model only" in err
    code, _, err = _run("init", "--model", "digits-mlp", "--exposure", "labels", "--output", str(tmp_path / "t.yaml"))
    assert code == EXIT_INPUT and "--exposure" in err
    assert not (tmp_path / "t.yaml").exists()


@pytest.mark.parametrize(("args", "kind", "code"), [
    (("attack", "fgsm", "--model", "missing-model.pt"), "ModelLoadError", EXIT_MODEL),
    (("attack", "fgsm", "--eps", "not-a-number"), "BadParameter", EXIT_USAGE),
    (("attack", "fgsm", "--timeout", "3"), "ParameterError", EXIT_INPUT),
    (("membership", "loss-threshold", "--members", "m.npz"), "ParameterError", EXIT_INPUT),
    (("membership", "loss-threshold", "--model", "missing-model.pt"), "ModelLoadError", EXIT_MODEL),
    (("membership", "no-such-attack"), "BadParameter", EXIT_USAGE),
    (("poison", "scan-data", "--data", "missing.npz"), "", EXIT_USAGE),
    (("drift", "missing-ref.npz", "missing-cur.npz"), "", 0),
])
def test_errors_are_json_under_json_with_the_same_exit_code(args: tuple[str, ...], kind: str, code: int) -> None:
    plain_code, plain_out, plain_err = _run(*args)
    json_code, out, err = _run(*args, "--json")
    assert json_code == plain_code and plain_code != EXIT_OK
    assert plain_err.startswith(("error", "Usage")) and not plain_out.strip().startswith("{")
    d = json.loads(out)
    assert set(d) == {"error", "type", "exit_code"} and d["exit_code"] == json_code and d["error"]
    if code:
        assert json_code == code
    if kind:
        assert d["type"] == kind
    # the person at the terminal still reads the error when stdout goes to a file
    assert "Traceback" not in out + err and err.startswith(f"error ({d['type']}): ")


def test_certify_smoothing_of_an_api_matches_the_local_model() -> None:
    """Smoothing queries Gaussian-noised inputs, which leave the data range: an API that accepts them (the gateway)
    certifies exactly as the local model; one that refuses them (make_server checks the bounds) exits 4 saying so."""
    from sparring import zoo

    local = zoo.load("digits-mlp")
    assert isinstance(local, TorchTarget)
    args = ("certify", "smoothing", "--model", "digits-mlp", "--n", "6", "--n0", "20", "--n-samples", "200",
            "--sigma", "0.25", "--radii", "0,0.25", "--json")
    code, out, err = _run(*args)
    assert code == EXIT_OK, err
    want = json.loads(out)
    with Gateway(local) as gw:
        code, out, err = _run(*args, "--url", gw.url, "--http-header", f"Authorization: Bearer {TOKEN}",
                              "--input-key", "batch", "--output-key", "preds", "--scores", "logits")
    assert code == EXIT_OK, out + err
    got = json.loads(out)  # the same noise (seed), the API's answers: the same certificates
    assert got["certified_accuracy"] == want["certified_accuracy"] and got["model"] == gw.url
    assert got["smoothed_accuracy"] == want["smoothed_accuracy"] and gw.served >= 1
    with make_server(TorchTarget(local.model, local.spec), output="labels") as srv:
        code, out, _ = _run(*args, "--url", srv.predict_url, "--output", "labels")
        assert code == EXIT_MODEL and "outside the declared bounds" in json.loads(out)["error"]
        code, out, _ = _run("certify", "bounds", "--url", srv.predict_url, "--json")
        assert code == EXIT_INPUT and "graph" in json.loads(out)["error"]
    code, out, _ = _run("certify", "smoothing", "--input-key", "x", "--json")
    assert code == EXIT_INPUT and "--input-key applies to --url only" in json.loads(out)["error"]
