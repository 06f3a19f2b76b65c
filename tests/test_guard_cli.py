"""``sparring guard keys|events|alerts`` read and write the same store the service uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

click_testing = pytest.importorskip("click.testing")

from sparring.cli import build_cli  # noqa: E402
from sparring.guard.store import Event, StoreBatch, open_store  # noqa: E402


def test_keys_events_and_alerts_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    runner = click_testing.CliRunner()
    cli = build_cli()
    made = runner.invoke(cli, ["guard", "keys", "create", "--store", url, "--client", "alice", "--role", "admin"])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith("sg_") and len(key) == 59
    listed = runner.invoke(cli, ["guard", "keys", "list", "--store", url, "--json"])
    rows = json.loads(listed.stdout)
    assert rows[0]["client_id"] == "alice" and key not in listed.stdout
    with open_store(url) as st:
        st.record(StoreBatch(Event("alice", "/predict", 403, "reject", message="rejected by detector 'm'")))
    ev = runner.invoke(cli, ["guard", "events", "--store", url, "--json", "--client", "alice"])
    assert ev.exit_code == 0 and json.loads(ev.stdout.splitlines()[0])["decision"] == "reject"
    assert "reject" in runner.invoke(cli, ["guard", "events", "--store", url]).stdout
    assert runner.invoke(cli, ["guard", "alerts", "--store", url]).exit_code == 0
    revoked = runner.invoke(cli, ["guard", "keys", "revoke", "--store", url, rows[0]["key_id"]])
    assert revoked.exit_code == 0
    again = runner.invoke(cli, ["guard", "keys", "revoke", "--store", url, rows[0]["key_id"]])
    assert again.exit_code == 3 and "no active key" in again.output
    bad = runner.invoke(cli, ["guard", "keys", "create", "--store", url, "--client", "x'; DROP TABLE clients"])
    assert bad.exit_code == 3 and "client id must be" in bad.output
    missing = runner.invoke(cli, ["guard", "serve", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 3 and "no such guard config file" in missing.output
