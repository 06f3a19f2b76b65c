"""Shared pieces of the guard tests: a service on digits-cnn with a fresh SQLite store, served on 127.0.0.1:0."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the guard needs the 'guard' extra (fastapi, uvicorn, prometheus-client)")

from sparring.guard.auth import create_key
from sparring.guard.config import parse_config
from sparring.guard.server import GuardServer
from sparring.guard.service import GuardService


def make_service(tmp: Path, **overrides: Any) -> GuardService:
    cfg: dict[str, Any] = {"model": "digits-cnn", "store": {"url": f"sqlite:///{tmp / 'guard.db'}"},
                           "drift": {"enabled": False}, "rate_limit": {"rate": 10_000, "burst": 10_000}}
    cfg.update(overrides)
    return GuardService(parse_config(cfg, base_dir=tmp))


@contextmanager
def running(service: GuardService) -> Iterator[tuple[GuardServer, str, str]]:
    """The server, a client key ('alice') and an admin key ('ops')."""
    client, _ = create_key(service.store, "alice")
    admin, _ = create_key(service.store, "ops", "admin")
    with GuardServer(service) as server:
        yield server, client, admin


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def batch_sha(x: Any) -> str:
    """What the guard records as input_sha256 for a valid batch (float32 bytes with the shape)."""
    a = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()
