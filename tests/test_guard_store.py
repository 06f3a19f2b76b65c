"""The guard's store: durable settings, one transaction per request, hashed keys, PRADA state that resumes exactly,
retention, typed errors when the database is locked; the same interface on a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from sparring.defenses.detect.extraction import PradaDetector
from sparring.errors import ParameterError, StoreError
from sparring.guard.auth import KeyVerifier, TokenBucket, create_key
from sparring.guard.store import Alert, Event, SQLiteStore, Store, StoreBatch, open_store
from tests.guard_pg import postgres_server


def _exercise(st: Store) -> str:
    b = StoreBatch(Event("alice", "/predict", 200, "ok", input_sha256="ab" * 32, n_inputs=2,
                         prediction={"labels": [3, 4]}, detectors={"m": {"scores": [1.5, 2.5]}}))
    b.alerts.append(Alert("alice", "prada", {"flagged_at": 120}))
    b.states["prada:alice"] = {"queries": 2}
    b.members += [("alice", 1, 3, np.ones(4, np.float32).tobytes()), ("alice", 2, 4, np.zeros(4, np.float32).tobytes())]
    eid = st.record(b)
    st.record(StoreBatch(Event(None, "/predict", 401, "unauthorised", message="no key")))
    ev = st.events(client_id="alice")
    assert [e["id"] for e in ev] == [eid] and ev[0]["prediction"] == {"labels": [3, 4]}
    assert st.events(limit=1)[0]["decision"] == "unauthorised"  # newest first
    assert st.alerts(kind="prada")[0]["detail"] == {"flagged_at": 120} and st.alerts()[0]["event_id"] == eid
    assert st.get_state("prada:alice") == {"queries": 2} and st.get_state("nothing") is None
    assert [(s, lab) for s, lab, _ in st.prada_members("alice")] == [(1, 3), (2, 4)]
    st.record(StoreBatch(Event("alice", "/predict", 200, "ok"), states={"prada:alice": {"queries": 3}},
                         evict_below={"alice": 1}))
    assert st.get_state("prada:alice") == {"queries": 3} and [m[0] for m in st.prada_members("alice")] == [2]
    # SQL-looking values are data, never SQL
    st.record(StoreBatch(Event("x'; DROP TABLE events; --", "/predict", 400, "invalid")))
    assert st.events(client_id="x'; DROP TABLE events; --")[0]["status"] == 400 and st.count("events") == 4
    # keys: only a salted hash is stored; forged, malformed and revoked keys fail
    key, rec = create_key(st, "bob", "admin")
    ver = KeyVerifier(st, cache_seconds=0)
    who = ver.verify(key)
    assert who is not None and (who.client_id, who.role) == ("bob", "admin")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert ver.verify(forged) is None and ver.verify("sg_nothing") is None and ver.verify("") is None
    assert rec.hash != key[16:].encode() and all(key not in str(v) for v in st.keys()[-1].values())
    assert st.revoke_key(rec.key_id) and ver.verify(key) is None and not st.revoke_key(rec.key_id)
    with pytest.raises(ParameterError, match="client id must be"):
        create_key(st, "a b")
    # retention keeps events that alerts point to
    assert st.purge(events_before=1e12, alerts_before=None) == (3, 0) and st.count("events") == 1
    assert st.purge(events_before=None, alerts_before=1e12) == (0, 1)
    return key


def test_sqlite_store_is_wal_full_sync_and_keeps_everything(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'g.db'}") as st:
        assert isinstance(st, SQLiteStore)
        assert st.pragma("journal_mode") == "wal" and st.pragma("synchronous") == 2  # 2 = FULL
        key = _exercise(st)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert key[16:].encode() not in raw and key.encode() not in raw  # neither the key nor its secret is on disk
    with pytest.raises(StoreError, match="unsupported store URL 'mysql'"):
        open_store("mysql://x")


def test_a_locked_database_raises_store_error_naming_the_fix(tmp_path: Path) -> None:
    st = SQLiteStore(tmp_path / "g.db", busy_timeout_ms=100)
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match=r"failed to record an event: OperationalError: database is locked.*not "
                                             "locked by another program"):
            st.record(StoreBatch(Event("a", "/predict", 200, "ok")))
    finally:
        other.execute("ROLLBACK")
        other.close()
    st.record(StoreBatch(Event("a", "/predict", 200, "ok")))
    assert st.count("events") == 1
    st.close()


def test_postgres_store_behaves_like_sqlite() -> None:
    with postgres_server() as url, open_store(url) as st:
        assert type(st).__name__ == "PostgresStore" and "@127.0.0.1" in st.url
        _exercise(st)


def test_prada_client_state_round_trips_exactly(digits_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([digits_batch[0], (digits_batch[0][:40] + 0.1 * torch.randn(40, 1, 28, 28, generator=gen).sign()
                                     ).clamp(0, 1)])
    y = torch.randint(0, 3, (x.shape[0],), generator=gen)
    full = PradaDetector(min_queries=20, max_samples=60)
    full.observe("c", x, y)
    half = PradaDetector(min_queries=20, max_samples=60)
    half.observe("c", x[:90], y[:90])
    state = half.client_state("c", members=False)
    assert state is not None and "members" not in state
    rows = half.members("c")
    assert len(rows) == half.stored("c") > 10 and half.members("c", since=rows[-1][0]) == []
    resumed = PradaDetector(min_queries=20, max_samples=60)
    resumed.load_client_state("c", state, rows)
    resumed.observe("c", x[90:], y[90:])
    assert resumed.statistic("c") == full.statistic("c") and resumed.flagged_at("c") == full.flagged_at("c")
    again = PradaDetector(min_queries=20, max_samples=60)
    again.load_state_dict(full.state_dict())
    assert again.client_state("c") == full.client_state("c")
    with pytest.raises(ParameterError, match="not a PRADA client state"):
        again.load_client_state("d", {"version": 99})


def test_token_bucket_refills_at_the_rate() -> None:
    tb = TokenBucket(rate=2.0, burst=3)
    assert [tb.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert tb.take("a", now=0.0) == pytest.approx(0.5)
    assert tb.take("b", now=0.0) == 0.0  # buckets are per client
    assert tb.take("a", now=0.6) == 0.0 and tb.take("a", now=0.6) > 0


def test_key_cache_hashes_each_key_once_and_still_sees_revocation(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A verified key costs one scrypt: concurrent first requests wait for it (no stampede when a client starts),
    and after ``cache_seconds`` the row is re-read, not the key re-hashed; a revoked row ends it."""
    import threading

    import sparring.guard.auth as auth

    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    with open_store(f"sqlite:///{tmp_path / 'g.db'}") as st:
        key, rec = create_key(st, "carol")
        ver = KeyVerifier(st, cache_seconds=5)
        got: list[object] = []
        threads = [threading.Thread(target=lambda: got.append(ver.verify(key))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ver.hashes == 1 and len(got) == 8 and all(g is not None and g.client_id == "carol" for g in got)
        assert ver.cached(key) is not None and ver.cached(key[:-1] + "x") is None and ver.cached("junk") is None
        now[0] += 6
        assert ver.cached(key) is None  # expired: the next verify re-reads the row ...
        assert ver.verify(key) is not None and ver.hashes == 1  # ... and does not hash again
        forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        assert ver.verify(forged) is None and ver.hashes == 2  # another secret: hashed, refused, not cached
        assert ver.verify(forged) is None and ver.hashes == 3
        assert st.revoke_key(rec.key_id)  # revoked by another replica: this one sees it within cache_seconds
        assert ver.verify(key) is not None  # still cached
        now[0] += 6
        assert ver.verify(key) is None and ver.cached(key) is None and ver.hashes == 3
