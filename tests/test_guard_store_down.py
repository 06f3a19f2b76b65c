"""The guard's store unreachable: a key that is not in the key cache gets 503 + Retry-After (the key cannot be
checked), never a 500; a cached key works as before (fail-closed 503 / fail-open answered, not recorded); every
admin route answers 503 + Retry-After; each failure is counted in ``guard_store_errors_total``; all recover when
the store is back. SQLite with its connection failing like a lost disk; a real PostgreSQL server stopped (slow)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from sparring.data import Dataset
from sparring.guard.auth import create_key
from tests.guard_helpers import bearer, make_service, running
from tests.guard_pg import postgres_control

pytestmark = pytest.mark.usefixtures("one_thread")


class _LostDisk:
    """A sqlite3 connection whose every statement fails as SQLite does when the database file is gone."""

    def cursor(self) -> _LostDisk:
        return self

    def execute(self, *args: Any) -> Any:
        raise sqlite3.OperationalError("unable to open database file")

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


def _admin_routes_answer_503(http: httpx.Client, url: str, admin: str) -> None:
    h = bearer(admin)
    answers = [http.get(f"{url}/admin/events", headers=h), http.get(f"{url}/admin/alerts", headers=h),
               http.get(f"{url}/admin/keys", headers=h), http.post(f"{url}/admin/keys", json={"client_id": "dave"},
                                                                   headers=h),
               http.delete(f"{url}/admin/keys/0123456789ab", headers=h), http.get(f"{url}/admin/dashboard", headers=h)]
    for r in answers:
        assert r.status_code == 503, (r.request.method, r.request.url.path, r.status_code, r.text[:300])
        assert r.headers["Retry-After"] == "1" and "store is unavailable" in r.json()["error"], r.text[:300]


@pytest.mark.parametrize("on_error", ["fail-closed", "fail-open"])
def test_an_uncached_key_while_the_store_is_down_gets_503_never_500(tmp_path: Path, digits: Dataset,
                                                                    on_error: str) -> None:
    svc = make_service(tmp_path, store={"url": f"sqlite:///{tmp_path / 'guard.db'}", "on_error": on_error},
                       auth={"cache_seconds": 300})
    carol, _ = create_key(svc.store, "carol")  # never used before the fault: not in the key cache
    x = {"inputs": digits.x_test[:1].tolist()}
    with running(svc) as (server, client, admin), httpx.Client(timeout=30) as http:
        assert http.post(server.predict_url, json=x, headers=bearer(client)).status_code == 200  # alice cached
        assert http.get(server.url + "/metrics", headers=bearer(admin)).status_code == 200  # the admin key cached
        real = svc.store._conn
        svc.store._conn = _LostDisk()
        try:
            r = http.post(server.predict_url, json=x, headers=bearer(carol))
            assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text[:300]
            assert "API key cannot be checked" in r.json()["error"] and "store is unavailable" in r.json()["error"]
            assert "unable to open database file" in r.json()["error"] and "scores" not in r.json()
            assert carol not in r.text
            cached = http.post(server.predict_url, json=x, headers=bearer(client))  # as before the change
            if on_error == "fail-closed":
                assert cached.status_code == 503 and "could not be recorded" in cached.json()["error"]
            else:
                assert cached.status_code == 200 and cached.headers["X-Guard-Event"] == "not-recorded"
            _admin_routes_answer_503(http, server.url, admin)
            metrics = http.get(server.url + "/metrics", headers=bearer(admin)).text  # needs no store
        finally:
            svc.store._conn = real
        assert 'guard_store_errors_total{operation="auth"} 1.0' in metrics
        assert 'guard_store_errors_total{operation="admin"} 6.0' in metrics
        assert "guard_events_dropped_total 8.0" in metrics  # the 8 refusals' (and the answer's) events
        r = http.post(server.predict_url, json=x, headers=bearer(carol))  # the store is back
        assert r.status_code == 200 and "X-Guard-Event" not in r.headers
        assert http.get(server.url + "/admin/keys", headers=bearer(admin)).status_code == 200
    events = svc.store.events(limit=10)
    assert events[0]["client_id"] == "carol" and events[0]["status"] == 200
    svc.store.close()


@pytest.mark.slow  # about 7 s here (2 cores, loaded): initdb, a PostgreSQL server started, stopped, restarted
def test_postgres_stopped_an_unseen_key_gets_503_and_admin_routes_too(tmp_path: Path, digits: Dataset) -> None:
    x = {"inputs": digits.x_test[:1].tolist()}
    with postgres_control() as pg:
        svc = make_service(tmp_path, store={"url": pg.url}, auth={"cache_seconds": 300})
        carol, _ = create_key(svc.store, "carol")
        with running(svc) as (server, client, admin), httpx.Client(timeout=30) as http:
            assert http.post(server.predict_url, json=x, headers=bearer(client)).status_code == 200
            assert http.get(server.url + "/admin/keys", headers=bearer(admin)).status_code == 200
            pg.stop("fast")
            r = http.post(server.predict_url, json=x, headers=bearer(carol))
            assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text[:300]
            assert "API key cannot be checked" in r.json()["error"]
            _admin_routes_answer_503(http, server.url, admin)
            pg.start()
            r = http.post(server.predict_url, json=x, headers=bearer(carol))
            assert r.status_code == 200, r.text[:300]
        svc.store.close()
