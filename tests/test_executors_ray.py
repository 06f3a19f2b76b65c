"""Audits on a real two-node Ray cluster on 127.0.0.1 equal the local audit, finding for finding.

The cluster is two ``ray start`` processes (a head with one CPU, a second node with one CPU), started with
``--block`` in their own session so that the teardown stops exactly them (never another user's Ray)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sparring.audit import load_threat_model, run_audit
from sparring.audit.report.machine import report_dict
from sparring.cli import build_cli
from tests.audit.conftest import write_tm
from tests.test_executors import TM, comparable

pytest.importorskip("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_started(log: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"ray start did not come up: {log.read_text(errors='replace')[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)  # its own session: the node's raylet, GCS and workers, nothing else
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[dict[str, Any]]:
    """A two-node loopback cluster: its address and the process groups of its nodes."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="rx", dir="/tmp")  # short: Ray's unix socket paths must stay under 108 chars
    # Token auth off on both nodes and this driver: Ray turns it on by itself when ~/.ray/auth_token exists (a
    # private ray.init() writes one), and a loopback test cluster must not depend on what is in the home folder.
    old_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, args in enumerate((["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", temp],
                                  ["--address", f"127.0.0.1:{port}"])):
            log = Path(temp) / f"node{i}.log"
            with log.open("wb") as out:
                procs.append(subprocess.Popen([ray_bin, "start", *args, *common], env=env, stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True))
            _wait_started(log, procs[-1])
        yield {"address": f"127.0.0.1:{port}", "pgids": [p.pid for p in procs]}
    finally:
        import ray

        ray.shutdown()
        for p in reversed(procs):
            _stop(p)
        if old_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old_mode


def _cli(*args: str) -> Any:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


@pytest.mark.slow  # about 100 s on this busy 2-core machine (cluster start 20 s, audit 64 s, stop 16 s)
def test_audit_on_two_node_ray_cluster_equals_local(ray_cluster: dict[str, Any], tmp_path: Path) -> None:
    tm = write_tm(tmp_path / "threat.yaml", **TM)
    local = _cli("audit", str(tm), "--out", str(tmp_path / "local"), "--format", "json", "--no-progress")
    on_ray = _cli("audit", str(tm), "--out", str(tmp_path / "ray"), "--format", "json", "--no-progress",
                  "--ray", ray_cluster["address"])
    assert on_ray.exit_code == local.exit_code, on_ray.output
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("local", "ray"))
    assert not b["errors"] and b["status"] == "complete"
    assert comparable(b) == comparable(a)
    assert [g["value"] for g in b["gates"]] == [g["value"] for g in a["gates"]]


def _running_task_pids(pgids: list[int]) -> list[int]:
    """Ray worker processes of our cluster that are running a task right now (``ray::_ray_task``)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if os.getpgid(int(d)) not in pgids and os.getpgid(ppid) not in pgids:  # a worker of our raylets
                continue
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError, IndexError, ValueError):
            continue
        if "_ray_task" in cmd:
            pids.append(int(d))
    return pids


@pytest.mark.slow
def test_ray_worker_killed_mid_audit_is_retried_to_the_same_results(ray_cluster: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    from sparring.executors import RayExecutor

    tm = load_threat_model(write_tm(tmp_path / "threat.yaml", **TM))
    expected = comparable(report_dict(run_audit(tm, tmp_path / "local")))
    killed: list[int] = []

    def kill_one(i: int, n: int, step: Any, result: Any, cached: bool) -> None:
        if not killed:
            for pid in _running_task_pids(ray_cluster["pgids"])[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    ex = RayExecutor(ray_cluster["address"])
    try:
        audit = run_audit(tm, tmp_path / "ray", executor=ex, on_step=kill_one)
    finally:
        ex.close()
    assert killed, "no Ray task was running when a step finished: nothing was killed"
    assert audit.status == "complete" and not audit.errors
    assert comparable(report_dict(audit)) == expected


@pytest.mark.slow  # keep last in this module: it stops the cluster's second node for good
def test_node_lost_mid_sharded_audit_its_tasks_rerun_on_the_head_to_the_same_results(
        ray_cluster: dict[str, Any], tmp_path: Path) -> None:
    """The second node's processes (raylet, object store, workers: its own process group) are killed while it runs
    a shard; Ray declares the node dead and reruns its tasks on the head. The sharded audit equals the local one."""
    from sparring.executors import RayExecutor
    from tests.test_executors_shards import SHARD
    from tests.test_executors_shards import TM as SHARD_TM

    tm = load_threat_model(write_tm(tmp_path / "threat.yaml", **SHARD_TM))
    expected = comparable(report_dict(run_audit(tm, tmp_path / "local", shard_points=SHARD)))
    second = ray_cluster["pgids"][1]
    lost: list[int] = []

    def stop_second_node(done: int, total: int, step: Any, shard: int | None) -> None:
        if not lost and _running_task_pids([second]):  # node 2 is running a task right now: lose the node
            os.killpg(second, signal.SIGKILL)
            lost.append(done)

    ex = RayExecutor(ray_cluster["address"])
    try:
        audit = run_audit(tm, tmp_path / "ray", executor=ex, shard_points=SHARD, on_task=stop_second_node)
    finally:
        ex.close()
    assert lost, "the second node never ran a task while one finished: nothing was lost"
    assert audit.status == "complete" and not audit.errors, [r.error for r in audit.errors]
    assert comparable(report_dict(audit)) == expected
