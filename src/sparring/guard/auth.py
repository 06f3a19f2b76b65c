"""API keys (stored as salted scrypt hashes, compared in constant time) and per-client token-bucket rate limits.

A key reads ``sg_<key id>_<secret>``. The key id (12 hex digits) is public: it finds the row in the ``clients``
table and names the key in ``sparring guard keys`` listings. The secret (32 random bytes) is never stored: the row
holds ``scrypt(secret, salt, n=2**14, r=8, p=1)`` (Percival 2009, RFC 7914) and a 16-byte random salt; a presented
key is hashed the same way and compared with :func:`hmac.compare_digest`. Hashing costs tens of milliseconds, so a
verified key is remembered in memory (keyed by an HMAC of the key under a per-process secret, so even the cache
holds no key) with the stored hash it matched. After ``cache_seconds`` the key's row is read again: while it is
unrevoked and holds the same salt and hash, the key is still valid without hashing it again; a revoked, deleted or
re-keyed row ends it. So a revoked key stops working within ``cache_seconds`` on other replicas and at once on the
replica that revoked it, and a busy client pays the hash once, not every few seconds. Concurrent first requests
with one key wait for a single hash (no stampede of scrypt calls when a client starts).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from sparring.errors import ParameterError
from sparring.guard.store import KeyRecord, Store

__all__ = ["KeyVerifier", "Principal", "TokenBucket", "create_key", "hash_secret"]

ROLES = ("client", "admin")
_KEY_RE = re.compile(r"^sg_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_CLIENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 * 1024 * 1024}


@dataclass(frozen=True)
class Principal:
    """Who made a request: the client id and role of a verified key (and the key's public id)."""

    client_id: str
    role: str
    key_id: str


def hash_secret(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode("ascii"), salt=salt, **_SCRYPT)  # type: ignore[arg-type]


def check_client_id(client_id: str) -> str:
    if not isinstance(client_id, str) or not _CLIENT_RE.match(client_id):
        raise ParameterError(f"client id must be 1-64 characters of letters, digits and . _ @ - (starting with a "
                             f"letter or digit); got {client_id!r}.")
    return client_id


def create_key(store: Store, client_id: str, role: str = "client") -> tuple[str, KeyRecord]:
    """Make a new key for ``client_id`` with ``role``, store its hash, and return ``(key, record)``: the key is
    shown once and cannot be recovered from the store."""
    check_client_id(client_id)
    if role not in ROLES:
        raise ParameterError(f"role must be one of {', '.join(ROLES)}; got {role!r}.")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    rec = KeyRecord(key_id, client_id, role, salt, hash_secret(secret, salt), time.time(), None)
    store.add_key(rec)
    return f"sg_{key_id}_{secret}", rec


class KeyVerifier:
    """Checks presented keys against the store, with a short in-memory cache of verified keys."""

    def __init__(self, store: Store, *, cache_seconds: float = 5.0, max_cached: int = 10_000) -> None:
        self.store = store
        self.cache_seconds = float(cache_seconds)
        self.max_cached = max_cached
        self._pepper = secrets.token_bytes(32)
        # tag -> (when the row was last checked, the principal, the row's salt + hash that the key matched)
        self._cache: OrderedDict[bytes, tuple[float, Principal, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._inflight: dict[bytes, threading.Lock] = {}  # one check per key at a time; the others wait for it
        self.hashes = 0  # scrypt computations so far

    def cached(self, key: str | None) -> Principal | None:
        """The principal of ``key`` when it was verified less than ``cache_seconds`` ago, else ``None`` (then call
        :meth:`verify`). Never touches the store or hashes: cheap enough for an event loop."""
        if not key or _KEY_RE.match(key) is None:
            return None
        tag = hmac.new(self._pepper, key.encode("ascii"), hashlib.sha256).digest()
        with self._lock:
            hit = self._cache.get(tag)
            return hit[1] if hit is not None and time.monotonic() - hit[0] <= self.cache_seconds else None

    def verify(self, key: str | None) -> Principal | None:
        """The principal of a valid, unrevoked key; ``None`` for anything else (missing, malformed, forged)."""
        if not key:
            return None
        m = _KEY_RE.match(key)
        if m is None:
            return None
        tag = hmac.new(self._pepper, key.encode("ascii"), hashlib.sha256).digest()
        with self._lock:
            hit = self._cache.get(tag)
            if hit is not None and time.monotonic() - hit[0] <= self.cache_seconds:
                return hit[1]
            flight = self._inflight.setdefault(tag, threading.Lock())
        with flight:  # a concurrent request with the same key checks first; then the cache answers this one
            with self._lock:
                hit = self._cache.get(tag)
                if hit is not None and time.monotonic() - hit[0] <= self.cache_seconds:
                    return hit[1]
            try:
                return self._check(tag, m.group(1), m.group(2), hit)
            finally:
                with self._lock:
                    if self._inflight.get(tag) is flight:
                        del self._inflight[tag]

    def _check(self, tag: bytes, key_id: str, secret: str,
               hit: tuple[float, Principal, bytes] | None) -> Principal | None:
        rec = self.store.get_key(key_id)
        if rec is None or rec.revoked is not None:
            self._drop(tag)
            return None
        stored = rec.salt + rec.hash
        if (hit is not None and hmac.compare_digest(hit[2], stored)
                and (hit[1].client_id, hit[1].role) == (rec.client_id, rec.role)):
            who = hit[1]  # this very key matched this very row before: still valid without hashing it again
        else:
            self.hashes += 1
            if not hmac.compare_digest(hash_secret(secret, rec.salt), rec.hash):
                self._drop(tag)
                return None
            who = Principal(rec.client_id, rec.role, rec.key_id)
        with self._lock:
            self._cache[tag] = (time.monotonic(), who, stored)
            self._cache.move_to_end(tag)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return who

    def _drop(self, tag: bytes) -> None:
        with self._lock:
            self._cache.pop(tag, None)

    def forget(self, key_id: str) -> None:
        """Drop cached entries of a key (after revoking it here)."""
        with self._lock:
            for tag in [t for t, (_, p, _h) in self._cache.items() if p.key_id == key_id]:
                del self._cache[tag]


class TokenBucket:
    """Per-client token buckets (Turner 1986): ``burst`` tokens, refilled at ``rate`` per second; one per request.
    At most ``max_clients`` buckets are kept (least recently used dropped: that client starts with a full bucket)."""

    def __init__(self, rate: float, burst: int, *, max_clients: int = 100_000) -> None:
        self.rate, self.burst, self.max_clients = float(rate), int(burst), max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client_id: str, now: float | None = None) -> float:
        """0.0 when the request may go ahead (a token is spent), else the seconds until a token is available."""
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(client_id, (float(self.burst), t))
            tokens = min(float(self.burst), tokens + (t - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[client_id] = (tokens - 1.0, t)
                wait = 0.0
            else:
                self._buckets[client_id] = (tokens, t)
                wait = (1.0 - tokens) / self.rate
            self._buckets.move_to_end(client_id)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait
