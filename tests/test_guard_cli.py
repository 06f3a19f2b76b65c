"""``sparring guard keys|events|alerts`` read and write the same store the service uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


@pytest.mark.slow  # two CLI processes: 18 s under a load average of 9 on 2 cores (about 6 s of CPU)
def test_readme_guard_in_front_of_a_zoo_model_in_two_commands(tmp_path: Path, digits_cnn: Any) -> None:
    """The README's lines, as written, in a fresh folder: a one-line guard.yaml, `keys create --store
    sqlite:///guard.db`, `serve guard.yaml` (port 0 here instead of 8080): the key works because both commands use
    the same ./guard.db, and the answered request's event is in it."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    (tmp_path / "guard.yaml").write_text("model: digits-cnn\n")
    exe = Path(sys.executable).parent / "sparring"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sparring.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    made = subprocess.run([*cmd, "guard", "keys", "create", "--store", "sqlite:///guard.db", "--client", "alice"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([*cmd, "guard", "serve", "guard.yaml", "--port", "0"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        deadline, url = time.monotonic() + 120, None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            text = (tmp_path / "serve.log").read_text()
            if "guard listening on " in text:
                url = text.split("guard listening on ", 1)[1].split()[0]
        assert url is not None, (tmp_path / "serve.log").read_text()[-2000:]
        assert f"(store sqlite:///{tmp_path / 'guard.db'})" in (tmp_path / "serve.log").read_text()
        x = [[[[0.0] * 28] * 28]]  # one blank 1x28x28 digit
        r = httpx.post(url + "/predict", json={"inputs": x}, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["scores"][0]) == 10, r.text
        assert httpx.post(url + "/predict", json={"inputs": x}, timeout=30).status_code == 401  # no key, no answer
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    with open_store(f"sqlite:///{tmp_path / 'guard.db'}") as st:
        assert [e["status"] for e in st.events(limit=10)][::-1] == [200, 401]
