"""``--retries N`` for HTTP targets on the command line: a flaky API (HTTP 503 for its first requests, then the
digits CNN's probabilities) is answered after N retries and fails with exit 4 without them; ``init`` writes the
count into ``system.http.retries``. The API is a real HTTP server on 127.0.0.1."""

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

from sparring.cli import EXIT_MODEL, EXIT_OK, EXIT_USAGE, build_cli
from sparring.data import zoo
from sparring.targets import TorchTarget

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


class Flaky:
    """An API in front of ``target`` that answers 503 to its first ``fail_first`` requests, then the scores."""

    def __init__(self, target: TorchTarget, fail_first: int) -> None:
        api = self
        self.failed, self.served, self.fail_first = 0, 0, fail_first

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if api.failed < api.fail_first:
                    api.failed += 1
                    self._send(503, {"detail": "warming up"})
                    return
                api.served += 1
                self._send(200, {"scores": target.query(torch.tensor(body["inputs"])).tolist()})

            def _send(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/predict"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Flaky:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def flaky(digits_cnn: TorchTarget) -> Iterator[Flaky]:
    with Flaky(digits_cnn, fail_first=2) as api:
        yield api


def test_attack_url_retries_a_flaky_api_and_fails_without_retries(flaky: Flaky) -> None:
    args = ("attack", "square", "--url", flaky.url, "--model", "digits-cnn", "--n", "4", "--n-queries", "5",
            "--scores", "logits", "--json")
    code, out, err = _run(*args, "--retries", "0")
    assert code == EXIT_MODEL and flaky.failed == 1 and flaky.served == 0, out + err
    assert json.loads(out)["type"] == "EndpointError" and "503" in err
    code, out, err = _run(*args, "--retries", "1")  # the second 503, then answers
    assert code == EXIT_OK, out + err
    assert flaky.failed == 2 and flaky.served >= 1 and json.loads(out)["url"] == flaky.url


def test_retries_is_a_non_negative_count_and_needs_a_url() -> None:
    code, _, err = _run("attack", "square", "--url", "http://127.0.0.1:9/p", "--model", "digits-cnn", "--retries",
                        "-1")
    assert code == EXIT_USAGE and "--retries" in err
    code, _, err = _run("steal", "knockoff", "--model", "digits-cnn", "--retries", "2")
    assert code != EXIT_OK and "--retries applies to --url only" in err


def test_init_writes_retries_into_system_http(tmp_path: Path, flaky: Flaky, digits_cnn: TorchTarget) -> None:
    ds = zoo.data("digits-cnn")
    np.savez(tmp_path / "data.npz", x=ds.x_test[:24].numpy(), y=ds.y_test[:24].numpy())
    (tmp_path / "spec.json").write_text(json.dumps(digits_cnn.spec.to_dict()), encoding="utf-8")
    code, out, err = _run("init", "--model", flaky.url, "--spec", str(tmp_path / "spec.json"), "--data",
                          str(tmp_path / "data.npz"), "--n", "24", "--retries", "5", "--scores", "logits", "--output",
                          str(tmp_path / "t.yaml"))
    assert code == EXIT_OK, out + err
    assert flaky.failed == 2 and flaky.served >= 1  # init's own queries went through the retries
    assert yaml.safe_load((tmp_path / "t.yaml").read_text(encoding="utf-8"))["system"]["http"]["retries"] == 5
