"""Scaling an audit over workers: local vs processes vs Ray, per-task overhead, and a fitted cost model.

The audit: the standard-effort audit of the zoo model ``digits-cnn-pgdat`` (the built-in default threat model,
``sparring/audit/defaults/digits-cnn.yaml``, with the PGD-trained CNN: 200 held-out digits, L∞ and L2 evasion,
masking checks, randomized smoothing). The evasion and certification steps run as point shards of ``--shard-points``
points (default 25: 8 tasks per step; 0 runs every step whole), so the longest task is a shard, not a whole attack.
Steps and shards keep their seeds, so every run's findings are compared with the local run's and must be equal.

Robust to a loaded machine (the 2-core machine is shared):

* the configurations are **interleaved** (local, processes x1, processes x2, ray x1, ray x2, then again) and each
  runs ``--repeats`` times (default 2); the JSON keeps every run and reports the **median** per configuration;
* ``os.getloadavg()`` is recorded before and after every run, so a slow run can be told from a busy machine;
* speed-ups are ratios of medians measured in the same interleaved rounds.

Measured per configuration: the audit's wall seconds (``ray``: the private cluster's start excluded, reported apart).
Overhead: 40 no-op tasks through a warm 2-worker pool / cluster (seconds per task: submit, pickle, run, return) and
the start-up (the first no-op map on a fresh pool: spawn + import torch + sparring; ``ray.init``).

Cost model: ``T(N) = S + o·k + max(W/N, w_max)`` for ``k`` tasks whose work adds up to ``W`` seconds with the longest
task ``w_max`` (a task is never split, so N workers cannot beat it), ``o`` the measured per-task overhead and ``S``
the serial part (loading, planning, merging, reports, pool start-up). ``k`` and ``w_max`` come from the local runs'
task seconds; ``S`` and ``W`` are fitted per executor by non-negative least squares (``scipy.optimize.nnls``) over
all its runs, so no parameter can come out negative (an earlier fit on a machine with load average 6 gave S < 0).
The JSON gives the expected time on N = 1, 2, 4, 8, 16 workers (or single-CPU nodes) and the residuals.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_scaling.py`` (about 25 minutes on 2 quiet cores: 5 configurations
x 2 repeats); ``--quick`` runs a 24-point quick-effort audit with 8-point shards (about 3 minutes) and writes
``scaling-quick.json`` instead of ``scaling.json`` (both in ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from scipy.optimize import nnls

from sparring.audit import load_threat_model, run_audit
from sparring.audit.report.machine import report_dict
from sparring.executors import LocalExecutor, Outcome, ProcessExecutor, RayExecutor

RESULTS = Path(__file__).parent / "results"


def _noop(shared: Any, task: int) -> int:
    return task


def _comparable(report: dict[str, Any]) -> Any:
    return ([s["measurements"] for s in report["steps"]], report["gates"], report["findings"])


class TimedLocal(LocalExecutor):
    """The local executor, keeping every task's seconds (the work ``W`` and the longest task ``w_max``)."""

    def __init__(self) -> None:
        self.task_seconds: list[float] = []

    def map(self, fn: Any, tasks: Sequence[Any], *, shared: Any = None,
            on_result: Callable[[int, Outcome[Any]], None] | None = None) -> list[Outcome[Any]]:
        out = super().map(fn, tasks, shared=shared, on_result=on_result)
        self.task_seconds += [o.seconds for o in out]
        return out


def threat_model(quick: bool, folder: Path) -> Path:
    from sparring.cli.audit import default_threat_model_path

    tm = yaml.safe_load(default_threat_model_path().read_text())
    tm["system"]["model"] = "digits-cnn-pgdat"
    tm["name"] = "digits-cnn-pgdat, standard effort (bench_scaling)"
    if quick:
        tm["system"]["data"]["n"] = 24
        tm["effort"] = "quick"
        tm["certification"]["smoothing"].update(n0=8, n=64)
    path = folder / "threat.yaml"
    path.write_text(yaml.safe_dump(tm, sort_keys=False), encoding="utf-8")
    return path


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def timed_audit(tm_path: Path, out: Path, executor: Any, shard_points: int | None) -> dict[str, Any]:
    before = _load()
    t0 = time.perf_counter()
    audit = run_audit(load_threat_model(tm_path), out, executor=executor, shard_points=shard_points)
    seconds = time.perf_counter() - t0
    if audit.errors:
        raise RuntimeError(f"the audit had errors: {[r.error for r in audit.errors]}")
    return {"seconds": round(seconds, 2), "load_before": before, "load_after": _load(), "report": report_dict(audit)}


def overhead(executor: Any, n: int = 40) -> dict[str, float]:
    t0 = time.perf_counter()
    executor.map(_noop, [0], shared=None)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    executor.map(_noop, list(range(n)), shared=None)
    return {"startup_s": round(first, 3), "per_task_s": round((time.perf_counter() - t0) / n, 5)}


def fit(runs: list[dict[str, Any]], k: int, longest: float, o: float, measured_work: float) -> dict[str, Any]:
    """Non-negative least squares for ``S`` and ``W`` in ``T(N) - o*k = S + W/N`` over this executor's runs, then
    ``T(N) = S + o*k + max(W/N, w_max)`` (``w_max`` measured: the longest local task). With one worker count only
    (the local runs) ``S`` and ``W`` cannot be told apart: ``W`` is then the measured task seconds, ``S >= 0`` the
    rest."""
    b = np.array([r["seconds"] - o * k for r in runs])
    if len({r["workers"] for r in runs}) < 2:
        s, work = max(0.0, float(np.mean(b)) - measured_work), measured_work
    else:
        (s, work), _ = nnls(np.array([[1.0, 1.0 / r["workers"]] for r in runs]), b)

    def model(n: int) -> float:
        return float(s + o * k + max(work / n, longest))

    return {"S": round(float(s), 3), "o": o, "k": k, "W": round(float(work), 3), "w_max": round(longest, 3),
            "predicted_seconds": {n: round(model(n), 2) for n in (1, 2, 4, 8, 16)},
            "residuals": [round(r["seconds"] - model(r["workers"]), 2) for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 24-point quick-effort audit (smoke run)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray runs")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds (each configuration once per round)")
    ap.add_argument("--shard-points", type=int, default=None,
                    help="points per shard of the evasion/certification steps (default 25, --quick 8; 0: whole)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    shard = (8 if args.quick else 25) if args.shard_points is None else args.shard_points
    shard_points = shard or None
    folder = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    tm = threat_model(args.quick, folder)
    configs: list[tuple[str, int, Callable[[], Any]]] = [("local", 1, TimedLocal),
                                                        ("processes", 1, lambda: ProcessExecutor(1)),
                                                        ("processes", 2, lambda: ProcessExecutor(2))]
    if not args.no_ray:
        configs += [("ray", 1, lambda: RayExecutor(None, workers=1)), ("ray", 2, lambda: RayExecutor(None, workers=2))]
    result: dict[str, Any] = {"audit": str(tm), "quick": args.quick, "shard_points": shard_points,
                              "cpu_count": os.cpu_count(), "repeats": args.repeats,
                              "load_average_at_start": _load(), "runs": [], "overhead": {}}
    ref: Any = None
    task_seconds: list[float] = []
    for rnd in range(args.repeats):
        for name, n, make in configs:
            ex = make()
            try:
                if name == "ray":  # the cluster start is not the audit's: measured apart
                    result["overhead"].setdefault(f"ray_init_{n}", overhead(ex))
                run = timed_audit(tm, folder / f"{name}{n}-{rnd}", ex, shard_points)
                if n == 2 and name not in result["overhead"]:
                    result["overhead"][name] = overhead(ex)
            finally:
                ex.close()
            if isinstance(ex, TimedLocal):
                task_seconds = task_seconds or ex.task_seconds  # the first local run's tasks
            rep = _comparable(run.pop("report"))
            ref = rep if ref is None else ref
            run.update(executor=name, workers=n, round=rnd, equal_to_local=rep == ref)
            result["runs"].append(run)
            print(f"round {rnd} {name} x{n}: {run['seconds']:.1f} s, load {run['load_before'][0]} -> "
                  f"{run['load_after'][0]}, findings equal to local: {run['equal_to_local']}", flush=True)
    k, longest = len(task_seconds), max(task_seconds)
    result["tasks"] = {"k": k, "work_s": round(sum(task_seconds), 2), "longest_s": round(longest, 2)}
    medians = {f"{name}x{n}": statistics.median(r["seconds"] for r in result["runs"]
                                                if r["executor"] == name and r["workers"] == n)
               for name, n, _ in configs}
    result["median_seconds"] = medians
    result["speedup_vs_local"] = {key: round(medians["localx1"] / v, 2) for key, v in medians.items()}
    result["model"] = {"formula": "T(N) = S + o*k + max(W/N, w_max)"}
    local_runs = [r for r in result["runs"] if r["executor"] == "local"]
    result["model"]["local"] = fit(local_runs, k, longest, 0.0, sum(task_seconds))
    for name in dict.fromkeys(c[0] for c in configs if c[0] != "local"):
        runs = [r for r in result["runs"] if r["executor"] == name]
        result["model"][name] = fit(runs, k, longest, result["overhead"][name]["per_task_s"], sum(task_seconds))
    result["load_average_at_end"] = _load()
    out = RESULTS / ("scaling-quick.json" if args.quick else "scaling.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k_: result[k_] for k_ in ("median_seconds", "speedup_vs_local", "overhead", "model")}, indent=2))
    if not all(r["equal_to_local"] for r in result["runs"]):
        sys.exit("an executor's findings differ from the local run's")


if __name__ == "__main__":
    main()
