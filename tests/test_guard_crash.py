"""``kill -9`` of a guard process mid-load, then a restart: every acknowledged request has its event, and PRADA's
per-client state resumes exactly where the committed events left it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from sparring.data import Dataset
from sparring.defenses.detect.extraction import PradaDetector
from sparring.guard.auth import create_key
from sparring.guard.store import open_store
from tests.guard_helpers import batch_sha, bearer

pytest.importorskip("uvicorn")


def _start(cfg: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = cfg.parent / f"guard-{time.monotonic_ns()}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sparring.cli", "guard", "serve", str(cfg), "--port", "0"],
                                stderr=err, stdout=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "guard listening on " in text:
            return proc, text.split("guard listening on ", 1)[1].split()[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"the guard did not start: {log.read_text(errors='replace')[-2000:]}")


@pytest.mark.slow  # two guard processes start (torch, the zoo model): about 18 s on 2 busy cores
def test_kill_9_mid_load_loses_no_acknowledged_event_and_prada_resumes(tmp_path: Path, digits: Dataset) -> None:
    db = tmp_path / "guard.db"
    cfg = tmp_path / "guard.yaml"
    cfg.write_text(f"model: digits-cnn\nstore: {{url: 'sqlite:///{db}'}}\ndrift: {{enabled: false}}\n"
                   "prada: {min_queries: 20, max_samples: 60}\nrate_limit: {rate: 10000, burst: 10000}\n")
    with open_store(f"sqlite:///{db}") as st:
        key, _ = create_key(st, "alice")
    xs = torch.cat([digits.x_test, digits.x_train])[:400]
    by_sha = {batch_sha(xs[i : i + 1].numpy()): i for i in range(len(xs))}
    acked: list[str] = []
    proc, url = _start(cfg)
    stop = threading.Event()

    def load(start: int, n: int, base: str) -> None:
        with httpx.Client(headers=bearer(key), timeout=10) as http:
            for i in range(start, start + n):
                if stop.is_set():
                    return
                try:
                    r = http.post(base + "/predict", json={"inputs": xs[i : i + 1].tolist()})
                except httpx.HTTPError:
                    return  # the guard was killed under this request: not acknowledged
                if r.status_code == 200:
                    acked.append(batch_sha(xs[i : i + 1].numpy()))

    t = threading.Thread(target=load, args=(0, 300, url))
    t.start()
    while len(acked) < 80 and t.is_alive():
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)  # mid-load: a request may be in flight
    proc.wait()
    stop.set()
    t.join()
    n_first = len(acked)
    assert 80 <= n_first < 300
    with open_store(f"sqlite:///{db}") as st:
        stored = {e["input_sha256"] for e in st.events(client_id="alice", limit=10_000) if e["status"] == 200}
    assert set(acked) <= stored and len(stored) - len(acked) <= 1  # at most the one in flight was committed unseen
    stop.clear()
    proc, url = _start(cfg)
    try:
        load(300, 60, url)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    with open_store(f"sqlite:///{db}") as st:
        events = st.events(client_id="alice", limit=10_000)[::-1]  # oldest first: the order PRADA saw them in
        state = st.get_state("prada:alice")
    assert set(acked) <= {e["input_sha256"] for e in events}
    # an uninterrupted PRADA fed the committed queries in order gives exactly the state the restarted guard kept
    ref = PradaDetector(min_queries=20, max_samples=60)
    for e in events:
        i = by_sha[e["input_sha256"]]
        ref.observe("alice", xs[i : i + 1], torch.tensor(e["prediction"]["labels"]))
    expect = ref.client_state("alice", members=False)
    assert state is not None and expect is not None and state["queries"] == len(events) > n_first
    assert state == expect
