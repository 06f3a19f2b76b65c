"""The guard's durable store: events, alerts, client keys and detector state, in SQLite or PostgreSQL.

Every request's event (and any alert and detector state it changed) is written in one transaction that is
committed before the response is sent. SQLite runs in WAL mode with ``synchronous=FULL``: a committed transaction
survives a process kill and a power cut (SQLite docs, "Write-Ahead Logging" and "PRAGMA synchronous"). PostgreSQL
(``postgresql://`` URLs, psycopg 3) commits with its default ``synchronous_commit=on``, so several guard replicas
can share one database: a replica takes a per-client advisory lock (:meth:`Store.client_lock`) before it reads a
client's detector state and holds it until that request's transaction is committed, so two replicas never
read-modify-write the same client's PRADA state at once (no lost update); the drift window is shared through
``drift_pending`` and a transaction-scoped try-lock (:meth:`Store.record_many`). A broken connection (the server
restarted) is reopened on the next use.

Tables: ``events`` (one row per request: client, time, SHA-256 of the body's inputs, prediction, detector outputs,
decision, status), ``alerts`` (PRADA and drift alarms), ``clients`` (API keys: only a salted scrypt hash is kept),
``detector_state`` (JSON state by name, e.g. ``prada:<client>`` and ``drift``) and ``prada_members`` (the stored
queries of each client's PRADA growing sets, float32, written incrementally by sequence number) and
``drift_pending`` (answered confidences, float64, appended with their event and consumed into the ``drift`` state
by whichever replica holds the drift lock: :meth:`Store.record_many`, :class:`~sparring.guard.drift.SharedDrift`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparring.errors import StoreError

if TYPE_CHECKING:
    from sparring.guard.drift import SharedDrift

__all__ = ["Alert", "Event", "KeyRecord", "PostgresStore", "SQLiteStore", "Store", "StoreBatch", "open_store"]

_TABLES = ("events", "alerts", "clients", "detector_state", "prada_members", "drift_pending")
_DRIFT_LOCK = 7190020  # PostgreSQL advisory lock key of the shared drift window (7190019: schema creation)


@dataclass
class Event:
    """One request as recorded (never the API key; the client id only once the key is verified)."""

    client_id: str | None
    path: str
    status: int
    decision: str  # ok | flag | reject | invalid | unauthorised | forbidden | rate-limited | busy | error
    input_sha256: str | None = None
    n_inputs: int | None = None
    prediction: Any = None
    detectors: Any = None
    message: str | None = None
    latency_ms: float | None = None
    ts: float = field(default_factory=time.time)


@dataclass
class Alert:
    client_id: str | None
    kind: str  # prada | drift
    detail: dict[str, Any]
    ts: float = field(default_factory=time.time)


@dataclass
class KeyRecord:
    key_id: str
    client_id: str
    role: str
    salt: bytes
    hash: bytes
    created: float
    revoked: float | None


@dataclass
class StoreBatch:
    """What one request writes, in one transaction: its event, alerts, detector states and PRADA members."""

    event: Event
    alerts: list[Alert] = field(default_factory=list)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: list[tuple[str, int, int, bytes]] = field(default_factory=list)  # client, seq, class, float32 bytes
    evict_below: dict[str, int] = field(default_factory=dict)  # client -> drop members with seq <= this
    drift: list[float] | None = None  # answered confidences for the shared drift window (drift_pending)


class Store(ABC):
    """The small interface the guard needs; SQL is shared, placeholders and DDL differ per backend."""

    placeholder = "?"
    shared = False  # True where several guard processes may share the database (PostgreSQL)
    _ddl: tuple[str, ...] = ()
    _conn: Any

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _errors(self) -> tuple[type[BaseException], ...]: ...

    @property
    @abstractmethod
    def url(self) -> str: ...

    def _alive(self) -> bool:
        """Whether the connection is usable (PostgreSQL: not closed by a server restart or a network error)."""
        return True

    @contextmanager
    def client_lock(self, client_id: str) -> Iterator[None]:
        """Hold one client's detector state against other processes sharing the store, for a read-modify-write.

        A no-op for SQLite (one guard process per database file); PostgreSQL takes a session advisory lock keyed
        by the client id. Raises :class:`~sparring.errors.StoreError` when the lock cannot be taken."""
        yield

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    @contextmanager
    def _tx(self, what: str) -> Iterator[Any]:
        with self._lock:
            try:
                if not self._alive():  # e.g. the server restarted: reconnect (raises while it is still down)
                    self._conn = self._connect()
                cur = self._conn.cursor()
                try:
                    yield cur
                    self._conn.commit()
                except BaseException:
                    if self._alive():
                        self._conn.rollback()
                    raise
                finally:
                    if self._alive():
                        cur.close()
            except self._errors() as exc:
                raise StoreError(f"the guard store ({self.url}) failed to {what}: {type(exc).__name__}: {exc}. "
                                 "Check that the database is reachable, not locked by another program, and has "
                                 "free disk space.") from exc

    def _init_schema(self) -> None:
        with self._tx("create its tables") as cur:
            for stmt in self._ddl:
                cur.execute(stmt)

    # ------------------------------------------------------------------ writing
    def record(self, batch: StoreBatch) -> int:
        """Write a request's event, alerts, states and PRADA members in one committed transaction; the event id."""
        return self.record_many([batch])[0]

    def record_many(self, batches: list[StoreBatch], drift: SharedDrift | None = None) -> list[int]:
        """Write several requests in one committed transaction (group commit: one fsync for all), in order.

        With ``drift``, batches' confidences are appended to ``drift_pending`` and, if this process gets the drift
        lock (:meth:`_drift_lock`), every pending row, this group's and other replicas', is consumed into the
        ``drift`` state in the same transaction (then ``drift.commit()`` adopts it, or ``drift.abort()``)."""
        ids = []
        try:
            with self._tx("record an event") as cur:
                for batch in batches:
                    ids.append(self._write(cur, batch))
                if drift is not None and any(b.drift for b in batches):
                    self._advance_drift(cur, drift)
        except BaseException:
            if drift is not None:
                drift.abort()
            raise
        return ids

    def _drift_lock(self, cur: Any) -> bool:
        """Whether this transaction may consume the pending drift values: SQLite writers are serialised by the
        database itself (one writer at a time), so always."""
        return True

    def _advance_drift(self, cur: Any, drift: SharedDrift) -> None:
        if not self._drift_lock(cur):
            return  # another replica is consuming: these values wait for the next transaction that gets the lock
        cur.execute("DELETE FROM drift_pending RETURNING id, event_id, vals")  # one statement: one snapshot
        rows = sorted((int(r[0]), int(r[1]), bytes(r[2])) for r in cur.fetchall())
        if not rows:
            return
        cur.execute(self._sql("SELECT state FROM detector_state WHERE name = ?"), ("drift",))
        row = cur.fetchone()
        saved = None if row is None else dict(json.loads(row[0]))
        state, results = drift.advance(saved, [(eid, np.frombuffer(v, dtype=np.float64)) for _, eid, v in rows])
        now = time.time()
        cur.execute(self._sql(
            "INSERT INTO detector_state (name, state, updated) VALUES (?,?,?) ON CONFLICT (name) DO UPDATE "
            "SET state = excluded.state, updated = excluded.updated"), ("drift", json.dumps(state, allow_nan=False),
                                                                       now))
        for event_id, res in results:
            if res["drift"]:
                cur.execute(self._sql("INSERT INTO alerts (ts, client_id, kind, detail, event_id) VALUES "
                                      "(?,?,?,?,?)"), (now, None, "drift", json.dumps(res, allow_nan=False), event_id))

    def _write(self, cur: Any, batch: StoreBatch) -> int:
        e = batch.event
        cur.execute(self._sql(
            "INSERT INTO events (ts, client_id, path, status, decision, input_sha256, n_inputs, prediction, "
            "detectors, message, latency_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?) RETURNING id"),
            (e.ts, e.client_id, e.path, e.status, e.decision, e.input_sha256, e.n_inputs,
             _dump(e.prediction), _dump(e.detectors), e.message, e.latency_ms))
        event_id = int(cur.fetchone()[0])
        for a in batch.alerts:
            cur.execute(self._sql("INSERT INTO alerts (ts, client_id, kind, detail, event_id) VALUES (?,?,?,?,?)"),
                        (a.ts, a.client_id, a.kind, json.dumps(a.detail, allow_nan=False), event_id))
        for name, st in batch.states.items():
            cur.execute(self._sql(
                "INSERT INTO detector_state (name, state, updated) VALUES (?,?,?) ON CONFLICT (name) DO UPDATE "
                "SET state = excluded.state, updated = excluded.updated"),
                (name, json.dumps(st, allow_nan=False), e.ts))
        for m in batch.members:
            cur.execute(self._sql("INSERT INTO prada_members (client_id, seq, label, x) VALUES (?,?,?,?)"), m)
        for client, below in batch.evict_below.items():
            cur.execute(self._sql("DELETE FROM prada_members WHERE client_id = ? AND seq <= ?"), (client, below))
        if batch.drift:
            cur.execute(self._sql("INSERT INTO drift_pending (event_id, vals) VALUES (?,?)"),
                        (event_id, np.asarray(batch.drift, dtype=np.float64).tobytes()))
        return event_id

    def add_key(self, rec: KeyRecord) -> None:
        with self._tx("store a key") as cur:
            cur.execute(self._sql("INSERT INTO clients (key_id, client_id, role, salt, hash, created, revoked) "
                                  "VALUES (?,?,?,?,?,?,?)"),
                        (rec.key_id, rec.client_id, rec.role, rec.salt, rec.hash, rec.created, rec.revoked))

    def revoke_key(self, key_id: str) -> bool:
        with self._tx("revoke a key") as cur:
            cur.execute(self._sql("UPDATE clients SET revoked = ? WHERE key_id = ? AND revoked IS NULL"),
                        (time.time(), key_id))
            return bool(cur.rowcount)

    def purge(self, *, events_before: float | None, alerts_before: float | None) -> tuple[int, int]:
        """Delete events and alerts older than the given times (retention); the numbers deleted."""
        n_ev = n_al = 0
        with self._tx("apply retention") as cur:
            if alerts_before is not None:
                cur.execute(self._sql("DELETE FROM alerts WHERE ts < ?"), (alerts_before,))
                n_al = cur.rowcount
            if events_before is not None:
                cur.execute(self._sql("DELETE FROM events WHERE ts < ? AND id NOT IN (SELECT event_id FROM alerts "
                                      "WHERE event_id IS NOT NULL)"), (events_before,))
                n_ev = cur.rowcount
        return n_ev, n_al

    # ------------------------------------------------------------------ reading
    def get_key(self, key_id: str) -> KeyRecord | None:
        with self._tx("read a key") as cur:
            cur.execute(self._sql("SELECT key_id, client_id, role, salt, hash, created, revoked FROM clients "
                                  "WHERE key_id = ?"), (key_id,))
            row = cur.fetchone()
        return None if row is None else KeyRecord(row[0], row[1], row[2], bytes(row[3]), bytes(row[4]),
                                                  float(row[5]), None if row[6] is None else float(row[6]))

    def keys(self) -> list[dict[str, Any]]:
        """Key ids, clients, roles and times (never the hashes)."""
        with self._tx("list keys") as cur:
            cur.execute("SELECT key_id, client_id, role, created, revoked FROM clients ORDER BY created")
            rows = cur.fetchall()
        return [dict(zip(("key_id", "client_id", "role", "created", "revoked"), r, strict=True)) for r in rows]

    def get_state(self, name: str) -> dict[str, Any] | None:
        with self._tx("read detector state") as cur:
            cur.execute(self._sql("SELECT state FROM detector_state WHERE name = ?"), (name,))
            row = cur.fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def prada_members(self, client_id: str, since: int = 0) -> list[tuple[int, int, bytes]]:
        """The client's stored PRADA queries with a sequence number above ``since``: ``(seq, class, float32)``."""
        with self._tx("read PRADA state") as cur:
            cur.execute(self._sql("SELECT seq, label, x FROM prada_members WHERE client_id = ? AND seq > ? "
                                  "ORDER BY seq"), (client_id, int(since)))
            rows = cur.fetchall()
        return [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    def events(self, *, client_id: str | None = None, decision: str | None = None, limit: int = 100,
               after_id: int = 0) -> list[dict[str, Any]]:
        """Events, newest first (``after_id``: only those with a larger id)."""
        cols = ("id", "ts", "client_id", "path", "status", "decision", "input_sha256", "n_inputs", "prediction",
                "detectors", "message", "latency_ms")
        where: list[str] = ["id > ?"]
        args: list[Any] = [after_id]
        if client_id is not None:
            where.append("client_id = ?")
            args.append(client_id)
        if decision is not None:
            where.append("decision = ?")
            args.append(decision)
        with self._tx("read events") as cur:
            cur.execute(self._sql(f"SELECT {', '.join(cols)} FROM events WHERE {' AND '.join(where)} "
                                  "ORDER BY id DESC LIMIT ?"), (*args, int(limit)))
            rows = cur.fetchall()
        out = []
        for r in rows:
            d = dict(zip(cols, r, strict=True))
            d["prediction"], d["detectors"] = _load(d["prediction"]), _load(d["detectors"])
            out.append(d)
        return out

    def alerts(self, *, client_id: str | None = None, kind: str | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
        cols = ("id", "ts", "client_id", "kind", "detail", "event_id")
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if client_id is not None:
            where.append("client_id = ?")
            args.append(client_id)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        with self._tx("read alerts") as cur:
            cur.execute(self._sql(f"SELECT {', '.join(cols)} FROM alerts WHERE {' AND '.join(where)} "
                                  "ORDER BY id DESC LIMIT ?"), (*args, int(limit)))
            rows = cur.fetchall()
        out = []
        for r in rows:
            d = dict(zip(cols, r, strict=True))
            d["detail"] = _load(d["detail"])
            out.append(d)
        return out

    def count(self, table: str) -> int:
        if table not in _TABLES:
            raise StoreError(f"unknown table {table!r}; the store has {', '.join(_TABLES)}.")
        with self._tx("count rows") as cur:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            return int(cur.fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._alive():
                self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dump(v: Any) -> str | None:
    return None if v is None else json.dumps(v, allow_nan=False)


def _load(v: Any) -> Any:
    return None if v is None else json.loads(v)


class SQLiteStore(Store):
    """SQLite (stdlib ``sqlite3``) in WAL mode with ``synchronous=FULL`` and a busy timeout."""

    _ddl = (
        "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, client_id TEXT, "
        "path TEXT, status INTEGER NOT NULL, decision TEXT NOT NULL, input_sha256 TEXT, n_inputs INTEGER, "
        "prediction TEXT, detectors TEXT, message TEXT, latency_ms REAL)",
        "CREATE INDEX IF NOT EXISTS events_client ON events (client_id, id)",
        "CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, client_id TEXT, "
        "kind TEXT NOT NULL, detail TEXT NOT NULL, event_id INTEGER)",
        "CREATE TABLE IF NOT EXISTS clients (key_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, role TEXT NOT NULL, "
        "salt BLOB NOT NULL, hash BLOB NOT NULL, created REAL NOT NULL, revoked REAL)",
        "CREATE TABLE IF NOT EXISTS detector_state (name TEXT PRIMARY KEY, state TEXT NOT NULL, updated REAL)",
        "CREATE TABLE IF NOT EXISTS prada_members (client_id TEXT NOT NULL, seq INTEGER NOT NULL, label INTEGER "
        "NOT NULL, x BLOB NOT NULL, PRIMARY KEY (client_id, seq))",
        "CREATE TABLE IF NOT EXISTS drift_pending (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id INTEGER NOT NULL, "
        "vals BLOB NOT NULL)",
    )

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        super().__init__()
        self.path = Path(path)
        self._busy = int(busy_timeout_ms)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the SQLite store {str(self.path)!r}: {exc}. Check the path and its "
                             "folder's permissions.") from exc
        self._init_schema()

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def _connect(self) -> Any:
        conn = sqlite3.connect(self.path, timeout=self._busy / 1000, check_same_thread=False,
                               isolation_level="DEFERRED")
        conn.execute(f"PRAGMA busy_timeout = {self._busy}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch to WAL mode (journal_mode is {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def pragma(self, name: str) -> Any:
        """A PRAGMA's value (``journal_mode``, ``synchronous``), for checks."""
        with self._tx("read a pragma") as cur:
            cur.execute(f"PRAGMA {name}")
            return cur.fetchone()[0]


class PostgresStore(Store):
    """PostgreSQL through psycopg 3 (the ``guard`` extra): one connection, every write a committed transaction, and
    a small pool of autocommit connections that hold per-client advisory locks (see :meth:`client_lock`).

    Args:
        url: ``postgresql://user:password@host:port/database``.
        connect_timeout: seconds to wait for a connection (also when reconnecting after a server restart).
        lock_timeout: seconds a request waits for a client's lock held by another replica before
            :class:`~sparring.errors.StoreError` (PostgreSQL's ``lock_timeout``).
    """

    placeholder = "%s"
    shared = True
    _ddl = (
        "CREATE TABLE IF NOT EXISTS events (id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, client_id TEXT, "
        "path TEXT, status INTEGER NOT NULL, decision TEXT NOT NULL, input_sha256 TEXT, n_inputs INTEGER, "
        "prediction TEXT, detectors TEXT, message TEXT, latency_ms DOUBLE PRECISION)",
        "CREATE INDEX IF NOT EXISTS events_client ON events (client_id, id)",
        "CREATE TABLE IF NOT EXISTS alerts (id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, client_id TEXT, "
        "kind TEXT NOT NULL, detail TEXT NOT NULL, event_id BIGINT)",
        "CREATE TABLE IF NOT EXISTS clients (key_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, role TEXT NOT NULL, "
        "salt BYTEA NOT NULL, hash BYTEA NOT NULL, created DOUBLE PRECISION NOT NULL, revoked DOUBLE PRECISION)",
        "CREATE TABLE IF NOT EXISTS detector_state (name TEXT PRIMARY KEY, state TEXT NOT NULL, "
        "updated DOUBLE PRECISION)",
        "CREATE TABLE IF NOT EXISTS prada_members (client_id TEXT NOT NULL, seq BIGINT NOT NULL, label INTEGER "
        "NOT NULL, x BYTEA NOT NULL, PRIMARY KEY (client_id, seq))",
        "CREATE TABLE IF NOT EXISTS drift_pending (id BIGSERIAL PRIMARY KEY, event_id BIGINT NOT NULL, "
        "vals BYTEA NOT NULL)",
    )

    def __init__(self, url: str, *, connect_timeout: float = 10.0, lock_timeout: float = 10.0) -> None:
        super().__init__()
        self._url = url
        self._timeout = connect_timeout
        self._lock_timeout_ms = max(1, int(lock_timeout * 1000))
        self._pool: list[Any] = []  # idle lock connections
        self._pool_lock = threading.Lock()
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError("a postgresql:// store needs psycopg 3: pip install 'sparring[guard]'.") from exc
        self._psycopg = psycopg
        try:
            self._conn = self._connect()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the PostgreSQL store {self.url}: {exc}. Check host, port, user and "
                             "database in the URL, and that the server is running.") from exc
        with self._lock:  # several replicas may start at once: serialise table creation
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(7190019)")
            self._conn.commit()
        try:
            self._init_schema()
        finally:
            with self._lock:
                with self._conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(7190019)")
                self._conn.commit()

    @property
    def url(self) -> str:
        from sparring.guard.config import _redact_url

        return _redact_url(self._url)

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.Error,)

    def _connect(self) -> Any:
        return self._psycopg.connect(self._url, connect_timeout=max(1, int(self._timeout)))

    def _alive(self) -> bool:
        return not self._conn.closed

    def _drift_lock(self, cur: Any) -> bool:
        """A transaction-scoped advisory lock, tried without waiting (released by the commit): a replica that does
        not get it leaves its values pending for the next transaction that does, so no replica waits for drift."""
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (_DRIFT_LOCK,))
        return bool(cur.fetchone()[0])

    @contextmanager
    def client_lock(self, client_id: str) -> Iterator[None]:
        """A session advisory lock on ``client_id`` (a 64-bit key from BLAKE2b of the id), held on a connection of
        its own until the block ends: the block reads the client's state, and its commit happens inside it.
        Another replica asking for the same client waits (at most ``lock_timeout``); other clients do not."""
        key = int.from_bytes(blake2b(client_id.encode(), digest_size=8, person=b"sparring-prada").digest(), "big",
                             signed=True)
        with self._pool_lock:
            conn = self._pool.pop() if self._pool else None
        try:
            conn = self._locked(conn, key)
        except self._psycopg.Error as exc:
            raise StoreError(f"the guard store ({self.url}) failed to lock client {client_id!r}'s detector state: "
                             f"{type(exc).__name__}: {exc}. Check that the database is reachable; a lock held "
                             "longer than lock_timeout means another replica is stuck.") from exc
        try:
            yield
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except self._psycopg.Error:  # the session is gone, and its locks with it
                conn.close()
            else:
                with self._pool_lock:
                    self._pool.append(conn)

    def _locked(self, conn: Any, key: int) -> Any:
        """``conn`` (an idle pooled connection, or None) holding the advisory lock ``key``; a pooled connection that
        broke meanwhile (the server restarted) is replaced by a fresh one."""
        for fresh in (conn is None or conn.closed, True):
            try:
                if fresh:
                    conn = self._psycopg.connect(self._url, connect_timeout=max(1, int(self._timeout)),
                                                 autocommit=True)
                    conn.execute(f"SET lock_timeout = {self._lock_timeout_ms}")
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                return conn
            except self._psycopg.Error:
                if conn is not None:
                    conn.close()
                if fresh:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._pool_lock:
            for conn in self._pool:
                conn.close()
            self._pool.clear()
        super().close()


def open_store(url: str) -> Store:
    """The store at ``url``: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
    ``postgresql://user:password@host:port/database``."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise StoreError("sqlite:/// needs a file path, e.g. sqlite:///guard.db.")
        return SQLiteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise StoreError(f"unsupported store URL {url.split('://', 1)[0]!r}://...; use sqlite:///path.db or "
                     "postgresql://user@host:port/db.")

