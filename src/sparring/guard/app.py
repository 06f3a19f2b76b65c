"""The guard's HTTP API (FastAPI, served by uvicorn), speaking the protocol of :mod:`sparring.serving`.

Routes (every one needs an API key: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``):

``POST /predict`` (client or admin) ``{"inputs": [...]}`` → ``{"scores": [[...]]}`` or ``{"labels": [...]}``, plus
    ``"guard": {"flagged": [detector, ...]}`` when a detector with policy ``flag`` fired; 403 naming the detector
    when one with policy ``reject`` fired. 400 bad input, 401 no or unknown key, 408 body too slow, 411/413 missing
    or too large body, 429 rate limit (``Retry-After``), 502/504 upstream failed or timed out, 503 queue full or
    store unavailable (``Retry-After``; also for a key not in the key cache while the store is down).
``GET /health`` → ``{"status": "ok", "spec": ..., "output": ..., "score_kind": ...}`` as :mod:`sparring.serving`.
``GET /metrics`` (admin) Prometheus text format.
``GET /admin/dashboard`` (admin; a browser may send the key once as ``?key=`` for a session cookie) the HTML
    dashboard of :mod:`sparring.guard.dashboard`.
``GET /admin/events``, ``GET /admin/alerts`` (``?client=&decision=&kind=&limit=``), ``GET /admin/config``,
    ``GET /admin/keys``, ``POST /admin/keys {"client_id": ..., "role": "client"|"admin"}`` (the key, once),
    ``DELETE /admin/keys/{key_id}`` (admin).

Every request, refused ones included, is recorded in the store before its answer is sent; keys never are.
This module imports FastAPI (the ``guard`` extra); :mod:`sparring.guard` itself does not.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from typing import Any

import numpy as np
from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sparring.errors import ParameterError, SparringError, StoreError
from sparring.guard.auth import Principal, check_client_id, create_key
from sparring.guard.dashboard import add_dashboard
from sparring.guard.service import GuardService, Outcome

__all__ = ["create_app", "json_body_bytes"]

logger = logging.getLogger(__name__)

_NUMERIC_KINDS = "iuf"
_NUMBER_BYTES = 25  # "-1.2345678901234567e-05, ": a float32 written as Python/JS write a double, with its separator
_TEXT_CHAR_BYTES = 6  # "\\uXXXX": a BMP character written as an escape (ensure_ascii)
_DEFAULT_BODY = 4 * 1024 * 1024
_MAX_DEFAULT_BODY = 64 * 1024 * 1024


def json_body_bytes(max_batch: int, shape: tuple[int, ...] | None = None, *, max_chars: int | None = None) -> int:
    """The largest request a full batch takes in JSON: ``max_batch`` examples of ``shape`` at up to 25 bytes a
    number plus 4 per nested list, or ``max_batch`` messages of ``max_chars`` characters at up to 6 bytes each."""
    if shape is None:
        per = (max_chars or 0) * _TEXT_CHAR_BYTES + 4
    else:
        lists = sum(math.prod(shape[:k]) for k in range(len(shape)))
        per = math.prod(shape) * _NUMBER_BYTES + lists * 4 + 4
    return max_batch * per + 64


def _body_limit(service: GuardService, text: bool) -> int:
    """``limits.max_body`` or, unset, what a full batch needs (at least 4 MiB, at most 64 MiB); logs at start-up
    when the limit cannot admit a full ``max_batch``, naming the limits to change."""
    lim = service.config.limits
    if text:
        need = json_body_bytes(lim.max_batch, max_chars=lim.max_text_chars)
        what = f"{lim.max_batch} messages of limits.max_text_chars={lim.max_text_chars} characters"
    else:
        shape = tuple(service.spec.shape)
        need = json_body_bytes(lim.max_batch, shape)
        what = f"{lim.max_batch} examples of shape {list(shape)}"
    limit = lim.max_body if lim.max_body is not None else max(_DEFAULT_BODY, min(need, _MAX_DEFAULT_BODY))
    if limit < need:
        fits = max(1, lim.max_batch * limit // need)
        logger.warning("limits.max_body is %d bytes but a full batch (limits.max_batch=%s) takes up to %d bytes in "
                       "JSON; raise limits.max_body to %d or lower limits.max_batch to %d, else such batches get 413.",
                       limit, what, need, need, fits)
    return limit


class _BodyTooLarge(Exception):
    pass


class _Texts(list[str]):
    """A validated batch of messages (text models)."""


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows; send finite numbers only")


def create_app(service: GuardService) -> Any:
    """The FastAPI application around ``service`` (needs the ``guard`` extra: fastapi, uvicorn, prometheus-client)."""
    app = FastAPI(title="sparring guard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    cfg = service.config
    from sparring.guard.text import TextGuardService, validate_request_texts

    text_service = service if isinstance(service, TextGuardService) else None
    body_limit = _body_limit(service, text_service is not None)

    def answer(o: Outcome, started: float, route: str) -> Any:
        service.metrics.latency.labels(route).observe(time.perf_counter() - started)
        if o.event_id is None:  # the store failed (fail-open: answered anyway; counted and logged): say so
            o.headers["X-Guard-Event"] = "not-recorded"
        return JSONResponse(o.body, status_code=o.status, headers=o.headers)

    async def refuse(status: int, decision: str, message: str, request: Any, started: float, *,
                     who: Principal | None = None, body_sha: str | None = None,
                     headers: dict[str, str] | None = None) -> Any:
        o = await to_thread.run_sync(lambda: service.refuse(
            status, decision, message, path=request.url.path, client_id=None if who is None else who.client_id,
            body_sha=body_sha, headers=headers))
        if status in (408, 411, 413):
            o.headers["Connection"] = "close"
        return answer(o, started, _route(request))

    async def authorise(request: Any, started: float, role: str = "client") -> tuple[Principal | None, Any]:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization")
        if key is None and auth is not None:
            scheme, _, value = auth.partition(" ")
            key = value.strip() if scheme.lower() == "bearer" else None
        try:
            who = service.keys.cached(key)  # the usual case: no thread hop
            if who is None and key:
                who = await to_thread.run_sync(service.keys.verify, key)
        except StoreError as exc:  # an uncached key and the store down: it cannot be checked; never a 500
            return None, await store_unavailable(request, started, "auth", "the API key cannot be checked: it is "
                                                 "not in this guard's key cache and the guard's store is "
                                                 f"unavailable ({exc})")
        if who is None:
            msg = ("a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' (keys "
                   "come from `sparring guard keys create`)." if not key else "the API key is not valid (unknown, "
                   "malformed or revoked).")
            return None, await refuse(401, "unauthorised", msg, request, started,
                                      headers={"WWW-Authenticate": "Bearer"})
        if role == "admin" and who.role != "admin":
            return None, await refuse(403, "forbidden", f"this route needs an admin key; client {who.client_id!r} "
                                      "has a client key.", request, started, who=who)
        return who, None

    async def store_unavailable(request: Any, started: float, operation: str, what: str) -> Any:
        """503 + Retry-After when the store cannot be read or written (counted in ``guard_store_errors_total``);
        the refusal's event is recorded if the store takes it, else counted as dropped."""
        service.metrics.store_errors.labels(operation).inc()
        ra = str(cfg.queue.retry_after)
        logger.warning("the guard store is unavailable (%s %s): %s", request.method, request.url.path, what)
        return await refuse(503, "error", f"{what}; retry after {ra} s.", request, started,
                            headers={"Retry-After": ra})

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> Any:
        """Any route whose store call failed (admin routes, the dashboard): 503 + Retry-After, never a 500."""
        return await store_unavailable(request, time.perf_counter(), "admin",
                                       f"the guard's store is unavailable ({exc})")

    def keep_rejected(o: Outcome, who: Principal, inputs: Any) -> None:
        """The fired examples of a committed detector rejection, for the dashboard (written off this thread)."""
        g = o.body.get("guard") if o.status == 403 else None
        if isinstance(g, dict) and "rejected_by" in g and o.event_id is not None:
            samples.submit(o.event_id, who.client_id, str(g["rejected_by"]), inputs, list(g["examples"]))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
        started = time.perf_counter()
        msg = (f"no route {request.method} {request.url.path}; use POST /predict, GET /health, GET /metrics or "
               "/admin/..." if exc.status_code == 404 else f"{request.method} is not allowed on {request.url.path}"
               if exc.status_code == 405 else str(exc.detail))
        return await refuse(exc.status_code, "invalid", msg, request, started)

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        started = time.perf_counter()
        who, refused = await authorise(request, started)
        if refused is not None:
            return refused
        assert who is not None
        wait = service.rate.take(who.client_id)
        if wait > 0:
            secs = str(max(1, int(np.ceil(wait))))
            return await refuse(429, "rate-limited", f"client {who.client_id!r} is over its rate limit "
                                f"({cfg.rate_limit.rate:g}/s, burst {cfg.rate_limit.burst}); retry after {secs} s.",
                                request, started, who=who, headers={"Retry-After": secs})
        if not service.enter_queue():
            service.metrics.queue_rejected.inc()
            ra = str(cfg.queue.retry_after)
            return await refuse(503, "busy", f"the guard's work queue is full ({cfg.queue.max_size} requests); "
                                f"retry after {ra} s.", request, started, who=who, headers={"Retry-After": ra})
        try:
            got = await _read_json(request, started, who)
            if isinstance(got, _Texts) and text_service is not None:
                texts = list(got)
                o = await to_thread.run_sync(lambda: text_service.predict_texts(who, texts, path=request.url.path))
                keep_rejected(o, who, texts)
                return answer(o, started, "/predict")
            if not isinstance(got, np.ndarray):
                return got
            try:
                x, _ = service.spec.validate(got)
            except SparringError as exc:
                return await refuse(400, "invalid", str(exc), request, started, who=who, body_sha=_sha(got))
            o = await to_thread.run_sync(lambda: service.predict(who, x, path=request.url.path))
            keep_rejected(o, who, x)
            return answer(o, started, "/predict")
        finally:
            service.leave_queue()

    async def _read_json(request: Any, started: float, who: Principal) -> Any:
        limit = body_limit
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await refuse(400, "invalid", f"bad Content-Length {length!r}.", request, started, who=who)
            if int(length) > limit:
                return await refuse(413, "invalid", f"request body of {length} bytes exceeds the limit of {limit} "
                                    "bytes; send smaller batches.", request, started, who=who)
        chunks: list[bytes] = []

        async def read() -> None:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _BodyTooLarge
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), cfg.limits.body_timeout)
        except _BodyTooLarge:
            return await refuse(413, "invalid", f"request body exceeds the limit of {limit} bytes; send smaller "
                                "batches.", request, started, who=who)
        except TimeoutError:
            return await refuse(408, "invalid", f"the request body did not arrive within {cfg.limits.body_timeout:g}"
                                " s; send it whole and promptly.", request, started, who=who)
        body = b"".join(chunks)
        sha = hashlib.sha256(body).hexdigest()
        if not body:
            return await refuse(400, "invalid", "the request body is empty; send {\"inputs\": [[...], ...]}.",
                                request, started, who=who, body_sha=sha)
        try:
            payload = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as exc:
            return await refuse(400, "invalid", f"the request body is not UTF-8 ({exc.reason} at byte {exc.start}).",
                                request, started, who=who, body_sha=sha)
        except (ValueError, RecursionError) as exc:
            return await refuse(400, "invalid", f"the request body is not valid JSON ({str(exc)[:200]}); send "
                                "{\"inputs\": [[...], ...]}.", request, started, who=who, body_sha=sha)
        if not isinstance(payload, dict) or "inputs" not in payload:
            got = sorted(payload)[:10] if isinstance(payload, dict) else type(payload).__name__
            return await refuse(400, "invalid", f"the request must be a JSON object with key 'inputs' (a batch); got "
                                f"{got}.", request, started, who=who, body_sha=sha)
        extra = sorted(set(payload) - {"inputs"})
        if extra:
            return await refuse(400, "invalid", f"unknown keys {extra[:10]} in the request; only 'inputs' is read.",
                                request, started, who=who, body_sha=sha)
        inputs = payload["inputs"]
        if isinstance(inputs, list) and len(inputs) > cfg.limits.max_batch:
            return await refuse(400, "invalid", f"a batch of {len(inputs)} examples exceeds the limit of "
                                f"{cfg.limits.max_batch}; split it.", request, started, who=who, body_sha=sha)
        if text_service is not None:
            try:
                return _Texts(validate_request_texts(inputs, max_batch=cfg.limits.max_batch,
                                                     max_chars=cfg.limits.max_text_chars))
            except SparringError as exc:
                return await refuse(400, "invalid", str(exc), request, started, who=who, body_sha=sha)
        try:
            arr = np.asarray(inputs)
        except (TypeError, ValueError) as exc:
            return await refuse(400, "invalid", f"'inputs' must be a rectangular batch of numbers (nested lists); "
                                f"{str(exc)[:200]}.", request, started, who=who, body_sha=sha)
        if arr.dtype.kind not in _NUMERIC_KINDS:
            return await refuse(400, "invalid", f"'inputs' must hold numbers only; got {_kind_name(arr)} values.",
                                request, started, who=who, body_sha=sha)
        return arr.astype(np.float32, copy=False)

    @app.get("/health")
    async def health(request: Request) -> Any:
        started = time.perf_counter()
        _, refused = await authorise(request, started)
        if refused is not None:
            return refused
        if text_service is not None:
            return JSONResponse(text_service.health())
        return JSONResponse({"status": "ok", "spec": service.spec.to_dict(), "output": service.output,
                             "score_kind": service.target.view_output if service.output == "scores" else None})

    @app.get("/metrics")
    async def metrics(request: Request) -> Any:
        started = time.perf_counter()
        _, refused = await authorise(request, started, "admin")
        if refused is not None:
            return refused
        data, ctype = service.metrics.render()
        return Response(data, media_type=ctype)

    async def admin_query(request: Any, started: float, what: str) -> Any:
        q = request.query_params
        client = q.get("client")
        try:
            if client is not None:
                check_client_id(client)
            limit = int(q.get("limit", "100"))
            if not 1 <= limit <= 10_000:
                raise ValueError
        except ParameterError as exc:
            return await refuse(400, "invalid", str(exc), request, started)
        except ValueError:
            return await refuse(400, "invalid", f"limit must be an integer 1..10000; got {q.get('limit')!r}.",
                                request, started)
        try:
            if what == "events":
                rows = await to_thread.run_sync(lambda: service.store.events(
                    client_id=client, decision=q.get("decision"), limit=limit))
            else:
                rows = await to_thread.run_sync(lambda: service.store.alerts(
                    client_id=client, kind=q.get("kind"), limit=limit))
        except StoreError as exc:
            return await store_unavailable(request, started, "admin", f"the guard's store is unavailable ({exc})")
        return JSONResponse({what: rows})

    @app.get("/admin/events")
    async def admin_events(request: Request) -> Any:
        started = time.perf_counter()
        _, refused = await authorise(request, started, "admin")
        return refused if refused is not None else await admin_query(request, started, "events")

    @app.get("/admin/alerts")
    async def admin_alerts(request: Request) -> Any:
        started = time.perf_counter()
        _, refused = await authorise(request, started, "admin")
        return refused if refused is not None else await admin_query(request, started, "alerts")

    @app.get("/admin/config")
    async def admin_config(request: Request) -> Any:
        started = time.perf_counter()
        _, refused = await authorise(request, started, "admin")
        return refused if refused is not None else JSONResponse(cfg.public())

    @app.get("/admin/keys")
    async def admin_keys(request: Request) -> Any:
        started = time.perf_counter()
        _, refused = await authorise(request, started, "admin")
        if refused is not None:
            return refused
        return JSONResponse({"keys": await to_thread.run_sync(service.store.keys)})

    @app.post("/admin/keys")
    async def admin_create_key(request: Request) -> Any:
        started = time.perf_counter()
        who, refused = await authorise(request, started, "admin")
        if refused is not None:
            return refused
        try:
            body = json.loads((await request.body()).decode("utf-8"))
            if not isinstance(body, dict) or set(body) - {"client_id", "role"} or "client_id" not in body:
                raise ParameterError("send {\"client_id\": \"...\", \"role\": \"client\" | \"admin\"}.")
            key, rec = await to_thread.run_sync(lambda: create_key(service.store, body["client_id"],
                                                                   body.get("role", "client")))
        except (ValueError, UnicodeDecodeError) as exc:
            return await refuse(400, "invalid", f"cannot create the key: {exc}", request, started, who=who)
        await to_thread.run_sync(lambda: service.record(_admin_event(who, request.url.path, 201, rec.key_id)))
        return JSONResponse({"key": key, "key_id": rec.key_id, "client_id": rec.client_id, "role": rec.role},
                            status_code=201)

    @app.delete("/admin/keys/{key_id}")
    async def admin_revoke_key(key_id: str, request: Request) -> Any:
        started = time.perf_counter()
        who, refused = await authorise(request, started, "admin")
        if refused is not None:
            return refused
        done = await to_thread.run_sync(service.store.revoke_key, key_id)
        service.keys.forget(key_id)
        if not done:
            return await refuse(404, "invalid", f"no active key with id {key_id[:20]!r}.", request, started, who=who)
        await to_thread.run_sync(lambda: service.record(_admin_event(who, request.url.path, 200, key_id)))
        return JSONResponse({"revoked": key_id})

    samples = add_dashboard(app, service, authorise, refuse)  # GET /admin/dashboard
    return app


def _admin_event(who: Principal | None, path: str, status: int, key_id: str) -> Any:
    from sparring.guard.store import Event

    return Event(None if who is None else who.client_id, path, status, "ok", message=f"key {key_id}")


def _route(request: Any) -> str:
    p = request.url.path
    return p if p in ("/predict", "/health", "/metrics") or (p.startswith("/admin/") and p.count("/") == 2) else "other"


def _sha(arr: np.ndarray) -> str:
    return hashlib.sha256(repr(arr.shape).encode() + np.ascontiguousarray(arr).tobytes()).hexdigest()


def _kind_name(arr: np.ndarray) -> str:
    return {"b": "boolean", "U": "string", "S": "bytes", "O": "mixed or null", "c": "complex"}.get(arr.dtype.kind,
                                                                                                  str(arr.dtype))
