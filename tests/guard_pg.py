"""A real PostgreSQL server for the guard tests: Debian's postgresql binaries, a temporary data directory,
127.0.0.1 and a free port, stopped afterwards (fault tests stop and start it in between). initdb refuses to run as
root, so as root it runs as 'postgres'."""

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


class PgServer:
    """A running test server: its URL, and stop/start of the same data directory and port (database faults)."""

    def __init__(self, root: Path, prefix: list[str], user: str, port: int) -> None:
        self.root, self.data, self.prefix, self.port = root, root / "data", prefix, port
        self.url = f"postgresql://{user}@127.0.0.1:{port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.prefix, str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args], check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        self._ctl("-l", str(self.root / "log"), "-w", "-o",
                  f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=on", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: like a crash, no shutdown checkpoint; the WAL replays at start)."""
        self._ctl("-m", mode, "-w", "stop")


@contextmanager
def postgres_control() -> Iterator[PgServer]:
    """A fresh server that a test may stop and start again (skips the test with the reason when it cannot start)."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (Debian package postgresql-15)")
    pytest.importorskip("psycopg", reason="the postgresql store needs psycopg 3 (the 'guard' extra)")
    root = Path(tempfile.mkdtemp(prefix="sparring-pg-"))
    prefix: list[str] = []
    user = os.environ.get("USER", "postgres")
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing: initdb cannot run as root")
        shutil.chown(root, "postgres")
        os.chmod(root, 0o700)
        prefix, user = ["runuser", "-u", "postgres", "--"], "postgres"
    server = PgServer(root, prefix, user, _free_port())
    try:
        subprocess.run([*prefix, str(PG_BIN / "initdb"), "-D", str(server.data), "-U", user, "--auth=trust", "-E",
                        "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        server.start()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        err = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {err.decode(errors='replace')[-300:]}")
    try:
        yield server
    finally:
        subprocess.run([*prefix, str(PG_BIN / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a postgresql:// URL of a fresh server (skips the test with the reason when it cannot start)."""
    with postgres_control() as server:
        yield server.url
