"""Universal adversarial patch (Brown et al. 2017) on held-out images: the issue's "patch of at most 10% of the image,
trained on training images, at least 80% targeted success on held-out test images".

The patch is trained on ``x_train`` only with ``UniversalPatch`` (expectation over transformation: position in the
central ``--region`` share of the feasible positions, i.e. on the sign; scale ``--scale``; rotation ±20°;
brightness ±0.1) and measured on the test split, counting only images whose true class is not the target, as the
mean over ``--placements`` independent random placements (each a fresh draw of position, scale, rotation and
brightness per image). With ``--scale 0.8 1.0`` and ``--size 0.1`` the patch never covers more than 10% of the
image. Controls: untrained patches of the same size and placement (mid-grey, uniform noise, black, white), and the
share of clean non-target images the model already calls the target. Per true class, the success of the first
placement.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_patch.py --seeds 0 1 2
--json benchmarks/results/patch-signs-cpu-1thread.json`` (about 3 minutes per seed on one idle core).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from sparring.attacks.universal import PatchResult, UniversalPatch
from sparring.data import zoo
from sparring.targets.torch import TorchTarget


def held_out(res: PatchResult, target: TorchTarget, x: torch.Tensor, y: torch.Tensor, placements: int,
             seed: int) -> dict[str, Any]:
    runs = [res.evaluate(target, x, y, generator=torch.Generator().manual_seed(seed * 1000 + k))
            for k in range(placements)]
    rates = [r["targeted_success_rate"] for r in runs]
    return {"success_per_placement": [round(r, 4) for r in rates], "success": round(sum(rates) / len(rates), 4),
            "mean_area": round(sum(r["area_fraction"] for r in runs) / len(runs), 4)}


def per_class(res: PatchResult, target: TorchTarget, x: torch.Tensor, y: torch.Tensor, names: tuple[str, ...],
              seed: int) -> dict[str, float]:
    out = {}
    for c, name in enumerate(names):
        if c == res.target_class:
            continue
        m = y == c
        r = res.evaluate(target, x[m], y[m], generator=torch.Generator().manual_seed(seed * 1000))
        out[name] = round(r["targeted_success_rate"], 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="signs-cnn")
    ap.add_argument("--target-class", type=int, default=5, help="5 = 'warning' on signs-cnn")
    ap.add_argument("--size", type=float, default=0.1)
    ap.add_argument("--scale", type=float, nargs=2, default=(0.8, 1.0))
    ap.add_argument("--region", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--placements", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    target = zoo.load(a.model)
    assert isinstance(target, TorchTarget)
    ds = zoo.data(a.model)
    names = tuple(target.spec.class_names or [str(c) for c in range(target.spec.n_classes)])
    x, y = ds.x_test, ds.y_test
    clean_pred = target.query_labels(x).cpu()
    other = y != a.target_class
    out: dict[str, Any] = {
        "model": a.model, "target_class": a.target_class, "target_name": names[a.target_class], "size": a.size,
        "scale": list(a.scale), "region": a.region, "steps": a.steps, "placements": a.placements,
        "n_test": int(y.shape[0]), "n_non_target": int(other.sum()), "threads": a.threads,
        "torch": torch.__version__, "machine": platform.machine(),
        "clean_accuracy": round(float((clean_pred == y).float().mean()), 4),
        "clean_called_target": round(float((clean_pred[other] == a.target_class).float().mean()), 4),
        "seeds": {},
    }
    first: PatchResult | None = None
    for seed in a.seeds:
        t0 = time.perf_counter()
        res = UniversalPatch(a.target_class, size=a.size, scale=tuple(a.scale), region=a.region, steps=a.steps,
                             seed=seed).fit(target, ds.x_train)
        fit_s = time.perf_counter() - t0
        row = {**held_out(res, target, x, y, a.placements, seed), "fit_seconds": round(fit_s, 1),
               "per_true_class": per_class(res, target, x, y, names, seed)}
        out["seeds"][str(seed)] = row
        print(f"seed {seed}: held-out targeted success {row['success']:.3f} "
              f"({row['success_per_placement']}), mean area {row['mean_area']:.3f}, fit {fit_s:.0f} s", flush=True)
        first = first or res
    rates = [r["success"] for r in out["seeds"].values()]
    out["success_mean_over_seeds"] = round(sum(rates) / len(rates), 4)
    out["success_min_over_seeds"] = min(rates)
    assert first is not None
    controls = {"grey": torch.full_like(first.patch, 0.5), "noise": torch.rand_like(first.patch),
                "black": torch.zeros_like(first.patch), "white": torch.ones_like(first.patch)}
    out["controls"] = {k: held_out(dataclasses.replace(first, patch=p), target, x, y, a.placements, 0)["success"]
                       for k, p in controls.items()}
    print(f"mean over seeds {out['success_mean_over_seeds']:.3f}, min {out['success_min_over_seeds']:.3f}; "
          f"controls {out['controls']}; clean images already called the target {out['clean_called_target']}",
          flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
