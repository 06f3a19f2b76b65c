"""Scaling an audit over workers: local vs processes vs Ray, per-task overhead, and a fitted cost model.

The audit: the standard-effort audit of the zoo model ``digits-cnn-pgdat`` (the built-in default threat model,
``sparring/audit/defaults/digits-cnn.yaml``, with the PGD-trained CNN: 200 held-out digits, L∞ and L2 evasion,
masking checks, randomized smoothing). Every step is one task (step-level parallelism; steps keep their seeds, so
every run's findings are compared with the local run's and must be equal).

Measured, each run once (the machine is shared: read the raw seconds as upper bounds):

* ``local``: the steps in this process, one after the other (torch with 1 thread, like each worker);
* ``processes`` with 1 and 2 workers (spawned; pool start-up included);
* ``ray`` with 1 and 2 CPUs (a private one-machine cluster started by the benchmark; start-up excluded, reported
  apart);
* per-task overhead: 40 no-op tasks through a warm pool / cluster, seconds per task (round trip: submit, pickle,
  run, return);
* start-up: the first no-op map on a fresh pool (spawn + import torch + sparring) and ``ray.init``.

Cost model (fitted): ``T(N) = S + o·k + max(W/N, w_max)`` for an audit of ``k`` steps whose work adds up to ``W``
seconds with the longest step ``w_max`` (a step is never split, so N workers cannot beat the longest step), ``o``
the measured per-task overhead and ``S`` the serial part (loading, planning, reports, pool start-up), fitted by
least squares per executor with ``W`` and ``w_max`` from the local run's per-step seconds. The JSON gives the
expected time on N = 1, 2, 4, 8, 16 workers (or nodes with one worker each) for this audit, and the formula to
scale it to another audit size (``W`` grows with the number of points and attack steps; ``k`` with the eps grid).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_scaling.py`` (about 10 minutes on 2 quiet cores); ``--quick`` runs
a 24-point quick-effort audit instead (about 2 minutes). Writes ``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from sparring.audit import load_threat_model, run_audit
from sparring.audit.report.machine import report_dict
from sparring.executors import LocalExecutor, ProcessExecutor, RayExecutor

OUT = Path(__file__).parent / "results" / "scaling.json"


def _noop(shared: Any, task: int) -> int:
    return task


def _comparable(report: dict[str, Any]) -> Any:
    return ([s["measurements"] for s in report["steps"]], report["gates"], report["findings"])


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


def timed_audit(tm_path: Path, out: Path, executor: Any) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    audit = run_audit(load_threat_model(tm_path), out, executor=executor)
    seconds = time.perf_counter() - t0
    if audit.errors:
        raise RuntimeError(f"the audit had errors: {[r.error for r in audit.errors]}")
    return seconds, report_dict(audit)


def overhead(executor: Any, n: int = 40) -> dict[str, float]:
    t0 = time.perf_counter()
    executor.map(_noop, [0], shared=None)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    executor.map(_noop, list(range(n)), shared=None)
    return {"startup_s": round(first, 3), "per_task_s": round((time.perf_counter() - t0) / n, 5)}


def fit(runs: list[dict[str, Any]], k: int, work: float, longest: float, o: float) -> dict[str, Any]:
    """Least-squares S for T(N) = S + o*k + max(W/N, w_max) over this executor's runs (one unknown: a mean)."""
    resid = [r["seconds"] - o * k - max(work / r["workers"], longest) for r in runs]
    s = sum(resid) / len(resid)
    predict = {n: round(s + o * k + max(work / n, longest), 2) for n in (1, 2, 4, 8, 16)}
    err = [round(r["seconds"] - (s + o * k + max(work / r["workers"], longest)), 2) for r in runs]
    return {"S": round(s, 3), "o": o, "k": k, "W": round(work, 3), "w_max": round(longest, 3),
            "predicted_seconds": predict, "residuals": err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 24-point quick-effort audit (smoke run)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray runs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    folder = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    tm = threat_model(args.quick, folder)
    result: dict[str, Any] = {"audit": str(tm), "quick": args.quick, "cpu_count": os.cpu_count(),
                              "load_average_at_start": os.getloadavg(), "runs": [], "overhead": {}}
    secs, ref = timed_audit(tm, folder / "local", LocalExecutor())
    step_s = [s["cost"].get("seconds", 0.0) for s in ref["steps"]]
    k, work, longest = len(step_s), sum(step_s), max(step_s)
    result["runs"].append({"executor": "local", "workers": 1, "seconds": round(secs, 2), "equal_to_local": True})
    result["steps"] = {"k": k, "work_s": round(work, 2), "longest_s": round(longest, 2)}
    print(f"local: {secs:.1f} s ({k} steps, {work:.1f} s of step work, longest {longest:.1f} s)", flush=True)
    kinds = [("processes", lambda n: ProcessExecutor(n))]
    if not args.no_ray:
        kinds.append(("ray", lambda n: RayExecutor(None, workers=n)))
    for name, make in kinds:
        for n in (1, 2):
            ex = make(n)
            try:
                if name == "ray":  # the cluster start is not the audit's: measured apart
                    result["overhead"][f"ray_init_{n}"] = overhead(ex)
                secs, rep = timed_audit(tm, folder / f"{name}{n}", ex)
                if n == 2:
                    result["overhead"][name] = overhead(ex)
            finally:
                ex.close()
            same = _comparable(rep) == _comparable(ref)
            result["runs"].append({"executor": name, "workers": n, "seconds": round(secs, 2), "equal_to_local": same})
            print(f"{name} x{n}: {secs:.1f} s, findings equal to local: {same}", flush=True)
    local_s = result["runs"][0]["seconds"]
    result["speedup_vs_local"] = {f"{r['executor']}x{r['workers']}": round(local_s / r["seconds"], 2)
                                  for r in result["runs"]}
    result["model"] = {}
    for name, _ in kinds:
        runs = [r for r in result["runs"] if r["executor"] == name]
        result["model"][name] = fit(runs, k, work, longest, result["overhead"][name]["per_task_s"])
    result["model"]["formula"] = "T(N) = S + o*k + max(W/N, w_max)"
    result["load_average_at_end"] = os.getloadavg()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k_: result[k_] for k_ in ("speedup_vs_local", "overhead", "model")}, indent=2))
    if not all(r["equal_to_local"] for r in result["runs"]):
        sys.exit("an executor's findings differ from the local run's")


if __name__ == "__main__":
    main()
