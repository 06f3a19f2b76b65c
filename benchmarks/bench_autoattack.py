"""AutoAttack side by side: sparring's reference ensemble against torchattacks' and ART's AutoAttack.

All three attack the same function (raw ``x`` in [0, 1] -> logits of a zoo model, by default the PGD-adversarially
trained ``digits-cnn-pgdat``), on the same first ``--n`` test digits, at the same L∞ budget. Each returned ``x_adv``
is checked (within eps + 1e-6, within [0, 1]) and scored by one shared forward pass. Contestants run one after the
other in separate processes, each with a wall-clock limit (``--timeout``); one that does not finish is reported as
such. Each row has wall ``seconds`` and the process's ``cpu_seconds`` (with ``--threads 1`` the fair measure on a
shared machine). Run it as ``bash scripts/bench.sh autoattack --n 200``. ART's default ensemble takes over an hour on
200 points on one CPU thread: run it in chunks (``--start 0 --n 50``, ``--start 50 --n 50``, ...) side by side and
combine them with ``--merge chunk*.json --json all.json`` (counts and seconds add up).

* sparring: ``AutoAttack(eps, version="standard")``: APGD-CE 100 it., APGD-T 9 targets x 100 it., FAB-T 9 targets,
  Square 5000 queries, each on the points still robust (Croce & Hein 2020).
* torchattacks 3.5.1: ``AutoAttack(norm="Linf", version="standard")`` (its own APGD/APGDT/FAB/Square defaults).
* ART 1.20: ``AutoAttack(estimator, norm=inf, eps, eps_step)`` with its default attack list (PGD, APGD-CE, APGD-DLR,
  DeepFool, Square), the configuration a user gets from ART.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparring.data import zoo
from sparring.targets.torch import TorchTarget

CONTESTANTS = ("sparring", "torchattacks", "art")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _setup(a: argparse.Namespace) -> tuple[TorchTarget, torch.nn.Module, torch.Tensor, torch.Tensor]:
    from bench_evasion import RawToLogits

    torch.set_num_threads(a.threads)
    target = zoo.load(a.model)
    assert isinstance(target, TorchTarget)
    ds = zoo.data(a.model)
    x, y = ds.x_test[a.start: a.start + a.n].float(), ds.y_test[a.start: a.start + a.n].long()
    norm = target.spec.norm_tensors(torch.device("cpu"), torch.float32)
    mean, std = norm if norm is not None else (torch.zeros(1, 1, 1), torch.ones(1, 1, 1))
    model = RawToLogits(target.model, mean, std).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return target, model, x, y


def run_one(a: argparse.Namespace) -> dict[str, Any]:
    """Run one contestant in this process; return its timing and x_adv's score."""
    target, model, x, y = _setup(a)
    torch.manual_seed(0)
    np.random.seed(0)
    extra: dict[str, Any] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    if a.only == "sparring":
        from sparring.attacks.evasion.autoattack import AutoAttack

        r = AutoAttack(eps=a.eps, version="standard", seed=0)(target, x, y)
        x_adv = torch.as_tensor(r.x_adv)
        extra["robust_after"] = r.extras["robust_after"]
        version = _version("sparring")
    elif a.only == "torchattacks":
        import torchattacks

        atk = torchattacks.AutoAttack(model, norm="Linf", eps=a.eps, version="standard", n_classes=10, seed=0)
        x_adv = atk(x, y)
        version = _version("torchattacks")
    else:
        from art.attacks.evasion import AutoAttack as ArtAutoAttack
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
        atk = ArtAutoAttack(estimator=clf, norm=np.inf, eps=a.eps, eps_step=a.eps / 4, batch_size=a.n)
        x_adv = torch.from_numpy(atk.generate(x.numpy(), y.numpy()))
        version = _version("adversarial-robustness-toolbox")
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        pred = target.query(x_adv.float()).argmax(1)
    return {
        "contestant": a.only, "version": version, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
        "robust": int((pred == y).sum()), "n": int(y.shape[0]),
        "max_linf": float((x_adv - x).abs().max()), "in_bounds": bool(x_adv.min() >= 0 and x_adv.max() <= 1),
        **extra,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="digits-cnn-pgdat")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--start", type=int, default=0, help="index of the first test point (to run chunks)")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--timeout", type=float, default=1800.0, help="wall-clock limit per contestant (seconds)")
    p.add_argument("--contestants", default=",".join(CONTESTANTS))
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--only", choices=CONTESTANTS, help=argparse.SUPPRESS)
    p.add_argument("--merge", type=Path, nargs="+", help="combine chunk results (--json files of --start runs)")
    a = p.parse_args()
    if a.merge:
        merge(a.merge, a.json)
        return
    if a.only:
        print(json.dumps(run_one(a)))
        return
    _setup(a)  # trains/caches the model once, outside the timed runs
    rows = []
    for name in a.contestants.split(","):
        cmd = [sys.executable, __file__, "--only", name, "--model", a.model, "--n", str(a.n), "--eps", str(a.eps),
               "--threads", str(a.threads), "--start", str(a.start)]
        t0 = time.perf_counter()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, check=False)
        except subprocess.TimeoutExpired:
            rows.append({"contestant": name, "finished": False, "seconds": round(time.perf_counter() - t0, 1),
                         "note": f"did not finish within {a.timeout:g} s"})
            print(f"{name:13s} did not finish within {a.timeout:g} s", flush=True)
            continue
        if out.returncode != 0:
            rows.append({"contestant": name, "finished": False, "note": out.stderr.strip()[-500:]})
            print(f"{name:13s} failed: {out.stderr.strip()[-300:]}", flush=True)
            continue
        row = {**json.loads(out.stdout.strip().splitlines()[-1]), "finished": True}
        rows.append(row)
        print(f"{name:13s} {row['version']:10s} robust {row['robust']:3d}/{row['n']}  {row['seconds']:8.1f} s  "
              f"({row['cpu_seconds']:.1f} s CPU)  "
              f"max|d| {row['max_linf']:.4f}  in bounds {row['in_bounds']}", flush=True)
    result = {"model": a.model, "start": a.start, "n": a.n, "eps": a.eps, "threads": a.threads,
              "torch": torch.__version__, "platform": platform.platform(), "rows": rows}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2))


def merge(paths: list[Path], out: Path | None) -> None:
    """Chunks of the same points run separately (``--start``): per contestant, robust counts and seconds add up
    (seconds: the sum of the chunks' wall times, i.e. what one process would have taken)."""
    parts = [json.loads(p.read_text()) for p in paths]
    rows: dict[str, dict[str, Any]] = {}
    for part in parts:
        for r in part["rows"]:
            acc = rows.setdefault(r["contestant"], {"contestant": r["contestant"], "robust": 0, "n": 0,
                                                    "seconds": 0.0, "finished": True, "chunks": []})
            acc["finished"] = acc["finished"] and r.get("finished", False)
            acc["chunks"].append({"start": part.get("start", 0), **r})
            if r.get("finished"):
                acc["robust"] += r["robust"]
                acc["n"] += r["n"]
                acc["seconds"] = round(acc["seconds"] + r["seconds"], 2)
                acc["cpu_seconds"] = round(acc.get("cpu_seconds", 0.0) + r.get("cpu_seconds", 0.0), 2)
                acc["version"] = r.get("version")
    result = {**{k: parts[0][k] for k in ("model", "eps", "threads", "torch", "platform")},
              "n": max(r["n"] for r in rows.values()), "merged_from": [p.name for p in paths],
              "rows": list(rows.values())}
    for r in rows.values():
        print(f"{r['contestant']:13s} robust {r['robust']}/{r['n']}  {r['seconds']:.1f} s wall, "
              f"{r.get('cpu_seconds', 0.0):.1f} s CPU (sums over chunks)  finished {r['finished']}")
    if out:
        out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
