"""The guard is one process by design: `guard serve --workers N` refuses N > 1 with the reason, and the one process's
/metrics counts every request exactly once under concurrent clients (uvicorn's event loop plus worker threads)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi", reason="the guard needs the 'guard' extra")

from click import testing as click_testing

from sparring.cli import build_cli
from sparring.data import Dataset
from sparring.guard.config import parse_config
from sparring.guard.service import GuardService
from sparring.targets.torch import TorchTarget
from tests.guard_helpers import bearer, running

pytestmark = pytest.mark.usefixtures("one_thread")


def test_serve_refuses_several_workers_with_the_reason(tmp_path: Path) -> None:
    cfg = tmp_path / "guard.yaml"
    cfg.write_text(f"model: digits-cnn\nstore: {{url: 'sqlite:///{tmp_path / 'guard.db'}'}}\n")
    res = click_testing.CliRunner().invoke(build_cli(), ["guard", "serve", str(cfg), "--workers", "4", "--port", "0"])
    assert res.exit_code == 2, res.output
    assert "4 workers" in res.output and "one process by design" in res.output and "PostgreSQL" in res.output
    assert not (tmp_path / "guard.db").exists()  # refused before anything is opened


def test_metrics_count_every_request_once_under_concurrent_clients(tmp_path: Path, digits_cnn: TorchTarget,
                                                                    digits: Dataset) -> None:
    cfg = {"model": "digits-cnn", "store": {"url": f"sqlite:///{tmp_path / 'guard.db'}"}, "prada": {"enabled": False},
           "drift": {"enabled": False}, "rate_limit": {"rate": 10_000, "burst": 10_000}, "queue": {"max_size": 256}}
    svc = GuardService(parse_config(cfg, base_dir=tmp_path), target=digits_cnn)
    n_threads, per_thread = 4, 15
    with running(svc) as (server, client, admin):
        statuses: list[int] = []

        def load(offset: int) -> None:
            with httpx.Client(headers=bearer(client), timeout=60) as http:
                for i in range(per_thread):
                    x = digits.x_test[offset + i:offset + i + 1]
                    statuses.append(http.post(server.predict_url, json={"inputs": x.tolist()}).status_code)

        threads = [threading.Thread(target=load, args=(k * per_thread,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        text = httpx.get(server.url + "/metrics", headers=bearer(admin)).text
    n = n_threads * per_thread
    assert statuses == [200] * n
    assert svc.metrics.value("guard_requests_total", {"decision": "ok", "status": "200"}) == n
    assert svc.metrics.value("guard_request_seconds_count", {"route": "/predict"}) == n
    assert svc.store.count("events") == n
    assert f'guard_requests_total{{decision="ok",status="200"}} {float(n)}' in text
