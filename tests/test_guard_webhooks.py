"""Alert webhooks against a real local receiver (http.server on 127.0.0.1): a committed alert is POSTed with a valid
HMAC-SHA256 signature; a receiver down then up gets it on a retry; a receiver always down (or hanging) ends as
``failed`` in the store while predictions go on unaffected; a restarted dispatcher resumes and catches up."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi", reason="the guard needs the 'guard' extra")

from sparring.errors import GuardConfigError
from sparring.guard.auth import Principal
from sparring.guard.config import WebhookConfig, parse_config
from sparring.guard.service import GuardService
from sparring.guard.store import Alert, Event, SQLiteStore, StoreBatch
from sparring.guard.webhooks import SIGNATURE_HEADER, WebhookDispatcher, verify_signature
from sparring.targets.torch import TorchTarget

pytestmark = pytest.mark.usefixtures("one_thread")

SECRET = "s3cret-for-the-test-receiver"
ENV = "SPARRING_TEST_WEBHOOK_SECRET"
ALICE = Principal("alice", "client", "k-alice")


class Receiver:
    """A webhook receiver on 127.0.0.1 that records what it gets; ``delay`` makes it hang before answering."""

    def __init__(self, port: int = 0, *, status: int = 200, delay: float = 0.0, db: Path | None = None) -> None:
        self.got: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                committed = None
                if db is not None:  # is the alert already in the store (another connection) when it arrives?
                    with sqlite3.connect(db) as conn:
                        committed = conn.execute("SELECT COUNT(*) FROM alerts WHERE id = ?",
                                                 (json.loads(body)["id"],)).fetchone()[0] == 1
                outer.got.append({"body": body, "signature": self.headers.get(SIGNATURE_HEADER),
                                  "delivery": self.headers.get("X-Sparring-Delivery"), "committed": committed})
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(db=tmp_path / "guard.db")
    yield r
    r.close()


def drift_service(tmp: Path, target: TorchTarget, hooks: list[dict[str, Any]]) -> GuardService:
    cfg = {"model": "digits-cnn", "store": {"url": f"sqlite:///{tmp / 'guard.db'}"}, "prada": {"enabled": False},
           "drift": {"window": 10, "reference": {"data": "test", "stop": 200}}, "webhooks": hooks}
    return GuardService(parse_config(cfg, base_dir=tmp), target=target)


def noise(n: int = 10, seed: int = 0) -> torch.Tensor:
    """Uniform-noise digits: the CNN's confidence on them is far below the test digits' (a drift alert at once)."""
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_committed_alert_is_posted_with_a_valid_signature(tmp_path: Path, receiver: Receiver,
                                                          digits_cnn: TorchTarget,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SECRET)
    svc = drift_service(tmp_path, digits_cnn, [{"url": receiver.url, "secret_env": ENV, "kinds": ["drift"]}])
    assert svc.predict(ALICE, noise()).status == 200
    assert svc.webhooks is not None and svc.webhooks.wait_idle(20)
    (alert,) = svc.store.alerts()
    assert alert["kind"] == "drift" and alert["detail"]["p_value"] < 0.01
    (got,) = receiver.got
    assert got["committed"] is True  # in the store (read from another connection) before it was sent
    assert verify_signature(got["body"], got["signature"], SECRET)
    assert not verify_signature(got["body"], got["signature"], SECRET + "x")
    assert not verify_signature(got["body"] + b" ", got["signature"], SECRET)
    payload = json.loads(got["body"])
    assert (payload["id"], payload["kind"], payload["event_id"]) == (alert["id"], "drift", alert["event_id"])
    assert payload["detail"] == alert["detail"] and got["delivery"] == str(alert["id"])
    (row,) = svc.webhooks.deliveries()
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 1, 200)
    assert svc.metrics.value("guard_webhook_deliveries_total", {"result": "delivered"}) == 1
    # a kind the webhook does not take is not sent
    svc.webhooks.submit(1, [Alert("bob", "prada", {})])
    assert svc.webhooks.wait_idle(5) and len(receiver.got) == 1


def test_receiver_down_then_up_is_retried_and_delivered(tmp_path: Path, digits_cnn: TorchTarget,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SECRET)
    port = free_port()  # nothing listens there yet
    svc = drift_service(tmp_path, digits_cnn, [{"url": f"http://127.0.0.1:{port}/hook", "secret_env": ENV,
                                                "retries": 8, "backoff": 0.2, "max_backoff": 0.5, "timeout": 2}])
    assert svc.predict(ALICE, noise()).status == 200
    assert svc.webhooks is not None
    hooks = svc.webhooks
    wait_for(lambda: hooks.deliveries() and hooks.deliveries()[0]["attempts"] >= 1)
    first = hooks.deliveries()[0]
    assert first["status"] == "pending" and first["last_error"] and "Connection" in first["last_error"]
    receiver = Receiver(port, db=tmp_path / "guard.db")
    try:
        wait_for(lambda: hooks.deliveries()[0]["status"] == "delivered")
        row = hooks.deliveries()[0]
        assert row["attempts"] >= 2 and row["last_status"] == 200 and len(receiver.got) == 1
        assert verify_signature(receiver.got[0]["body"], receiver.got[0]["signature"], SECRET)
        assert svc.metrics.value("guard_webhook_deliveries_total", {"result": "retried"}) == row["attempts"] - 1
    finally:
        receiver.close()


def test_receiver_always_down_is_recorded_failed_and_predictions_do_not_wait(tmp_path: Path, receiver: Receiver,
                                                                            digits_cnn: TorchTarget,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SECRET)
    hanging = Receiver(delay=5.0)  # accepts, then answers only after the webhook's timeout
    try:
        svc = drift_service(tmp_path, digits_cnn, [
            {"url": f"http://127.0.0.1:{free_port()}/hook", "secret_env": ENV, "retries": 2, "backoff": 0.05},
            {"url": hanging.url, "secret_env": ENV, "retries": 0, "timeout": 2.0},
            {"url": receiver.url, "secret_env": ENV}])
        assert svc.predict(ALICE, noise()).status == 200  # the drift alert: all three webhooks start delivering
        assert svc.webhooks is not None
        hooks = svc.webhooks
        wait_for(lambda: any(r["url"] == receiver.url and r["status"] == "delivered" for r in hooks.deliveries()))
        stuck = next(r for r in hooks.deliveries() if r["url"] == hanging.url)
        assert (stuck["status"], stuck["attempts"]) == ("pending", 0)  # the healthy one did not wait for it
        took = []
        for i in range(5):  # meanwhile predictions are answered at their usual speed
            t = time.perf_counter()
            assert svc.predict(ALICE, noise(1, seed=i + 1)).status == 200
            took.append(time.perf_counter() - t)
        assert max(took) < 1.0, took  # well under the hanging receiver's 2 s timeout
        assert hooks.wait_idle(30)
        rows = {r["url"]: r for r in hooks.deliveries()}
        down = next(r for u, r in rows.items() if u not in (hanging.url, receiver.url))
        assert (down["status"], down["attempts"], down["last_status"]) == ("failed", 3, None)
        assert "Connection" in down["last_error"]
        hung = rows[hanging.url]
        assert (hung["status"], hung["attempts"]) == ("failed", 1) and "timed out" in hung["last_error"]
        assert svc.metrics.value("guard_webhook_deliveries_total", {"result": "failed"}) == 2
        assert rows[receiver.url]["status"] == "delivered" and len(receiver.got) == 1
        assert svc.predict(ALICE, noise(1, seed=9)).status == 200 and svc.store.count("events") == 7
    finally:
        hanging.close()


def test_restarted_dispatcher_resumes_pending_and_catches_up(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "guard.db")
    port = free_port()
    hook = WebhookConfig(url=f"http://127.0.0.1:{port}/hook", secret_env=ENV, retries=3, backoff=60)
    env = {ENV: SECRET}
    first = store.record(StoreBatch(Event("alice", "/predict", 200, "ok"), alerts=[Alert("alice", "prada", {"a": 1})]))
    d1 = WebhookDispatcher([hook], store, environ=env)
    d1.submit(first, [Alert("alice", "prada", {})])
    wait_for(lambda: d1.deliveries() and d1.deliveries()[0]["attempts"] == 1)
    d1.close()  # "killed" with the retry 60 s away: the row stays pending in the store
    second = store.record(StoreBatch(Event("bob", "/predict", 200, "ok"), alerts=[Alert("bob", "drift", {"b": 2})]))
    assert second > first  # committed while no dispatcher ran
    receiver = Receiver(port)
    try:
        d2 = WebhookDispatcher([hook], store, environ=env)
        assert d2.wait_idle(10)
        assert sorted(json.loads(g["body"])["kind"] for g in receiver.got) == ["drift", "prada"]
        assert [r["status"] for r in d2.deliveries()] == ["delivered", "delivered"]
        d2.close()
        store.purge(events_before=None, alerts_before=time.time() + 1)  # retention deletes the alerts ...
        d3 = WebhookDispatcher([hook], store, environ=env)
        assert d3.deliveries() == [] and len(receiver.got) == 2  # ... and their delivery rows; nothing resent
        d3.close()
    finally:
        receiver.close()
        store.close()


def test_missing_secret_and_bad_urls_are_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "guard.db")
    with pytest.raises(GuardConfigError, match="SPARRING_TEST_UNSET_SECRET"):
        WebhookDispatcher([WebhookConfig(url="http://127.0.0.1:9/h", secret_env="SPARRING_TEST_UNSET_SECRET")],
                          store, environ={})
    store.close()
    with pytest.raises(GuardConfigError, match="http"):
        parse_config({"model": "digits-cnn", "webhooks": [{"url": "file:///etc/passwd", "secret_env": ENV}]})
    cfg = parse_config({"model": "digits-cnn", "webhooks": [
        {"url": "https://hooks.example.com/services/T000/B000/XXXXSECRET", "secret_env": ENV}]})
    public = json.dumps(cfg.public())
    assert "XXXXSECRET" not in public and "https://hooks.example.com/***" in public


def test_webhooks_and_dashboard_tables_on_postgresql(tmp_path: Path) -> None:
    from sparring.guard.dashboard import RejectedSamples, _top_clients
    from sparring.guard.store import open_store
    from tests.guard_pg import postgres_server

    receiver = Receiver()
    try:
        with postgres_server() as url, open_store(url) as store:
            hook = WebhookConfig(url=receiver.url, secret_env=ENV, backoff=0.05)
            env = {ENV: SECRET}
            eid = store.record(StoreBatch(Event("alice", "/predict", 403, "reject"),
                                          alerts=[Alert("alice", "detector-rate", {"p_value": 1e-9})]))
            a, b = WebhookDispatcher([hook], store, environ=env), WebhookDispatcher([hook], store, environ=env)
            a.submit(eid, [Alert("alice", "detector-rate", {})])
            b.submit(eid, [Alert("alice", "detector-rate", {})])  # two replicas on one alert: one row, one POST
            assert a.wait_idle(10) and b.wait_idle(10)
            assert len(receiver.got) == 1 and verify_signature(receiver.got[0]["body"], receiver.got[0]["signature"],
                                                               SECRET)
            assert [(r["status"], r["attempts"]) for r in a.deliveries()] == [("delivered", 1)]
            samples = RejectedSamples(store, keep=3)
            for i in range(5):
                samples.submit(eid, "alice", "unicode", [f"message {i} <b>"], [0])
            samples.flush()
            assert [s["text"] for s in samples.recent()] == ["message 4 <b>", "message 3 <b>", "message 2 <b>"]
            assert _top_clients(store, 0.0, "COUNT(*)") == [("alice", 1, 1, 1)]
            a.close()
            b.close()
    finally:
        receiver.close()
