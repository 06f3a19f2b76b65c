"""IBP against CROWN: tightness, verified accuracy and time, on the zoo digits MLP and on certifiably trained copies.

Models (all 1×28×28 digits, bounds [0, 1]):

* ``natural``: the zoo ``digits-mlp`` (784-256-128-10, plain cross-entropy training). The zoo ``digits-cnn`` is not
  used: it has ``MaxPool2d`` layers, which the bounds do not support (the script records the error it raises).
* ``ibp``: the same architecture trained with :func:`~sparring.defenses.training.certified.train_certified`,
  ``method="ibp"`` at ``--train-eps`` (Gowal et al. 2018).
* ``crown-ibp``: the same with ``method="crown-ibp"`` (Zhang et al. 2020).
* ``cnn`` (``--cnn``): a small CNN (AvgPool2d, Conv2d, BatchNorm2d, a residual block), naturally trained; CROWN
  with CROWN intermediate bounds costs far more on convolutions (one backward pass per unstable neuron).

For every model and every ``--eps``: clean accuracy, PGD-20 robust accuracy (an upper bound on the true robust
accuracy), verified accuracy by IBP, CROWN and the per-margin best of the two (lower bounds on it), how often each
method gives the tighter bound (per logit interval and per margin), and wall-clock seconds of each verification.
Run::

    .venv/bin/python benchmarks/bench_bounds.py --json benchmarks/results/bounds-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparring import PGD, TorchTarget, zoo
from sparring.data import models
from sparring.data.zoo import train_torch_classifier
from sparring.defenses.certify.bounds import Residual, crown_bounds, interval_bounds
from sparring.defenses.certify.verify import verify
from sparring.defenses.training.certified import train_certified
from sparring.errors import ParameterError


def small_cnn() -> nn.Sequential:
    """AvgPool 28 -> 14, strided conv to 8×7×7, a residual conv block with batch norm, two dense layers."""
    block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    return nn.Sequential(
        nn.AvgPool2d(2), nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), Residual(block),
        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def tightness(target: TorchTarget, x: torch.Tensor, eps: float) -> dict[str, Any]:
    """Per-logit interval widths: how often each method is strictly narrower, and the mean widths."""
    t0 = time.perf_counter()
    ilb, iub = interval_bounds(target, x, eps)
    t1 = time.perf_counter()
    clb, cub = crown_bounds(target, x, eps)
    t2 = time.perf_counter()
    wi, wc = iub - ilb, cub - clb
    n = wi.numel()
    return {
        "outputs": n, "crown_tighter": int((wc < wi).sum()), "ibp_tighter": int((wi < wc).sum()),
        "tie": int((wi == wc).sum()), "mean_width_ibp": float(wi.mean()), "mean_width_crown": float(wc.mean()),
        "seconds_ibp": round(t1 - t0, 4), "seconds_crown": round(t2 - t1, 4),
    }


def evaluate(name: str, target: TorchTarget, x: torch.Tensor, y: torch.Tensor, eps_list: list[float]
             ) -> list[dict[str, Any]]:
    rows = []
    for eps in eps_list:
        res = {m: verify(target, x, y, eps, method=m) for m in ("ibp", "crown", "best")}  # type: ignore[arg-type]
        pgd = PGD(eps=eps, steps=20)(target, x, y)
        row = {
            "model": name, "eps": eps, "n": len(y), "clean": res["best"].clean_accuracy,
            "pgd20_robust": pgd.robust_accuracy,
            "verified": {m: r.verified_accuracy for m, r in res.items()},
            "seconds": {m: round(r.seconds, 4) for m, r in res.items()},
            "margin_wins": res["best"].wins(),
            "logit_bounds": tightness(target, x, eps),
            "pgd_broke_a_verified_point": bool((pgd.success & res["best"].verified).any()),
        }
        rows.append(row)
        v = row["verified"]
        print(f"{name:10s} eps={eps:<6g} clean={row['clean']:.3f} pgd={row['pgd20_robust']:.3f} verified: "
              f"ibp={v['ibp']:.3f} crown={v['crown']:.3f} best={v['best']:.3f}  margin wins {row['margin_wins']}  "
              f"time ibp={row['seconds']['ibp']:.3f}s crown={row['seconds']['crown']:.3f}s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=256, help="test examples")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1])
    ap.add_argument("--train-eps", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cnn", action="store_true", help="also a small Conv/BatchNorm/Residual/AvgPool CNN")
    ap.add_argument("--cnn-n", type=int, default=64, help="test examples for the CNN (CROWN is slow on convs)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = zoo.data("digits-mlp")
    x, y = data.x_test[: args.n], data.y_test[: args.n]
    out: dict[str, Any] = {
        "machine": {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
                    "threads": args.threads, "device": args.device, "cpus": os.cpu_count(),
                    "load_avg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": [], "training_seconds": {},
    }
    cnn_zoo = zoo.load("digits-cnn", device=args.device)
    assert isinstance(cnn_zoo, TorchTarget)
    try:
        verify(cnn_zoo, x[:2], y[:2], 0.01)
    except ParameterError as exc:
        out["digits_cnn_unsupported"] = str(exc)
        print(f"zoo digits-cnn: {str(exc).split('. Supported')[0]} -> skipped")
    natural = zoo.load("digits-mlp", device=args.device)
    assert isinstance(natural, TorchTarget)
    targets: dict[str, TorchTarget] = {"natural": natural}
    for method in ("ibp", "crown-ibp"):
        t0 = time.perf_counter()
        net = train_certified(models.digits_mlp().to(args.device), data, data.spec, eps=args.train_eps,
                              epochs=args.epochs, method=method, seed=0)
        out["training_seconds"][method] = round(time.perf_counter() - t0, 2)
        print(f"trained {method} in {out['training_seconds'][method]:.1f}s", flush=True)
        targets[method] = TorchTarget(net, data.spec)
    if args.cnn:
        t0 = time.perf_counter()
        net = train_torch_classifier(small_cnn().to(args.device), data, data.spec, epochs=10, seed=0)
        out["training_seconds"]["cnn"] = round(time.perf_counter() - t0, 2)
        targets["cnn"] = TorchTarget(net, data.spec, batch_size=32)
    for name, target in targets.items():
        n = args.cnn_n if name == "cnn" else args.n
        out["rows"].extend(evaluate(name, target, x[:n], y[:n], args.eps))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
