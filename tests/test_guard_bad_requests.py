"""Thirty-odd kinds of bad request: each answered 4xx with a JSON message naming the problem, each recorded in the
store, and the guard still answering good requests afterwards."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sparring.guard.auth import create_key
from tests.guard_helpers import bearer, make_service, running

pytestmark = pytest.mark.usefixtures("one_thread")

_IMG = [[[0.5] * 28] * 28]  # one valid 1×28×28 example


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    svc = make_service(tmp_path_factory.mktemp("guard-bad"), limits={"max_body": 200_000, "max_batch": 64,
                                                                     "body_timeout": 1.0})
    with running(svc) as (server, client, admin):
        revoked, rec = create_key(svc.store, "mallory")
        svc.store.revoke_key(rec.key_id)
        yield {"svc": svc, "url": server.url, "client": client, "admin": admin, "revoked": revoked}


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# kind -> (method, path, body bytes or None, which key: client|admin|none|forged|malformed|revoked|basic, status,
#          words the message must contain)
CASES: dict[str, tuple[str, str, bytes | None, str, int, str]] = {
    "malformed JSON": ("POST", "/predict", b'{"inputs": [[', "client", 400, "not valid JSON"),
    "empty body": ("POST", "/predict", b"", "client", 400, "body is empty"),
    "JSON array, not object": ("POST", "/predict", b"[1, 2]", "client", 400, "JSON object with key 'inputs'"),
    "missing inputs key": ("POST", "/predict", _json({"x": _IMG}), "client", 400, "key 'inputs'"),
    "unknown extra key": ("POST", "/predict", _json({"inputs": [_IMG], "debug": True}), "client", 400,
                          "unknown keys ['debug']"),
    "NaN literal": ("POST", "/predict", b'{"inputs": [[[[NaN]]]]}', "client", 400, "NaN is not a number JSON allows"),
    "Infinity literal": ("POST", "/predict", b'{"inputs": [[[[Infinity]]]]}', "client", 400, "Infinity is not"),
    "overflowing number": ("POST", "/predict", _json({"inputs": [[[[0.5] * 27 + [1]] * 28]]}).replace(b"1]", b"1e999]"),
                           "client", 400, "NaN or inf"),
    "wrong shape": ("POST", "/predict", _json({"inputs": [[0.5, 0.5]]}), "client", 400, "expects (N, 1, 28, 28)"),
    "no batch axis": ("POST", "/predict", _json({"inputs": _IMG}), "client", 400, "a batch is expected"),
    "channels last": ("POST", "/predict", _json({"inputs": [[[[0.5]] * 28] * 28]}), "client", 400, "channels-last"),
    "ragged lists": ("POST", "/predict", _json({"inputs": [[[0.5] * 28, [0.5]]]}), "client", 400, "rectangular"),
    "strings": ("POST", "/predict", _json({"inputs": [[["a"] * 28] * 28]}), "client", 400, "string values"),
    "booleans": ("POST", "/predict", _json({"inputs": [[[[True] * 28] * 28]]}), "client", 400, "boolean values"),
    "nulls": ("POST", "/predict", _json({"inputs": [[[[None] * 28] * 28]]}), "client", 400, "numbers only"),
    "inputs a number": ("POST", "/predict", _json({"inputs": 3}), "client", 400, "expects (N, 1, 28, 28)"),
    "inputs a string": ("POST", "/predict", _json({"inputs": "0.5"}), "client", 400, "string values"),
    "inputs an object": ("POST", "/predict", _json({"inputs": {"a": 1}}), "client", 400, "numbers only"),
    "empty batch": ("POST", "/predict", _json({"inputs": []}), "client", 400, "expects (N, 1, 28, 28)"),
    "above the bounds": ("POST", "/predict", _json({"inputs": [[[[2.0] * 28] * 28]]}), "client", 400,
                         "outside the declared bounds"),
    "below the bounds": ("POST", "/predict", _json({"inputs": [[[[-5] * 28] * 28]]}), "client", 400,
                         "outside the declared bounds"),
    "huge batch": ("POST", "/predict", _json({"inputs": [0] * 65}), "client", 400, "exceeds the limit of 64"),
    "oversized body": ("POST", "/predict", b"[" * 200_001, "client", 413, "exceeds the limit of 200000 bytes"),
    "invalid UTF-8": ("POST", "/predict", b'{"inputs": "\xff\xfe"}', "client", 400, "not UTF-8"),
    "UTF-16 JSON": ("POST", "/predict", '{"inputs": [1]}'.encode("utf-16"), "client", 400, "not UTF-8"),
    "deeply nested JSON": ("POST", "/predict", b"[" * 100_000 + b"]" * 100_000, "client", 400, "not valid JSON"),
    "missing key": ("POST", "/predict", _json({"inputs": [_IMG]}), "none", 401, "a valid API key is required"),
    "forged key": ("POST", "/predict", _json({"inputs": [_IMG]}), "forged", 401, "not valid"),
    "malformed key": ("POST", "/predict", _json({"inputs": [_IMG]}), "malformed", 401, "not valid"),
    "revoked key": ("POST", "/predict", _json({"inputs": [_IMG]}), "revoked", 401, "not valid"),
    "wrong auth scheme": ("POST", "/predict", _json({"inputs": [_IMG]}), "basic", 401, "a valid API key is required"),
    "client key on admin route": ("GET", "/admin/events", None, "client", 403, "needs an admin key"),
    "SQL-looking client id": ("GET", "/admin/events?client=x%27%20OR%201%3D1%20--", None, "admin", 400,
                              "client id must be"),
    "bad limit": ("GET", "/admin/alerts?limit=-1", None, "admin", 400, "limit must be an integer"),
    "unknown route": ("POST", "/predict/../../etc/passwd", b"{}", "client", 404, "no route"),
    "wrong method": ("GET", "/predict", None, "client", 405, "GET is not allowed"),
    "bad key-creation body": ("POST", "/admin/keys", _json({"client_id": "a b"}), "admin", 400, "client id must be"),
}


def _headers(g: dict[str, Any], which: str) -> dict[str, str]:
    key = {"client": g["client"], "admin": g["admin"], "revoked": g["revoked"],
           "forged": g["client"][:16] + "A" * 43, "malformed": "sg_' OR 1=1 --"}.get(which)
    if which == "basic":
        return {"Authorization": "Basic YWxpY2U6cGFzcw=="}
    return {} if key is None else bearer(key)


@pytest.mark.parametrize("kind", list(CASES))
def test_bad_request_is_refused_with_a_message_and_recorded(guard: dict[str, Any], kind: str) -> None:
    method, path, body, which, status, words = CASES[kind]
    svc = guard["svc"]
    before = svc.store.count("events")
    r = httpx.request(method, guard["url"] + path, content=body, headers={"Content-Type": "application/json",
                                                                           **_headers(guard, which)})
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert svc.store.count("events") == before + 1
    last = svc.store.events(limit=1)[0]
    assert last["status"] == status and last["message"] == r.json()["error"]
    for secret in (guard["client"], guard["admin"]):
        assert secret not in json.dumps(last)
    ok = httpx.post(guard["url"] + "/predict", json={"inputs": [_IMG]}, headers=bearer(guard["client"]))
    assert ok.status_code == 200 and len(ok.json()["scores"][0]) == 10  # the service is unaffected


def test_slow_loris_body_times_out_with_408(guard: dict[str, Any]) -> None:
    host, port = guard["url"].removeprefix("http://").split(":")
    before = guard["svc"].store.count("events")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {guard['client']}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"inputs\": [".encode())
        t0 = time.monotonic()
        for _ in range(3):  # a byte now and then, never the whole body
            time.sleep(0.2)
            s.sendall(b"0")
        answer = s.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 408") and "did not arrive within 1 s" in answer
    assert time.monotonic() - t0 < 5
    assert guard["svc"].store.events(limit=1)[0]["status"] == 408 and guard["svc"].store.count("events") == before + 1
