"""Executors: tasks in submission order, errors per task, lost workers rerun, and audits equal to the local run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from sparring.audit import load_threat_model, run_audit
from sparring.audit.report.machine import report_dict
from sparring.errors import ParameterError
from sparring.executors import LocalExecutor, Outcome, ProcessExecutor, get_executor
from tests.audit.conftest import write_tm

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ task functions (module level: spawn imports them)
def _square_or_fail(shared: int, task: int) -> int:
    if task == 3:
        raise ValueError(f"task {task} refuses")
    time.sleep(0.05 * (5 - task))  # later tasks finish first: order must come from submission, not completion
    return shared + task * task


def _die_once(shared: str, task: int) -> tuple[int, int]:
    """Kill the worker (SIGKILL, as the OOM killer would) the first time task 1 runs; the rerun succeeds."""
    marker = Path(shared) / f"died-{task}"
    if task == 1 and not marker.exists():
        marker.write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)
    return task, os.getpid()


def _always_die(shared: None, task: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return task  # pragma: no cover


# ------------------------------------------------------------------ the interface
@pytest.mark.parametrize("make", [LocalExecutor, lambda: ProcessExecutor(2)], ids=["local", "processes"])
def test_map_keeps_submission_order_and_returns_errors_per_task(make: Any) -> None:
    arrived: list[int] = []
    with make() as ex:
        out = ex.map(_square_or_fail, range(6), shared=100, on_result=lambda i, o: arrived.append(i))
    assert [o.value for o in out] == [100, 101, 104, None, 116, 125]
    assert isinstance(out[3].error, ValueError) and "task 3 refuses" in str(out[3].error)
    assert all(o.ok for i, o in enumerate(out) if i != 3)
    assert sorted(arrived) == list(range(6))


def test_killed_worker_task_is_rerun_with_the_same_result(tmp_path: Path) -> None:
    with ProcessExecutor(1) as ex:
        out = ex.map(_die_once, range(4), shared=str(tmp_path))
        assert ex.pools_started == 2  # the dead worker broke the pool; a fresh one reran what was unfinished
    assert [o.value[0] for o in out if o.value is not None] == [0, 1, 2, 3]
    assert out[1].attempts == 2 and (tmp_path / "died-1").exists()


@pytest.mark.slow
def test_a_task_that_always_kills_its_worker_is_an_error_not_a_hang() -> None:
    from sparring.errors import WorkerLostError

    with ProcessExecutor(1, max_retries=1) as ex:
        out = ex.map(_always_die, [0])
    assert isinstance(out[0].error, WorkerLostError) and out[0].attempts == 2
    assert "died 2 times" in str(out[0].error)


def test_get_executor_refuses_unknown_names_and_local_workers() -> None:
    with pytest.raises(ParameterError, match="choose one of local, processes, ray"):
        get_executor("threads")
    with pytest.raises(ParameterError, match="--executor processes"):
        get_executor("local", workers=4)
    with pytest.raises(ParameterError, match="workers must be >= 1"):
        ProcessExecutor(0)


# ------------------------------------------------------------------ audits
TM = {
    "system": {"model": "digits-cnn", "data": {"source": "zoo", "split": "test", "n": 24}},
    "attacker": {"knowledge": "white-box", "evasion": [{"norm": "linf", "eps": [0.05, 0.15]}]},
    "certification": {"smoothing": {"sigma": 0.25, "n0": 8, "n": 32, "radii": [0.0, 0.25]}},
    "gates": [{"metric": "clean_accuracy", "min": 0.8}, {"metric": "robust_accuracy", "norm": "linf", "eps": 0.15,
                                                          "min": 0.9}],
}


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report without what legitimately differs between runs: wall-clock seconds and the environment."""
    steps = [{k: v for k, v in s.items() if k != "cost"} | {"cost": {k: v for k, v in s["cost"].items()
                                                                       if k != "seconds"}} for s in report["steps"]]
    return {"gates": report["gates"], "findings": report["findings"], "steps": steps, "verdict": report["verdict"],
            "plan": report["plan"]}


@pytest.fixture(scope="module")
def local_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    d = tmp_path_factory.mktemp("local")
    tm = write_tm(d / "threat.yaml", **TM)
    audit = run_audit(load_threat_model(tm), d / "out")
    assert audit.status == "complete" and not audit.errors
    return tm, comparable(report_dict(audit))


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            kids += [int(c) for c in f.read().split()]
    return kids


def test_audit_on_processes_equals_local(local_report: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    tm, expected = local_report
    with ProcessExecutor(2) as ex:
        audit = run_audit(load_threat_model(tm), tmp_path / "out", executor=ex)
    assert audit.status == "complete" and not audit.errors
    assert comparable(report_dict(audit)) == expected


@pytest.mark.slow
def test_audit_on_processes_equals_local_even_when_a_worker_is_killed(
        local_report: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    tm, expected = local_report
    killed: list[int] = []

    with ProcessExecutor(2) as ex:
        def kill_one(i: int, n: int, step: Any, result: Any, cached: bool) -> None:
            if not killed and ex.worker_pids():  # after the first result: a worker dies mid-audit
                killed.append(ex.worker_pids()[0])
                os.kill(killed[0], signal.SIGKILL)

        audit = run_audit(load_threat_model(tm), tmp_path / "out", executor=ex, on_step=kill_one)
        restarted = ex.pools_started
    assert killed and restarted >= 2, "no worker was killed: the test did not test the rerun"
    assert audit.status == "complete" and not audit.errors
    assert comparable(report_dict(audit)) == expected
    assert len(list((tmp_path / "out" / "checkpoints").glob("[0-9][0-9][0-9].json"))) == len(audit.results)


@pytest.mark.slow
def test_in_memory_torchscript_target_ships_to_workers_as_jit_bytes(
        local_report: tuple[Path, dict[str, Any]], tmp_path: Path, digits_cnn: Any, digits: Any) -> None:
    from sparring.targets import TorchTarget

    tm_path, _ = local_report
    tm = load_threat_model(tm_path)
    with warnings.catch_warnings():  # torch 2.9 deprecates tracing, but users still hand us TorchScript models
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.trace(digits_cnn.model, digits.x_test[:2])
    target = TorchTarget(scripted, digits_cnn.spec)
    data = (digits.x_test, digits.y_test)
    local = run_audit(tm, tmp_path / "a", target=target, data=data)
    with ProcessExecutor(2) as ex:
        shipped = run_audit(tm, tmp_path / "b", target=target, data=data, executor=ex)
    assert not shipped.errors
    assert comparable(report_dict(shipped)) == comparable(report_dict(local))


def test_unpicklable_in_memory_target_is_refused_with_the_fix(
        local_report: tuple[Path, dict[str, Any]], tmp_path: Path, digits_cnn: Any) -> None:
    from sparring.targets import TorchTarget

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    net.hook = lambda x: x  # type: ignore[assignment]  # a lambda attribute: cannot be pickled
    target = TorchTarget(net, digits_cnn.spec)
    with pytest.raises(ParameterError, match=r"cannot be pickled.*local executor"):
        run_audit(load_threat_model(local_report[0]), tmp_path / "o", target=target, executor=ProcessExecutor(1))


@pytest.mark.slow
def test_interrupted_processes_audit_resumes_locally_to_the_same_findings(
        local_report: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    tm, expected = local_report
    seen: list[int] = []

    def interrupt(i: int, n: int, step: Any, result: Any, cached: bool) -> None:
        seen.append(i)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with ProcessExecutor(2) as ex:
        partial = run_audit(load_threat_model(tm), tmp_path / "out", executor=ex, on_step=interrupt)
    assert partial.status == "interrupted" and len(partial.results) == 3
    resumed: list[bool] = []
    audit = run_audit(load_threat_model(tm), tmp_path / "out", resume=True,
                      on_step=lambda i, n, s, r, cached: resumed.append(cached))
    assert resumed.count(True) == 3 and audit.status == "complete"
    assert comparable(report_dict(audit)) == expected


@pytest.mark.slow
def test_driver_killed_mid_audit_then_resume_gives_the_same_findings(
        local_report: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    tm, expected = local_report
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sparring.cli", "audit", str(tm), "--out", str(out),
                             "--no-progress", "--format", "json", "--executor", "processes", "--workers", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    ck = out / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not (ck / "002.json").exists():
        time.sleep(0.02)
    alive = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers (their own session: only ours)
    _, err = proc.communicate()
    assert alive, "the audit finished (or died) before it could be killed: " + err.decode()
    assert not (out / "report.json").exists()
    audit = run_audit(load_threat_model(tm), out, resume=True)
    assert comparable(report_dict(audit)) == expected


def test_outcome_reports_attempts_and_ok() -> None:
    assert Outcome(value=1).ok and not Outcome(error=ValueError("x")).ok


# ------------------------------------------------------------------ LiRA: one task per shadow model
class _CountingProcesses(ProcessExecutor):
    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.tasks: list[int] = []

    def map(self, fn: Any, tasks: Any, **kw: Any) -> list[Outcome[Any]]:
        self.tasks.append(len(tasks))
        return super().map(fn, tasks, **kw)


def test_lira_trains_16_shadow_models_as_16_tasks_with_the_local_scores() -> None:
    from sparring.attacks.privacy import LiRA
    from sparring.attacks.privacy.shadow import random_halves, torch_trainer
    from sparring.data.datasets import load_digits
    from tests.attacks.test_privacy import _mlp

    ds = load_digits(8)
    x, y = torch.cat([ds.x_train, ds.x_test])[:200], torch.cat([ds.y_train, ds.y_test])[:200]
    member = random_halves(1, len(x), torch.Generator().manual_seed(5))[0]
    train = torch_trainer(_mlp, ds.spec, epochs=20, lr=1e-2, batch_size=100)
    target = train(x[member], y[member], 999)
    local = LiRA(n_shadow=16, seed=2)(target, x, y, member, train=train)
    with _CountingProcesses(2) as ex:
        spread = LiRA(n_shadow=16, seed=2)(target, x, y, member, train=train, executor=ex)
    assert ex.tasks == [16]
    assert torch.equal(spread.extras["phi_shadow"], local.extras["phi_shadow"])
    assert torch.equal(spread.scores, local.scores) and spread.auc == local.auc
    assert local.auc > 0.55  # the shadows learned something: the scores separate members a little


def test_cli_refuses_contradictory_executor_options(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sparring.cli import build_cli

    r = CliRunner().invoke(build_cli(), ["audit", "--out", str(tmp_path / "o"), "--ray", "127.0.0.1:1",
                                         "--executor", "processes"])
    assert r.exit_code != 0 and "drop one of them" in r.output
    r = CliRunner().invoke(build_cli(), ["audit", "--out", str(tmp_path / "o"), "--executor", "local",
                                         "--workers", "3"])
    assert r.exit_code != 0 and "--executor processes" in r.output
    assert not (tmp_path / "o" / "checkpoints").exists()  # refused before any step ran


def test_in_memory_http_target_ships_its_settings_not_its_session(digits_cnn: Any, digits: Any) -> None:
    from sparring.audit.runner import _pack_target, _unpack_target
    from sparring.serving import make_server
    from sparring.targets.http import HttpTarget

    with make_server(digits_cnn) as srv:
        sent = HttpTarget(srv.predict_url, digits_cnn.spec, score_kind="logits", timeout=5.0, retries=1,
                          headers={"X-Token": "t0k"}, batch_size=16)
        got = _unpack_target(_pack_target(sent))
        assert isinstance(got, HttpTarget) and got._client is not sent._client
        assert (got.url, got.timeout, got.retries, got.batch_size) == (srv.predict_url, 5.0, 1, 16)
        assert got._client.headers["x-token"] == "t0k"
        x = digits.x_test[:8]
        assert torch.allclose(got.query(x), sent.query(x))
        sent.close()
        got.close()
