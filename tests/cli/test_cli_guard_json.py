"""``sparring guard keys list|events|alerts --json`` on a store that cannot be opened: the error is the JSON object
on stdout (``type`` StoreError, ``exit_code`` 4) like every ``--json`` error, and the usual line on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparring.cli import EXIT_MODEL, build_cli

pytest.importorskip("fastapi")


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize("command", [("keys", "list"), ("events",), ("alerts",)])
def test_guard_store_error_under_json_is_the_json_error(tmp_path: Path, command: tuple[str, ...]) -> None:
    bad = tmp_path / "guard.db"
    bad.write_bytes(b"this is not an SQLite database, just text" * 100)
    code, out, err = _run("guard", *command, "--store", f"sqlite:///{bad}", "--json")
    assert code == EXIT_MODEL, out + err
    d = json.loads(out)
    assert d["type"] == "StoreError" and d["exit_code"] == EXIT_MODEL and str(bad) in d["error"]
    assert "error (StoreError)" in err
    code, out, err = _run("guard", *command, "--store", f"sqlite:///{bad}")  # without --json: no JSON, same code
    assert code == EXIT_MODEL and out == "" and "error (StoreError)" in err
