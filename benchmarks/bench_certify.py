"""Randomized smoothing on the digits CNN: CERTIFY's sampling throughput, and certified accuracy against radius.

Cohen, Rosenfeld & Kolter (2019), "Certified Adversarial Robustness via Randomized Smoothing", Algorithm 1.

**Throughput.** CERTIFY spends nearly all its time on noisy forward passes, so its speed is judged against the
model itself: the same CNN (1×28×28, trained with σ = 0.25 noise) evaluated by a hand-written loop, ``argmax
model((x - mean) / std)`` under ``torch.no_grad``, at the same batch size, on noisy batches drawn before the clock
starts (one distinct batch per call). Each round certifies ``--inputs`` test digits with ``n0 = --n0`` selection
and ``n = --n-round`` estimation samples each (the selection samples of all inputs share one batch; the defaults
give 10 full batches of 1000), and runs the hand-written forward on exactly as many samples. One uncounted warm-up
round first, then ``--rounds`` rounds, alternating which side goes first. Headline: the median over rounds of the
per-round throughput ratio (both sides of a round run back to back, so they share its disturbances); the ratio of
the median throughputs is reported too. The issue's target: CERTIFY ≥ 0.9× the raw forward. What CERTIFY adds is
drawing the Gaussian noise (``normal_`` into a reused buffer, about 3% of a CNN forward on a CPU), one add, and
counting votes with ``torch.bincount``.

**Certified accuracy.** For each σ in ``--sigmas`` a CNN is trained with that noise (``--epochs``, cached), and the
first ``--n-test`` test digits are certified with ``n0 = 100``, ``n = --n`` and α = 0.001. Reported: certified
accuracy at each radius in ``--radii`` (L2, pixel units in [0, 1]), clean accuracy of ``ĉ_A``, abstention rate,
the largest certifiable radius and the time taken. With the defaults (100 digits, n = 10 000, two σ) this is about
2 million noisy forward passes: about 7 minutes on a 2-core CPU (200 s per σ), plus about two minutes to train the
two models on the first run (they are cached afterwards).

Run: ``.venv/bin/python benchmarks/bench_certify.py --json benchmarks/results/certify-cpu-2threads.json``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparring.data.datasets import load_digits
from sparring.defenses.certify.smoothing import SmoothedClassifier, certified_accuracy_curve
from sparring.defenses.training.noise import noisy_digits_target
from sparring.targets.torch import TorchTarget


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def raw_forward_loop(model: nn.Module, mean: torch.Tensor, std: torch.Tensor, batches: list[torch.Tensor]) -> None:
    """The baseline: the plain model on ready-made batches (predictions only), as a hand-written loop would."""
    inv_std = 1.0 / std
    with torch.no_grad():
        for batch in batches:
            model((batch - mean) * inv_std).argmax(dim=1)


def throughput(a: argparse.Namespace, target: TorchTarget, x: torch.Tensor) -> dict[str, Any]:
    dev = target.device
    smoothed = SmoothedClassifier(target, 0.25, batch_size=a.batch)
    norm = target.spec.norm_tensors(dev)
    assert norm is not None
    per_round = x.shape[0] * (a.n0 + a.n_round)
    if (x.shape[0] * a.n0) % a.batch or (x.shape[0] * a.n_round) % a.batch:
        raise SystemExit(f"--inputs * --n0 and --inputs * --n-round must be multiples of --batch {a.batch}, so that "
                         "both sides run full batches only")
    calls = per_round // a.batch
    gen = torch.Generator(device=dev).manual_seed(0)
    # Distinct batches of noisy digits, drawn before the clock starts: the baseline reads fresh memory each call
    # just as CERTIFY does, and pays nothing for the noise.
    batches = [x[i % x.shape[0]] + 0.25 * torch.randn((a.batch, *x.shape[1:]), generator=gen, device=dev)
               for i in range(calls)]

    def run_certify(n_round: int) -> None:
        smoothed.certify(x, n0=a.n0, n=n_round, generator=torch.Generator(device=dev).manual_seed(1))

    run_certify(max(1, a.batch // max(1, x.shape[0])))  # warm-up (uncounted)
    raw_forward_loop(target.model, *norm, batches[:2])
    times: dict[str, list[float]] = {"certify": [], "raw_forward": []}
    for r in range(a.rounds):
        order = ["certify", "raw_forward"] if r % 2 == 0 else ["raw_forward", "certify"]
        for side in order:
            _sync(dev)
            t0 = time.perf_counter()
            if side == "certify":
                run_certify(a.n_round)
            else:
                raw_forward_loop(target.model, *norm, batches)
            _sync(dev)
            times[side].append(time.perf_counter() - t0)
    sps = {k: per_round / statistics.median(v) for k, v in times.items()}
    # Each round times both sides back to back, so a round's ratio shares its disturbances; the median of the
    # per-round ratios is the headline figure, the ratio of the medians is reported beside it.
    paired = statistics.median(r / c for r, c in zip(times["raw_forward"], times["certify"], strict=True))
    return {
        "samples_per_round": per_round, "batch": a.batch, "inputs": x.shape[0], "n0": a.n0, "n": a.n_round,
        "seconds": times, "samples_per_second": sps, "ratio": paired,
        "ratio_of_medians": sps["certify"] / sps["raw_forward"], "target_ratio": 0.9, "target_met": paired >= 0.9,
        "noisy_rounds": [k for k, v in times.items() if max(v) > 1.5 * min(v)],
    }


def curves(a: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    out: dict[str, Any] = {"n_test": x.shape[0], "n0": 100, "n": a.n, "alpha": 0.001, "radii": a.radii, "sigmas": {}}
    results = {}
    for sigma in a.sigmas:
        base = noisy_digits_target(sigma, size=28, epochs=a.epochs, device=a.device, progress=a.progress)
        target = TorchTarget(base.model, base.spec, batch_size=a.batch)
        gen = torch.Generator(device=target.device).manual_seed(0)
        xd = x.to(target.device)
        with torch.no_grad():
            noisy_x = xd + sigma * torch.randn(x.shape, generator=gen, device=target.device)
            base_noisy = float((target.query_labels(noisy_x).cpu() == y).float().mean())
        res = SmoothedClassifier(target, sigma).certify(x, y, n0=100, n=a.n, alpha=0.001, progress=a.progress)
        results[sigma] = res
        s = res.summary()
        out["sigmas"][f"{sigma:g}"] = {
            "base_clean_accuracy": target.accuracy(x, y), "base_accuracy_under_noise": base_noisy,
            "smoothed_clean_accuracy": s["clean_accuracy"], "abstain_rate": s["abstain_rate"],
            "max_radius": s["max_radius"], "seconds": s["cost"]["seconds"], "samples": s["cost"]["queries"],
        }
    for sigma, curve in certified_accuracy_curve(results, a.radii).items():
        out["sigmas"][f"{sigma:g}"]["certified_accuracy"] = [[r, acc] for r, acc in curve]
    return out


def print_results(res: dict[str, Any]) -> None:
    m = res["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), {res['device']}; "
          f"load average at start {m['load_avg_at_start'][0] if m['load_avg_at_start'] else '?'}")
    t = res.get("throughput")
    if t:
        print(f"\nthroughput, digits CNN 1×28×28, batch {t['batch']}: {t['inputs']} inputs × (n0 {t['n0']} + n "
              f"{t['n']}) = {t['samples_per_round']} samples per round, median of {len(t['seconds']['certify'])}")
        for k, v in t["samples_per_second"].items():
            print(f"  {k:12s} {v:10.0f} samples/s   rounds (s): {', '.join(f'{s:.2f}' for s in t['seconds'][k])}")
        met = "met" if t["target_met"] else "NOT met"
        print(f"  throughput ratio certify / raw forward: median of per-round ratios {t['ratio']:.3f}, ratio of "
              f"medians {t['ratio_of_medians']:.3f} (target >= 0.9: {met})")
        if t["noisy_rounds"]:
            print(f"  WARNING: slowest round > 1.5x the fastest for {', '.join(t['noisy_rounds'])}: re-run when quiet")
    c = res.get("curves")
    if c:
        sig = list(c["sigmas"])
        print(f"\ncertified accuracy, first {c['n_test']} test digits, n0 {c['n0']}, n {c['n']}, alpha {c['alpha']}")
        print(f"{'radius':>8s} " + " ".join(f"{'σ=' + s:>8s}" for s in sig))
        for i, r in enumerate(c["radii"]):
            print(f"{r:8.2f} " + " ".join(f"{c['sigmas'][s]['certified_accuracy'][i][1]:8.2f}" for s in sig))
        for s in sig:
            d = c["sigmas"][s]
            print(f"σ={s}: base clean {d['base_clean_accuracy']:.3f}, base under noise "
                  f"{d['base_accuracy_under_noise']:.3f}, smoothed ĉA {d['smoothed_clean_accuracy']:.3f}, abstain "
                  f"{d['abstain_rate']:.2f}, max radius {d['max_radius']:.3f}, {d['samples']} samples in "
                  f"{d['seconds']:.1f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Randomized smoothing: CERTIFY throughput and certified accuracy curves.")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch", type=int, default=1000, help="noise samples per model call (default 1000)")
    p.add_argument("--inputs", type=int, default=10, help="digits certified per throughput round (default 10)")
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n-round", type=int, default=900, help="estimation samples per input per round (default 900)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--n-test", type=int, default=100, help="test digits for the curves (default 100)")
    p.add_argument("--n", type=int, default=10_000, help="estimation samples per digit for the curves")
    p.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    p.add_argument("--epochs", type=int, default=12, help="noise-training epochs of each CNN (default 12)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads(N); 0 keeps torch's default")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-curves", action="store_true")
    p.add_argument("--progress", action="store_true", help="progress bars while training and certifying")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    res: dict[str, Any] = {"machine": machine_info(), "device": a.device, "config": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}}
    data = load_digits(28)
    if not a.skip_throughput:
        target = noisy_digits_target(0.25, size=28, epochs=a.epochs, device=a.device, progress=a.progress)
        target = TorchTarget(target.model, target.spec, batch_size=a.batch)
        res["throughput"] = throughput(a, target, data.x_test[: a.inputs].to(a.device))
    if not a.skip_curves:
        res["curves"] = curves(a, data.x_test[: a.n_test], data.y_test[: a.n_test])
    print_results(res)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.json.with_suffix(a.json.suffix + ".tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n")
        tmp.replace(a.json)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
