"""A real PostgreSQL server for the guard tests: Debian's postgresql binaries, a temporary data directory,
127.0.0.1 and a free port, stopped afterwards. initdb refuses to run as root, so as root it runs as 'postgres'."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a postgresql:// URL of a fresh server (skips the test with the reason when it cannot start)."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (Debian package postgresql-15)")
    pytest.importorskip("psycopg", reason="the postgresql store needs psycopg 3 (the 'guard' extra)")
    root = Path(tempfile.mkdtemp(prefix="sparring-pg-"))
    data = root / "data"
    prefix: list[str] = []
    user = os.environ.get("USER", "postgres")
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing: initdb cannot run as root")
        shutil.chown(root, "postgres")
        os.chmod(root, 0o700)
        prefix, user = ["runuser", "-u", "postgres", "--"], "postgres"
    port = _free_port()
    run = {"check": True, "capture_output": True, "timeout": 120}
    try:
        subprocess.run([*prefix, str(PG_BIN / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8",
                        "--no-sync"], **run)  # type: ignore[call-overload]
        subprocess.run([*prefix, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                        f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=on", "start"],
                       **run)  # type: ignore[call-overload]
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        err = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {err.decode(errors='replace')[-300:]}")
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
