"""API keys (stored as salted scrypt hashes, compared in constant time) and per-client token-bucket rate limits.

A key reads ``sg_<key id>_<secret>``. The key id (12 hex digits) is public: it finds the row in the ``clients``
table and names the key in ``sparring guard keys`` listings. The secret (32 random bytes) is never stored: the row
holds ``scrypt(secret, salt, n=2**14, r=8, p=1)`` (Percival 2009, RFC 7914) and a 16-byte random salt; a presented
key is hashed the same way and compared with :func:`hmac.compare_digest`. Hashing costs tens of milliseconds, so a
verified key is remembered in memory for ``cache_seconds`` (keyed by an HMAC of the key under a per-process
secret, so even the cache holds no key); a revoked key stops working within that time on other replicas and at
once on the replica that revoked it.
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
        self._cache: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, key: str | None) -> Principal | None:
        """The principal of a valid, unrevoked key; ``None`` for anything else (missing, malformed, forged)."""
        if not key:
            return None
        m = _KEY_RE.match(key)
        if m is None:
            return None
        tag = hmac.new(self._pepper, key.encode("ascii"), hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(tag)
            if hit is not None and now - hit[0] <= self.cache_seconds:
                return hit[1]
        rec = self.store.get_key(m.group(1))
        if rec is None or rec.revoked is not None:
            return None
        if not hmac.compare_digest(hash_secret(m.group(2), rec.salt), rec.hash):
            return None
        who = Principal(rec.client_id, rec.role, rec.key_id)
        with self._lock:
            self._cache[tag] = (now, who)
            self._cache.move_to_end(tag)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return who

    def forget(self, key_id: str) -> None:
        """Drop cached entries of a key (after revoking it here)."""
        with self._lock:
            for tag in [t for t, (_, p) in self._cache.items() if p.key_id == key_id]:
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
