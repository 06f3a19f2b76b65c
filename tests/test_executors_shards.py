"""Point shards: an audit step as fixed-size shards gives the same report on every executor and worker count;
randomized-smoothing CERTIFY in shards likewise; the driver sees (and counts on its progress bar) every task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sparring.audit import load_threat_model, run_audit
from sparring.audit.report.machine import report_dict
from sparring.defenses.certify.smoothing import SmoothedClassifier
from sparring.errors import ParameterError
from sparring.executors import LocalExecutor, ProcessExecutor, TaskBar, shard_ranges, shard_seed
from tests.audit.conftest import write_tm
from tests.test_executors import comparable

pytestmark = pytest.mark.usefixtures("one_thread")

N, SHARD = 20, 8  # three shards per shardable step: 8 + 8 + 4 points
TM = {
    "system": {"model": "digits-mlp", "data": {"source": "zoo", "split": "test", "n": N}},
    "attacker": {"knowledge": "white-box", "evasion": [{"norm": "linf", "eps": [0.1]}]},
    "certification": {"smoothing": {"sigma": 0.25, "n0": 8, "n": 32, "radii": [0.0, 0.25]},
                      "bounds": {"eps": [0.001]}},
    "gates": [{"metric": "robust_accuracy", "norm": "linf", "eps": 0.1, "min": 0.5}],
}
SHARDED = {"evasion/pgd/linf/0.1", "certify/smoothing/l2/sigma=0.25", "certify/bounds/linf/0.001",
           "masking/fgsm/linf/0.1", "masking/unbounded/linf/1", "masking/blackbox/linf/0.1", "masking/gradients",
           "masking/randomness"}
DETERMINISTIC = {"certify/bounds/linf/0.001", "masking/fgsm/linf/0.1", "masking/gradients", "masking/randomness"}


def _audit(tmp: Path, name: str, **kw: Any) -> Any:
    tm = load_threat_model(write_tm(tmp / "threat.yaml", **TM))
    audit = run_audit(tm, tmp / name, **kw)
    assert audit.status == "complete" and not audit.errors, [r.error for r in audit.errors]
    return audit


@pytest.fixture(scope="module")
def sharded_local(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[tuple[Any, ...]], Any]:
    seen: list[tuple[Any, ...]] = []
    audit = _audit(tmp_path_factory.mktemp("shards"), "local", shard_points=SHARD,
                   on_task=lambda done, total, step, shard: seen.append((done, total, step.id, shard)))
    return comparable(report_dict(audit)), seen, audit


# ------------------------------------------------------------------ the shard layout
def test_shards_cover_the_points_and_shard_zero_keeps_the_step_seed() -> None:
    assert shard_ranges(20, 8) == [(0, 8), (8, 16), (16, 20)]
    assert shard_ranges(0, 8) == [(0, 0)]
    assert shard_seed(1234, 0) == 1234
    seeds = {shard_seed(1234, i) for i in range(100)}
    assert len(seeds) == 100 and shard_seed(1234, 5) == shard_seed(1234, 5) != shard_seed(1235, 5)
    with pytest.raises(ParameterError, match="shard size must be an integer >= 1"):
        shard_ranges(10, 0)


# ------------------------------------------------------------------ audits
def test_sharded_steps_merge_to_whole_step_results_and_the_driver_sees_every_task(
        sharded_local: tuple[dict[str, Any], list[tuple[Any, ...]], Any]) -> None:
    _, seen, audit = sharded_local
    steps = {r.step_id: r for r in audit.results}
    for sid in SHARDED:
        r = steps[sid]
        assert r.params["shard_points"] == SHARD
        assert all(len(v) == N for v in r.per_point.values()), sid  # every point, once, in order
    ev = steps["evasion/pgd/linf/0.1"]
    robust = np.asarray(ev.per_point["robust"])
    assert ev.value("robust_accuracy") == pytest.approx(robust.mean(), abs=1e-6)
    assert ev.examples["index"] and all(0 <= i < N and not robust[i] for i in ev.examples["index"])
    assert "shard_points" not in steps["baseline/clean"].params  # a check without merge runs whole
    # the on_task callback: every task once, counted 1..total on the driver
    n_tasks = len(audit.results) - len(SHARDED) + 3 * len(SHARDED)
    assert [d for d, *_ in seen] == list(range(1, n_tasks + 1)) and {t for _, t, *_ in seen} == {n_tasks}
    assert sorted(sh for _, _, sid, sh in seen if sid == "evasion/pgd/linf/0.1") == [0, 1, 2]


def test_a_step_in_one_shard_equals_the_unsharded_step(tmp_path: Path) -> None:
    """Shard 0 keeps the step's seed: with a shard as large as the audit set, the numbers are the unsharded ones."""
    whole = _audit(tmp_path, "whole")
    one = _audit(tmp_path, "one", shard_points=N)
    for a, b in zip(whole.results, one.results, strict=True):
        b.params.pop("shard_points", None)
        a.cost.pop("seconds", None)
        b.cost.pop("seconds", None)
        assert a == b, a.step_id
    assert comparable(report_dict(whole))["gates"] == comparable(report_dict(one))["gates"]


def test_deterministic_checks_in_shards_equal_the_whole_step(
        sharded_local: tuple[dict[str, Any], list[tuple[Any, ...]], Any], tmp_path: Path) -> None:
    """Bound propagation, FGSM, the input-gradient and the randomness checks draw nothing: their merged shards are
    the unsharded step, point for point, measurement for measurement and note for note."""
    whole = {r.step_id: r for r in _audit(tmp_path, "whole").results}
    sharded = {r.step_id: r for r in sharded_local[2].results}
    for sid in DETERMINISTIC:
        assert sharded[sid].per_point == whole[sid].per_point, sid
        assert sharded[sid].measurements == whole[sid].measurements, sid
        assert sharded[sid].notes == whole[sid].notes, sid
    assert sharded["masking/gradients"].cost["gradients"] == 2 * N


def test_a_step_on_the_first_points_is_sharded_over_those_points_only() -> None:
    """The gradient-free masking comparison runs on the first ``points`` points: its shards cover exactly those."""
    from sparring.audit.registry import Step
    from sparring.audit.shards import task_list

    step = Step(id="masking/blackbox/linf/0.1", check="gradient-masking", threat="evasion",
                params={"kind": "blackbox", "points": 10, "shard_points": 4}, reason="test")
    tasks, owner = task_list([(step, 7)], n_points=20)
    assert [t[2] for t in tasks] == [(0, 0, 4), (1, 4, 8), (2, 8, 10)] and owner == [0, 0, 0]
    tasks, _ = task_list([(step, 7)], n_points=6)  # fewer audit points than ``points``
    assert [t[2] for t in tasks] == [(0, 0, 4), (1, 4, 6)]


def test_resume_with_another_shard_size_runs_the_sharded_steps_again(tmp_path: Path) -> None:
    _audit(tmp_path, "out", shard_points=SHARD)
    cached: dict[str, bool] = {}
    tm = load_threat_model(tmp_path / "threat.yaml")
    run_audit(tm, tmp_path / "out", resume=True, shard_points=10,
              on_step=lambda i, n, step, result, from_ck: cached.__setitem__(step.id, from_ck))
    assert not any(cached[s] for s in SHARDED) and cached["baseline/clean"]


@pytest.mark.slow  # two pool start-ups: about 40 s on this loaded 2-core machine
def test_sharded_audit_on_1_and_2_worker_processes_equals_the_local_sharded_audit(
        sharded_local: tuple[dict[str, Any], list[tuple[Any, ...]], Any], tmp_path: Path) -> None:
    expected = sharded_local[0]
    for workers in (1, 2):
        seen: list[int] = []

        def count(done: int, total: int, step: Any, shard: int | None, seen: list[int] = seen) -> None:
            seen.append(done)

        with ProcessExecutor(workers) as ex:
            audit = _audit(tmp_path, f"p{workers}", executor=ex, shard_points=SHARD, on_task=count)
        assert comparable(report_dict(audit)) == expected, f"{workers} workers"
        assert seen == list(range(1, len(sharded_local[1]) + 1))


# ------------------------------------------------------------------ the progress bar
def test_task_bar_counts_every_task_it_is_advanced_for() -> None:
    with TaskBar(5, "audit", enabled=True) as bar:  # drawn on stderr (transient), counted here
        for _ in range(5):
            bar.advance()
    assert bar.done == 5


# ------------------------------------------------------------------ randomized-smoothing CERTIFY in shards
def _smoothed(digits_cnn: Any) -> SmoothedClassifier:
    return SmoothedClassifier(digits_cnn, sigma=0.25, seed=7)


def test_sharded_certify_in_one_shard_equals_the_unsharded_certify(digits_cnn: Any, digits: Any) -> None:
    x, y = digits.x_test[:12], digits.y_test[:12]
    whole = _smoothed(digits_cnn).certify(x, y, n0=8, n=64)
    one = _smoothed(digits_cnn).certify(x, y, n0=8, n=64, shard_size=12)
    for f in ("labels", "radii", "counts", "counts_selection", "correct"):
        np.testing.assert_array_equal(getattr(one, f), getattr(whole, f))
    assert one.cost.queries == whole.cost.queries == 12 * 72 and one.params["shard_size"] == 12


@pytest.mark.slow  # a pool start-up: about 19 s on this loaded 2-core machine
def test_sharded_certify_on_processes_equals_the_same_shards_run_locally(digits_cnn: Any, digits: Any) -> None:
    x, y = torch.as_tensor(digits.x_test[:20]), torch.as_tensor(digits.y_test[:20])
    local = _smoothed(digits_cnn).certify(x, y, n0=8, n=64, shard_size=6)
    smoothed = _smoothed(digits_cnn)
    used = smoothed.target.counter.used
    with ProcessExecutor(2) as ex:
        remote = smoothed.certify(x, y, n0=8, n=64, shard_size=6, executor=ex)
    for f in ("labels", "radii", "p_lower", "counts", "counts_selection", "correct"):
        assert torch.equal(getattr(remote, f), getattr(local, f)), f
    assert isinstance(remote.radii, torch.Tensor)  # tensors in, tensors out
    assert remote.cost.queries == 20 * 72 == smoothed.target.counter.used - used  # remote queries counted here
    assert remote.certified_accuracy(0.25) == local.certified_accuracy(0.25)
    again = _smoothed(digits_cnn).certify(x, y, n0=8, n=64, shard_size=6, executor=LocalExecutor())
    assert torch.equal(again.radii, local.radii)  # the default executor is the local one


def test_cli_shard_points_gives_the_library_sharded_report(
        sharded_local: tuple[dict[str, Any], list[tuple[Any, ...]], Any], tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from sparring.cli import build_cli

    write_tm(tmp_path / "threat.yaml", **TM)
    out = tmp_path / "cli"
    r = CliRunner().invoke(build_cli(), ["audit", str(tmp_path / "threat.yaml"), "--out", str(out), "--no-progress",
                                 "--format", "json", "--shard-points", str(SHARD)])
    assert r.exit_code in (0, 6), r.output
    data = json.loads((out / "report.json").read_text())
    assert comparable(data) == json.loads(json.dumps(sharded_local[0]))  # as report.json writes it
    assert {s["id"] for s in data["steps"] if s["params"].get("shard_points") == SHARD} >= SHARDED
    bad = CliRunner().invoke(build_cli(), ["audit", str(tmp_path / "threat.yaml"), "--shard-points", "0"])
    assert bad.exit_code == 2 and "--shard-points" in bad.output
