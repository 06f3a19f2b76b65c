"""Alert webhooks: every committed alert (PRADA, detector rate, drift) POSTed as signed JSON from a background thread.

The store is the source of truth: an alert is handed to the dispatcher only after the transaction holding it is
committed, and each delivery's state lives in the store's ``webhook_deliveries`` table (one row per alert and
webhook: ``pending``, ``delivered`` or ``failed``, the attempts made, the last HTTP status or error). A restarted guard
resumes the rows still ``pending`` and catches up alerts committed after the last one a webhook has a row for, so an
alert is delivered at least once even across a ``kill -9`` (receivers de-duplicate by the payload's ``id``).

Each POST carries ``X-Sparring-Signature: sha256=<hex>``, the HMAC-SHA256 (Krawczyk, Bellare, Canetti 1997, RFC 2104)
of the exact body bytes under the webhook's secret (read from the environment variable ``secret_env`` names, never
from the configuration file), and ``X-Sparring-Delivery: <alert id>``. A receiver checks it with
:func:`verify_signature`. Failed attempts (connection refused, timeout, a non-2xx status) are retried ``retries``
times with exponential backoff (``backoff * 2**k`` seconds, at most ``max_backoff``), then recorded as ``failed``.
Each webhook has its own delivery thread (a dead or hanging receiver delays only its own alerts); a prediction never
waits for any of them.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparring.errors import GuardConfigError, StoreError

if TYPE_CHECKING:
    from sparring.guard.config import WebhookConfig
    from sparring.guard.metrics import GuardMetrics
    from sparring.guard.store import Alert, Store

__all__ = ["ALERT_KINDS", "WebhookDispatcher", "sign", "verify_signature"]

logger = logging.getLogger(__name__)

ALERT_KINDS = ("prada", "detector-rate", "drift")
SIGNATURE_HEADER = "X-Sparring-Signature"

_DDL = {
    "sqlite": "CREATE TABLE IF NOT EXISTS webhook_deliveries (id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id INTEGER "
              "NOT NULL, url TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL, last_status INTEGER, "
              "last_error TEXT, created REAL NOT NULL, updated REAL NOT NULL, UNIQUE (alert_id, url))",
    "postgresql": "CREATE TABLE IF NOT EXISTS webhook_deliveries (id BIGSERIAL PRIMARY KEY, alert_id BIGINT NOT NULL, "
                  "url TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL, last_status INTEGER, "
                  "last_error TEXT, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL, "
                  "UNIQUE (alert_id, url))",
}


def sign(body: bytes, secret: str | bytes) -> str:
    """The ``X-Sparring-Signature`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256 under ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str | bytes) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret`` (constant-time comparison)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def execute(store: Store, sql: str, args: tuple[Any, ...] = (), *, what: str, fetch: bool = False) -> list[Any]:
    """One statement in its own committed transaction on ``store`` (``?`` placeholders, either backend)."""
    with store._tx(what) as cur:  # the Store's transaction: its lock, commit/rollback and StoreError
        cur.execute(store._sql(sql), args)
        return list(cur.fetchall()) if fetch else []


def backend(store: Store) -> str:
    return "sqlite" if store.placeholder == "?" else "postgresql"


class _Lane:
    """One webhook's schedule: a heap of (due time, tie-breaker, event or alert, id) and the thread working it."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, bool, int]] = []
        self.seq = 0
        self.cv = threading.Condition()
        self.busy = 0
        self.thread: threading.Thread | None = None


@dataclass(frozen=True)
class _Hook:
    index: int
    url: str
    kinds: frozenset[str]
    secret: bytes
    timeout: float
    retries: int
    backoff: float
    max_backoff: float


class WebhookDispatcher:
    """Delivers committed alerts to the configured webhooks from one daemon thread (see the module docstring).

    Args:
        hooks: the ``webhooks:`` entries of ``guard.yaml``.
        store: the guard's store (the ``webhook_deliveries`` table is created in it).
        metrics: counts ``guard_webhook_deliveries_total{result}`` (delivered, retried, failed) when given.
        environ: where ``secret_env`` is read (default ``os.environ``).
    """

    def __init__(self, hooks: list[WebhookConfig], store: Store, metrics: GuardMetrics | None = None, *,
                 environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.hooks: list[_Hook] = []
        for i, h in enumerate(hooks):
            secret = env.get(h.secret_env)
            if not secret:
                raise GuardConfigError(f"webhooks.{i}: the environment variable {h.secret_env!r} (secret_env) is "
                                       "not set or empty; export the webhook's signing secret in it before starting "
                                       "the guard.")
            self.hooks.append(_Hook(i, h.url, frozenset(h.kinds or ALERT_KINDS), secret.encode(), h.timeout,
                                    h.retries, h.backoff, h.max_backoff))
        self.store = store
        self.metrics = metrics
        execute(store, _DDL[backend(store)], what="create the webhook_deliveries table")
        self._lanes = [_Lane() for _ in self.hooks]  # one thread per webhook: a dead one does not delay the others
        self._stopped = False
        self._resume()
        for hook, lane in zip(self.hooks, self._lanes, strict=True):
            lane.thread = threading.Thread(target=self._run, args=(hook, lane), daemon=True,
                                           name=f"sparring-guard-webhook-{hook.index}")
            lane.thread.start()

    # ------------------------------------------------------------------ producer side (never blocks on delivery)
    def submit(self, event_id: int, alerts: list[Alert]) -> None:
        """Queue the alerts of a committed event (called after the commit; returns at once)."""
        for h in self.hooks:
            if any(a.kind in h.kinds for a in alerts):
                self._push(0.0, h.index, True, event_id)

    def _push(self, due: float, hook: int, is_event: bool, ident: int) -> None:
        lane = self._lanes[hook]
        with lane.cv:
            lane.seq += 1
            heapq.heappush(lane.heap, (due, lane.seq, is_event, ident))
            lane.cv.notify()

    def _resume(self) -> None:
        """After a restart: retry pending rows, and catch up alerts newer than each webhook's newest row; rows of
        alerts retention has deleted are deleted too."""
        execute(self.store, "DELETE FROM webhook_deliveries WHERE alert_id NOT IN (SELECT id FROM alerts)",
                what="apply retention to webhook deliveries")
        for h in self.hooks:
            rows = execute(self.store, "SELECT alert_id FROM webhook_deliveries WHERE url = ? AND status = 'pending'",
                           (h.url,), what="read pending webhook deliveries", fetch=True)
            for (alert_id,) in rows:
                self._push(0.0, h.index, False, int(alert_id))
            newest = execute(self.store, "SELECT MAX(alert_id) FROM webhook_deliveries WHERE url = ?", (h.url,),
                             what="read webhook deliveries", fetch=True)[0][0]
            if newest is None:
                continue  # a new webhook: alerts from before it was configured are not sent
            missed = execute(self.store, "SELECT id, kind FROM alerts WHERE id > ? ORDER BY id", (int(newest),),
                             what="read alerts to deliver", fetch=True)
            for alert_id, kind in missed:
                if kind in h.kinds:
                    self._new_row(h, int(alert_id))
                    self._push(0.0, h.index, False, int(alert_id))

    # ------------------------------------------------------------------ worker
    def _run(self, h: _Hook, lane: _Lane) -> None:
        while True:
            with lane.cv:
                while not self._stopped and (not lane.heap or lane.heap[0][0] > time.monotonic()):
                    lane.cv.wait(None if not lane.heap else max(0.0, lane.heap[0][0] - time.monotonic()))
                if self._stopped:
                    return
                _, _, is_event, ident = heapq.heappop(lane.heap)
                lane.busy += 1
            try:
                if is_event:
                    self._fan_out(h, ident)
                else:
                    self._attempt(h, ident)
            except Exception:  # a store or programming error must not end the thread
                logger.exception("webhook %d: delivery failed unexpectedly", h.index)
            finally:
                with lane.cv:
                    lane.busy -= 1
                    lane.cv.notify_all()

    def _fan_out(self, h: _Hook, event_id: int) -> None:
        rows = execute(self.store, "SELECT id, kind FROM alerts WHERE event_id = ? ORDER BY id", (event_id,),
                       what="read the alerts of an event", fetch=True)
        for alert_id, kind in rows:
            if kind in h.kinds and self._new_row(h, int(alert_id)):
                self._attempt(h, int(alert_id))

    def _new_row(self, h: _Hook, alert_id: int) -> bool:
        now = time.time()
        try:
            execute(self.store, "INSERT INTO webhook_deliveries (alert_id, url, status, attempts, created, updated) "
                    "VALUES (?,?,'pending',0,?,?)", (alert_id, h.url, now, now), what="record a webhook delivery")
        except StoreError:
            row = execute(self.store, "SELECT status FROM webhook_deliveries WHERE alert_id = ? AND url = ?",
                          (alert_id, h.url), what="read a webhook delivery", fetch=True)
            if row:
                return False  # another replica (or the catch-up) already owns it
            raise
        return True

    def _attempt(self, h: _Hook, alert_id: int) -> None:
        rows = execute(self.store, "SELECT id, ts, client_id, kind, detail, event_id FROM alerts WHERE id = ?",
                       (alert_id,), what="read an alert", fetch=True)
        (attempts,) = execute(self.store, "SELECT attempts FROM webhook_deliveries WHERE alert_id = ? AND url = ?",
                              (alert_id, h.url), what="read a webhook delivery", fetch=True)[0]
        if not rows:  # removed by retention meanwhile
            self._update(h, alert_id, "failed", int(attempts), None, "the alert is no longer in the store")
            return
        r = rows[0]
        body = json.dumps({"id": int(r[0]), "ts": float(r[1]), "client_id": r[2], "kind": r[3],
                           "detail": json.loads(r[4]), "event_id": r[5], "source": "sparring-guard"},
                          sort_keys=True, allow_nan=False).encode()
        status, error = self._post(h, body, alert_id)
        attempts = int(attempts) + 1
        if status is not None and 200 <= status < 300:
            self._update(h, alert_id, "delivered", attempts, status, None)
            self._count("delivered")
        elif attempts <= h.retries:
            self._update(h, alert_id, "pending", attempts, status, error)
            self._count("retried")
            self._push(time.monotonic() + min(h.max_backoff, h.backoff * 2 ** (attempts - 1)), h.index, False,
                       alert_id)
        else:
            self._update(h, alert_id, "failed", attempts, status, error)
            self._count("failed")
            logger.warning("webhook %d gave up on alert %d after %d attempts: %s", h.index, alert_id, attempts, error)

    def _post(self, h: _Hook, body: bytes, alert_id: int) -> tuple[int | None, str | None]:
        req = urllib.request.Request(h.url, data=body, method="POST", headers={
            "Content-Type": "application/json", SIGNATURE_HEADER: sign(body, h.secret),
            "X-Sparring-Delivery": str(alert_id), "User-Agent": "sparring-guard"})
        try:
            with urllib.request.urlopen(req, timeout=h.timeout) as resp:  # http(s) only: checked in config
                return int(resp.status), None
        except urllib.error.HTTPError as exc:
            return int(exc.code), f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return None, f"{type(reason).__name__}: {reason}"[:500]

    def _update(self, h: _Hook, alert_id: int, status: str, attempts: int, code: int | None,
                error: str | None) -> None:
        execute(self.store, "UPDATE webhook_deliveries SET status = ?, attempts = ?, last_status = ?, last_error = ?, "
                "updated = ? WHERE alert_id = ? AND url = ?", (status, attempts, code, error, time.time(), alert_id,
                                                               h.url), what="record a webhook delivery")

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(result).inc()

    # ------------------------------------------------------------------ reading and stopping
    def deliveries(self, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Rows of ``webhook_deliveries``, newest first."""
        cols = ("id", "alert_id", "url", "status", "attempts", "last_status", "last_error", "created", "updated")
        where, args = ("WHERE status = ?", (status,)) if status is not None else ("", ())
        rows = execute(self.store, f"SELECT {', '.join(cols)} FROM webhook_deliveries {where} ORDER BY id DESC "
                       "LIMIT ?", (*args, int(limit)), what="read webhook deliveries", fetch=True)
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is due or being delivered (retries scheduled later still count); for tests."""
        deadline = time.monotonic() + timeout
        for lane in self._lanes:
            with lane.cv:
                while lane.heap or lane.busy:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    lane.cv.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (pending rows stay in the store and are resumed by the next start)."""
        self._stopped = True
        for lane in self._lanes:
            with lane.cv:
                lane.cv.notify_all()
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(timeout)

    def __repr__(self) -> str:
        return f"WebhookDispatcher({len(self.hooks)} webhook(s))"
