"""Two guard replicas on one real PostgreSQL server share each client's PRADA state: a client's extraction queries
split across both replicas are detected as one client's, with exactly one alert, no lost update under concurrent
requests, and every event from both replicas in the store. The server stopped mid-run: fail-closed 503 (or
fail-open answers, counted as dropped), no acknowledged event lost, and both replicas recover when it is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from sparring.data import Dataset
from sparring.defenses.detect.extraction import PradaDetector
from sparring.guard.auth import create_key
from sparring.guard.config import parse_config
from sparring.guard.server import GuardServer
from sparring.guard.service import GuardService
from sparring.guard.store import open_store
from tests.guard_helpers import batch_sha, bearer
from tests.guard_pg import postgres_control, postgres_server

pytestmark = pytest.mark.usefixtures("one_thread")

_PRADA = {"delta": 0.9, "min_queries": 100, "max_samples": 500}


def papernot_stream(seeds: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Synthetic queries shaped like Papernot et al.'s (2017) Jacobian augmentation: signed 0.1 steps from the
    previous generation (random directions: no surrogate here), grown from a few natural seeds."""
    queries = [seeds]
    while sum(len(q) for q in queries) < n:
        step = 0.1 * torch.randn(queries[-1].shape, generator=gen).sign()
        queries.append((queries[-1] + step).clamp(0, 1))
    return torch.cat(queries)[:n]


@contextmanager
def replicas(url: str, tmp: Path, n: int = 2, **overrides: Any) -> Iterator[list[GuardServer]]:
    """``n`` guard services (each its own model, PRADA and store connections), served on 127.0.0.1, one database."""
    cfg: dict[str, Any] = {"model": "digits-cnn", "store": {"url": url}, "drift": {"enabled": False},
                           "rate_limit": {"rate": 10_000, "burst": 10_000}, "prada": _PRADA,
                           "auth": {"cache_seconds": 300}}
    cfg.update(overrides)
    with ExitStack() as stack:
        servers = []
        for _ in range(n):
            svc = GuardService(parse_config(cfg, base_dir=tmp))
            stack.callback(svc.store.close)
            servers.append(stack.enter_context(GuardServer(svc)))
        yield servers


def _send(http: httpx.Client, url: str, key: str, x: torch.Tensor) -> None:
    r = http.post(url, json={"inputs": x.tolist()}, headers=bearer(key))
    assert r.status_code == 200, r.text


def test_a_client_split_across_two_replicas_is_one_client(tmp_path: Path, digits: Dataset) -> None:
    gen = torch.Generator().manual_seed(0)
    natural = torch.cat([digits.x_train, digits.x_test])
    with postgres_server() as url:
        with open_store(url) as st:
            keys = {name: create_key(st, name)[0] for name in ("synthetic", "natural-0", "natural-1", "natural-2")}
        with replicas(url, tmp_path) as (a, b), httpx.Client() as http:
            synthetic = papernot_stream(digits.x_test[:10], 200, gen)
            for i in range(synthetic.shape[0]):  # alternating: even queries to replica a, odd to b
                _send(http, (a, b)[i % 2].predict_url, keys["synthetic"], synthetic[i : i + 1])
            streams = {f"natural-{c}": natural[torch.randperm(len(natural), generator=gen)[:150]] for c in range(3)}
            for name, x in streams.items():  # five per request, alternating
                for j, i in enumerate(range(0, x.shape[0], 5)):
                    _send(http, (a, b)[j % 2].predict_url, keys[name], x[i : i + 5])
            store = a.service.store
            alerts = store.alerts(kind="prada")
            assert [al["client_id"] for al in alerts] == ["synthetic"]  # one alert, from whichever replica saw it
            flagged_at = alerts[0]["detail"]["flagged_at"]
            assert flagged_at <= 200
            # both replicas saw every query: the shared state counts all 200, and equals one detector fed them all
            ref = PradaDetector(**_PRADA)
            ref.observe("s", synthetic, digits_labels(a, synthetic))
            state = store.get_state("prada:synthetic")
            assert state is not None and state["queries"] == 200 and state["flagged_at"] == ref.flagged_at("s")
            assert state["statistic"] == pytest.approx(ref.statistic("s"), abs=1e-9)
            for name in streams:
                saved = store.get_state(f"prada:{name}")
                assert saved is not None and saved["queries"] == 150 and saved["flagged_at"] is None
            # every event of both replicas is in the store
            shas = [e["input_sha256"] for e in store.events(client_id="synthetic", limit=1000)]
            assert sorted(shas) == sorted(batch_sha(synthetic[i : i + 1].numpy()) for i in range(200))
            assert store.count("events") == 200 + 3 * 30


def digits_labels(server: GuardServer, x: torch.Tensor) -> torch.Tensor:
    """The labels the guard answered (its own model's argmax)."""
    with torch.no_grad():
        return server.service.target.query(x).argmax(dim=1)


def test_concurrent_requests_on_both_replicas_lose_no_prada_update(tmp_path: Path, digits: Dataset) -> None:
    """Four threads, two per replica, send one client's queries at once: the per-client advisory lock serialises
    them, so the shared state has every query, and it equals a single detector fed the queries in the order the
    events were committed (event ids)."""
    gen = torch.Generator().manual_seed(1)
    x = papernot_stream(digits.x_test[20:30], 160, gen)
    with postgres_server() as url:
        with open_store(url) as st:
            key, _ = create_key(st, "mallory")
        with replicas(url, tmp_path) as (a, b):
            def worker(server: GuardServer, part: torch.Tensor) -> None:
                with httpx.Client(timeout=30) as http:
                    for i in range(0, part.shape[0], 2):
                        _send(http, server.predict_url, key, part[i : i + 2])

            parts = x.reshape(4, 40, 1, 28, 28)
            threads = [threading.Thread(target=worker, args=((a, b)[t % 2], parts[t])) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            store = a.service.store
            events = sorted(store.events(client_id="mallory", limit=1000), key=lambda e: e["id"])
            assert len(events) == 80 and all(e["status"] == 200 for e in events)
            by_sha = {batch_sha(parts[t][i : i + 2].numpy()): parts[t][i : i + 2] for t in range(4)
                      for i in range(0, 40, 2)}
            in_order = torch.cat([by_sha[e["input_sha256"]] for e in events])
            labels = torch.tensor([lab for e in events for lab in e["prediction"]["labels"]])
            ref = PradaDetector(**_PRADA)
            ref.observe("m", in_order, labels)
            state = store.get_state("prada:mallory")
            assert state is not None and state["queries"] == 160
            assert state["stored_total"] == ref.client_state("m", members=False)["stored_total"]  # type: ignore[index]
            assert state["statistic"] == pytest.approx(ref.statistic("m"), abs=1e-9)
            assert state["flagged_at"] == ref.flagged_at("m")
            assert len(store.prada_members("mallory")) == ref.stored("m")
            alerts = store.alerts(kind="prada")
            assert len(alerts) == (0 if ref.flagged_at("m") is None else 1)


def _wait(cond: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_postgres_stopped_mid_run_fails_closed_and_both_replicas_recover(tmp_path: Path, digits: Dataset) -> None:
    natural = torch.cat([digits.x_train, digits.x_test])  # 1797 distinct digits: one input hash per request
    answers: list[tuple[int, int, str]] = []  # (request, status, Retry-After)
    with postgres_control() as pg:
        with open_store(pg.url) as st:
            key, _ = create_key(st, "alice")
        with replicas(pg.url, tmp_path) as servers:
            done = threading.Event()

            def load() -> None:
                with httpx.Client(timeout=30) as http:
                    for i in range(natural.shape[0]):
                        if done.is_set():
                            return
                        r = http.post(servers[i % 2].predict_url, json={"inputs": natural[i : i + 1].tolist()},
                                      headers=bearer(key))
                        answers.append((i, r.status_code, r.headers.get("Retry-After", "")))
                        time.sleep(0.005)

            thread = threading.Thread(target=load)
            thread.start()
            try:
                _wait(lambda: len(answers) >= 40, "40 answers before the fault")
                pg.stop("immediate")  # like a crash of the database server
                _wait(lambda: sum(s == 503 for _, s, _ in answers) >= 20, "20 answers while it is down")
                pg.start()  # WAL recovery
                restarted = len(answers)
                _wait(lambda: sum(s == 200 for _, s, _ in answers[restarted:]) >= 40, "40 answers after restart")
            finally:
                done.set()
                thread.join(timeout=60)
            dropped = sum(srv.service.metrics.value("guard_events_dropped_total") for srv in servers)
        with open_store(pg.url) as st:
            events = st.events(limit=10_000)
            prada = st.get_state("prada:alice")
    statuses = {s for _, s, _ in answers}
    assert statuses <= {200, 503}, statuses  # fail-closed: never a 500, never an answer without its event
    down = [a for a in answers if a[1] == 503]
    assert all(ra == "1" for _, _, ra in down) and len(down) >= 20
    stored = {e["input_sha256"]: e for e in events}
    acked = [i for i, s, _ in answers if s == 200]
    assert all(batch_sha(natural[i : i + 1].numpy()) in stored for i in acked)  # no acknowledged event lost
    # every 503 either has its event (the refusal was recorded) or is counted as dropped: none silently lost
    assert dropped == len(down) - sum(e["status"] == 503 for e in events)
    assert all(s == 200 for _, s, _ in answers[-20:])  # both replicas serve again (reconnected)
    # PRADA state and events were committed together: the state counts exactly the stored answered queries
    assert prada is not None and prada["queries"] == sum(e["n_inputs"] for e in events if e["status"] == 200)


def test_fail_open_answers_while_postgres_is_down_and_counts_every_unrecorded_event(tmp_path: Path,
                                                                                   digits: Dataset) -> None:
    x = digits.x_test[:30]
    with postgres_control() as pg:
        with open_store(pg.url) as st:
            key, _ = create_key(st, "bob")
        with replicas(pg.url, tmp_path, n=1, store={"url": pg.url, "on_error": "fail-open"}) as (srv,), \
                httpx.Client(timeout=30) as http:
            def status(i: int) -> int:
                return http.post(srv.predict_url, json={"inputs": x[i : i + 1].tolist()},
                                 headers=bearer(key)).status_code

            assert [status(i) for i in range(10)] == [200] * 10
            pg.stop("fast")
            assert [status(i) for i in range(10, 20)] == [200] * 10  # answered, unrecorded, counted
            assert srv.service.metrics.value("guard_events_dropped_total") == 10
            pg.start()
            assert [status(i) for i in range(20, 30)] == [200] * 10
            assert srv.service.metrics.value("guard_events_dropped_total") <= 11  # the broken connection, once
            events = srv.service.store.events(limit=100)
    shas = {e["input_sha256"] for e in events}
    assert all(batch_sha(x[i : i + 1].numpy()) in shas for i in range(10))
    assert not any(batch_sha(x[i : i + 1].numpy()) in shas for i in range(10, 20))
    assert sum(batch_sha(x[i : i + 1].numpy()) in shas for i in range(20, 30)) >= 9
