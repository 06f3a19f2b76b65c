"""The user cache for trained zoo models: atomic writes, checksums, corrupted files detected and rebuilt."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["cache_dir", "load_state", "save_state"]


def cache_dir() -> Path:
    """``$SPARRING_CACHE_DIR`` if set, else the platform's user cache directory (e.g. ``~/.cache/sparring``)."""
    env = os.environ.get("SPARRING_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("sparring", appauthor=False))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a state dict and its sha256 sidecar atomically (a crash never leaves a half-written model)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    for target, payload in ((path, data), (path.with_suffix(path.suffix + ".sha256"), _digest(data).encode())):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def load_state(path: Path) -> dict[str, Any] | None:
    """The cached state dict, or ``None`` if missing; a corrupted or tampered file is reported, removed, and
    ``None`` returned so the caller rebuilds it. Loaded with ``weights_only=True`` (no code runs)."""
    side = path.with_suffix(path.suffix + ".sha256")
    if not path.exists():
        return None
    try:
        data = path.read_bytes()
        expected = side.read_text().strip() if side.exists() else None
        if expected != _digest(data):
            raise ValueError("checksum mismatch" if expected else "checksum file missing")
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"expected a state dict, found {type(state).__name__}")
        return state
    except Exception as exc:  # any failure to read means: rebuild
        warnings.warn(f"cached model {path} is corrupted ({exc}); rebuilding it.", RuntimeWarning, stacklevel=3)
        for p in (path, side):
            p.unlink(missing_ok=True)
        return None
