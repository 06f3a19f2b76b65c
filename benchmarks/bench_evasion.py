"""FGSM and PGD side by side: sparring against torchattacks, foolbox, ART and a hand-written PyTorch loop.

Every contestant attacks the same function, raw ``x`` in [0, 1] -> logits of the zoo ``digits-cnn`` (its input
normalisation wrapped into a plain ``nn.Module`` for the peers, eval mode), on the same test digits, with the same
L∞ budget: PGD (Madry et al. 2018, eq. 2), ``--steps`` steps of size ``--alpha`` from one uniform random start, and
FGSM (Goodfellow et al. 2015, eq. 3), one step of size eps. They run interleaved in one process, round-robin (the
order rotates every round), after one uncounted warm-up round. Reported per contestant: median seconds, ratio to the
hand-written loop, robust accuracy of the returned ``x_adv`` scored by one shared forward pass, whether every
``x_adv`` is within eps (+1e-6) and [0, 1], PGD's robust accuracy over several seeds, and peak memory (see
``benchmarks/README.md`` for what it measures). Run it as ``bash scripts/bench.sh --rounds 5``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparring.data import zoo
from sparring.targets.torch import TorchTarget

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ATTACKS = ("fgsm", "pgd")
HAND = "hand-written"
PEERS = ("torchattacks", "foolbox", "art")
CHOICES = ("sparring", "sparring-no-early-stop", "torchattacks", "foolbox", "art", "hand")


@dataclass
class Contestant:
    """One library: ``fgsm()`` and ``pgd(steps, seed)`` build its attack functions ``(x, y) -> x_adv``.

    Libraries that draw from the global RNGs ignore ``seed``: the harness seeds torch and numpy before every call.
    """

    name: str
    version: str
    fgsm: Callable[[], AttackFn] | None
    pgd: Callable[[int, int], AttackFn] | None
    note: str = ""


@dataclass
class Row:
    attack: str
    contestant: str
    times: list[float] = field(default_factory=list)
    robust: list[int] = field(default_factory=list)  # robust count of every timed round (seed 0)
    robust_seeds: list[int] = field(default_factory=list)  # robust counts for seeds 1.. (PGD only)
    max_linf: float = 0.0
    in_bounds: bool = True
    peak_mib: float | None = None


class RawToLogits(nn.Module):
    """Raw inputs in [0, 1] -> logits: the zoo model with its input normalisation, as one plain module."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("inv_std", 1.0 / std)  # the same arithmetic as TorchTarget, so predictions agree

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model((x - self.mean) * self.inv_std)
        return out


# ---------------------------------------------------------------------------------------------- contestants
def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def make_sparring(a: argparse.Namespace, target: TorchTarget, *, early_stop: bool = True) -> Contestant:
    from sparring.attacks.evasion.fgsm import FGSM
    from sparring.attacks.evasion.pgd import PGD

    def fgsm() -> AttackFn:
        attack = FGSM(eps=a.eps)
        return lambda x, y: attack(target, x, y).x_adv

    def pgd(steps: int, seed: int) -> AttackFn:
        attack = PGD(eps=a.eps, steps=steps, alpha=a.alpha, random_start=True, early_stop=early_stop, seed=seed)
        return lambda x, y: attack(target, x, y).x_adv

    if early_stop:
        return Contestant("sparring", _version("sparring"), fgsm, pgd, "PGD(early_stop=True), the default")
    return Contestant("sparring (no early stop)", _version("sparring"), None, pgd, "PGD(early_stop=False)")


def make_hand(a: argparse.Namespace, model: nn.Module) -> Contestant:
    """The straightforward Madry loop: requires_grad on x, CE, autograd.grad, sign step, clamp; weights untouched."""

    def fgsm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
        return (x.detach() + a.eps * grad.sign()).clamp(0.0, 1.0)

    def pgd(steps: int, seed: int) -> AttackFn:
        def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            lo, hi = x - a.eps, x + a.eps
            x_adv = (x + torch.empty_like(x).uniform_(-a.eps, a.eps)).clamp(0.0, 1.0)
            for _ in range(steps):
                x_adv.requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
                x_adv = x_adv.detach() + a.alpha * grad.sign()
                x_adv = torch.min(torch.max(x_adv, lo), hi).clamp(0.0, 1.0)
            return x_adv

        return run

    return Contestant(HAND, torch.__version__, lambda: fgsm, pgd, "plain PyTorch, global torch RNG")


def make_torchattacks(a: argparse.Namespace, model: nn.Module) -> Contestant:
    import torchattacks

    return Contestant(
        "torchattacks", _version("torchattacks"), lambda: torchattacks.FGSM(model, eps=a.eps),
        lambda steps, seed: torchattacks.PGD(model, eps=a.eps, alpha=a.alpha, steps=steps, random_start=True),
        "global torch RNG")


def make_foolbox(a: argparse.Namespace, model: nn.Module) -> Contestant:
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=a.device)

    def wrap(attack: Any) -> AttackFn:
        def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            _raw, clipped, _success = attack(fmodel, x, y, epsilons=a.eps)
            return clipped  # type: ignore[no-any-return]

        return run

    def pgd(steps: int, seed: int) -> AttackFn:
        return wrap(fb.attacks.LinfPGD(abs_stepsize=a.alpha, steps=steps, random_start=True))

    return Contestant("foolbox", _version("foolbox"), lambda: wrap(fb.attacks.FGSM()), pgd,
                      "PyTorchModel bounds (0,1), clipped output, global torch RNG")


def make_art(a: argparse.Namespace, model: nn.Module, shape: tuple[int, ...], n_classes: int) -> Contestant:
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=n_classes,
                            clip_values=(0.0, 1.0), device_type="gpu" if a.device.startswith("cuda") else "cpu")

    def wrap(attack: Any) -> AttackFn:
        def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(attack.generate(x.cpu().numpy(), y.cpu().numpy())).to(x.device)

        return run

    def pgd(steps: int, seed: int) -> AttackFn:
        # num_random_init=1: one run from one uniform random start in the ball (0 would start at x itself).
        return wrap(ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=a.eps, eps_step=a.alpha, max_iter=steps,
                                                    num_random_init=1, batch_size=a.n, verbose=False))

    return Contestant("art", _version("adversarial-robustness-toolbox"),
                      lambda: wrap(FastGradientMethod(clf, norm=np.inf, eps=a.eps, batch_size=a.n)), pgd,
                      "PyTorchClassifier clip_values (0,1), numpy in/out, global numpy RNG")


# ---------------------------------------------------------------------------------------------- measuring
def _seed(seed: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def _proc_kib(name: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(name + ":"))


def memory_method(device: torch.device) -> str:
    """Set up the peak-memory pass; returns what is measured, or "" where it cannot be measured."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated above the allocation before the call"
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _proc_kib("VmHWM")
        libc = ctypes.CDLL("libc.so.6")
    except (OSError, StopIteration):
        return ""
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD, fixed: large buffers are unmapped when freed
    libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    return ("growth of peak RSS (VmHWM after clear_refs) in one call; fresh process, 1 torch thread, glibc mmap "
            "threshold 64 KiB, smaller of 2 calls after a warm-up")


def peak_memory_mib(fn: AttackFn, x: torch.Tensor, y: torch.Tensor) -> float:
    gc.collect()
    _seed()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        out = fn(x, y)
        torch.cuda.synchronize(x.device)
        return (torch.cuda.max_memory_allocated(x.device) - base) / 2**20
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = _proc_kib("VmRSS")
    out = fn(x, y)  # noqa: F841 (the returned x_adv stays alive until the peak is read)
    return (_proc_kib("VmHWM") - base) / 1024


@dataclass
class Setup:
    """The shared pieces: data, the model as raw x -> logits, and each contestant's attack functions."""

    x: torch.Tensor
    y: torch.Tensor
    model: nn.Module
    contestants: list[Contestant]
    fns: dict[tuple[str, str], AttackFn]  # the timed configuration
    short: dict[tuple[str, str], AttackFn]  # warm-up and memory passes: same batch, shapes and code paths
    skipped: dict[str, str]

    def robust_count(self, x_adv: torch.Tensor) -> int:
        with torch.no_grad():
            return int((self.model(x_adv).argmax(1) == self.y).sum())


def setup(a: argparse.Namespace) -> Setup:
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    target = zoo.load("digits-cnn", device=device, batch_size=a.n)
    assert isinstance(target, TorchTarget)
    data = zoo.data("digits-cnn")
    x, y = data.x_test[: a.n].to(device), data.y_test[: a.n].to(device)
    a.n = int(x.shape[0])
    norm = target.spec.norm_tensors(device, torch.float32)
    assert norm is not None
    model = RawToLogits(target.model, *norm).to(device).eval()
    builders: dict[str, Callable[[], Contestant]] = {
        "sparring": lambda: make_sparring(a, target),
        "sparring-no-early-stop": lambda: make_sparring(a, target, early_stop=False),
        "torchattacks": lambda: make_torchattacks(a, model),
        "foolbox": lambda: make_foolbox(a, model),
        "art": lambda: make_art(a, model, target.spec.shape, target.spec.n_classes),
        "hand": lambda: make_hand(a, model),
    }
    su = Setup(x, y, model, [], {}, {}, {})
    for key in a.contestants:
        try:
            su.contestants.append(builders[key]())
        except ImportError as exc:
            su.skipped[key] = f"not installed ({exc})"
            print(f"skipping {key}: {exc}", file=sys.stderr)
    for c in su.contestants:
        if c.fgsm is not None and "fgsm" in a.attacks:
            su.fns["fgsm", c.name] = su.short["fgsm", c.name] = c.fgsm()
        if c.pgd is not None and "pgd" in a.attacks:
            su.fns["pgd", c.name] = c.pgd(a.steps, 0)
            su.short["pgd", c.name] = c.pgd(min(a.warmup_steps, a.steps), 0)
    return su


def memory_probe(a: argparse.Namespace) -> dict[str, float]:
    """Peak memory of every short attack function, in this (fresh) process; keys ``"attack/contestant"``."""
    su = setup(a)
    if not memory_method(torch.device(a.device)):
        return {}
    for fn in su.short.values():
        fn(su.x, su.y)
    return {f"{k[0]}/{k[1]}": min(peak_memory_mib(fn, su.x, su.y) for _ in range(2)) for k, fn in su.short.items()}


def run_memory_pass(a: argparse.Namespace) -> tuple[str, dict[str, float]]:
    """On CPU a fresh 1-thread process measures (a warm multi-threaded one gave figures varying by ±10 MiB)."""
    if a.device.startswith("cuda"):
        return memory_method(torch.device(a.device)), memory_probe(a)
    argv = [sys.executable, __file__, "--memory-probe", "--threads", "1", "--device", a.device, "--n", str(a.n),
            "--eps", str(a.eps), "--alpha", str(a.alpha), "--steps", str(a.steps),
            "--warmup-steps", str(a.warmup_steps), "--attacks", *a.attacks, "--contestants", *a.contestants]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"memory pass failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return "", {}
    peaks: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return (memory_method(torch.device("cpu")) if peaks else ""), peaks


def run_benchmark(a: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()  # other work on the machine skews timings; recorded with the results
    su = setup(a)
    x, y, fns, device = su.x, su.y, su.fns, su.x.device
    torchvision_loaded = "torchvision" in sys.modules
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    names = [c.name for c in su.contestants]
    rows = {key: Row(*key) for key in sorted(fns, key=lambda k: (ATTACKS.index(k[0]), names.index(k[1])))}

    for r in range(a.rounds + 1):
        order = names[r % len(names):] + names[: r % len(names)]
        for attack, name in ((attack, name) for attack in ATTACKS for name in order if (attack, name) in fns):
            _seed()
            sync()
            t0 = time.perf_counter()
            x_adv = (fns if r else su.short)[attack, name](x, y)
            sync()
            dt = time.perf_counter() - t0
            if r == 0:
                continue
            row = rows[attack, name]
            row.times.append(dt)
            x_adv = torch.as_tensor(x_adv).to(device, torch.float32)
            row.robust.append(su.robust_count(x_adv))
            row.max_linf = max(row.max_linf, float((x_adv - x).abs().amax()))
            row.in_bounds &= bool(x_adv.shape == x.shape and torch.isfinite(x_adv).all()
                                  and x_adv.min() >= -1e-6 and x_adv.max() <= 1 + 1e-6)
            print(f"round {r}/{a.rounds}  {attack:4s}  {name:26s} {dt:8.3f} s", file=sys.stderr)

    # Strength: PGD's robust accuracy depends on the random start, so every contestant also runs seeds 1..K-1.
    for c in su.contestants:
        if c.pgd is None or ("pgd", c.name) not in rows:
            continue
        for s in range(1, a.strength_seeds):
            _seed(s)
            rows["pgd", c.name].robust_seeds.append(su.robust_count(torch.as_tensor(c.pgd(a.steps, s)(x, y))))
            print(f"strength  seed {s}  {c.name}", file=sys.stderr)

    mem_method, peaks = run_memory_pass(a) if a.memory else ("", {})
    for (attack, name), row in rows.items():
        row.peak_mib = peaks.get(f"{attack}/{name}")

    results = [summarise(row, rows, a) for row in rows.values()]
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**machine_info(), "load_avg_at_start": load_at_start},
        "config": {"model": "digits-cnn", "n": a.n, "eps": a.eps, "alpha": a.alpha, "steps": a.steps,
                   "random_start": True, "rounds": a.rounds, "warmup_and_memory_steps": a.warmup_steps,
                   "strength_seeds": a.strength_seeds, "device": str(device), "timed_seed": 0},
        "clean_accuracy": su.robust_count(x) / a.n,
        "memory_method": mem_method or "not measured",
        "torchvision_imported": torchvision_loaded,
        "skipped": su.skipped,
        "contestants": {c.name: {"version": c.version, "note": c.note} for c in su.contestants},
        "results": results,
        "targets": check_targets(results),
    }


def summarise(row: Row, rows: dict[tuple[str, str], Row], a: argparse.Namespace) -> dict[str, Any]:
    med = statistics.median(row.times)
    hand = rows.get((row.attack, HAND))
    seeds = [row.robust[-1], *row.robust_seeds] if row.robust_seeds else []
    return {
        "attack": row.attack, "contestant": row.contestant, "median_s": med, "min_s": min(row.times),
        "max_s": max(row.times), "times_s": row.times,
        "ratio_to_hand": med / statistics.median(hand.times) if hand else None,
        "robust_count": row.robust[-1], "robust_accuracy": row.robust[-1] / a.n,
        "robust_stable_across_rounds": len(set(row.robust)) == 1, "robust_count_by_seed": seeds,
        "robust_accuracy_mean_over_seeds": statistics.fmean(seeds) / a.n if seeds else None,
        "max_linf": row.max_linf, "valid": row.max_linf <= a.eps + 1e-6 and row.in_bounds,
        "peak_mib": row.peak_mib,
    }


def check_targets(results: list[dict[str, Any]]) -> dict[str, dict[str, bool]]:
    """The issue's targets for sparring: robust accuracy <= every peer's + 1 example; time <= 0.85x hand, < peers.

    The robust-accuracy target is checked on the timed run (seed 0) and, for PGD, on the mean over the seeds.
    """
    out: dict[str, dict[str, bool]] = {}
    for attack in ATTACKS:
        by = {r["contestant"]: r for r in results if r["attack"] == attack}
        sp, peers = by.get("sparring"), [by[p] for p in PEERS if p in by]
        if sp is None or not peers:
            continue
        out[attack] = {
            "robust_le_every_peer_plus_1": all(sp["robust_count"] <= p["robust_count"] + 1 for p in peers),
            "time_le_0.85x_hand": sp["ratio_to_hand"] is not None and sp["ratio_to_hand"] <= 0.85,
            "faster_than_every_peer": all(sp["median_s"] < p["median_s"] for p in peers),
        }
        if sp["robust_count_by_seed"] and all(p["robust_count_by_seed"] for p in peers):
            out[attack]["mean_robust_over_seeds_le_every_peer_plus_1"] = all(
                statistics.fmean(sp["robust_count_by_seed"]) <= statistics.fmean(p["robust_count_by_seed"]) + 1
                for p in peers)
    return out


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_table(res: dict[str, Any]) -> None:
    m, c = res["machine"], res["config"]
    print(f"\ndigits-cnn, n={c['n']}, L∞ eps={c['eps']}, PGD steps={c['steps']} alpha={c['alpha']} random start; "
          f"clean accuracy {res['clean_accuracy']:.4f}")
    print(f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), {c['device']}; "
          f"median of {c['rounds']} rounds after 1 warm-up; load average at start {m['load_avg_at_start'][0]:.2f}")
    head = (f"{'attack':6s} {'contestant':24s} {'median s':>8s} {'min-max s':>15s} {'x hand':>6s} {'robust':>8s} "
            f"{'seeds mean':>10s} {'valid':>5s} {'peak MiB':>8s}")
    print(head + "\n" + "-" * len(head))
    for r in res["results"]:
        ratio = f"{r['ratio_to_hand']:.2f}" if r["ratio_to_hand"] is not None else "-"
        robust = f"{r['robust_count']}/{c['n']}" + ("" if r["robust_stable_across_rounds"] else "*")
        seeds = f"{r['robust_accuracy_mean_over_seeds']:.4f}" if r["robust_count_by_seed"] else "-"
        mem = f"{r['peak_mib']:.1f}" if r["peak_mib"] is not None else "-"
        print(f"{r['attack']:6s} {r['contestant']:24s} {r['median_s']:8.3f} {r['min_s']:7.3f}-{r['max_s']:<7.3f} "
              f"{ratio:>6s} {robust:>8s} {seeds:>10s} {'yes' if r['valid'] else 'NO':>5s} {mem:>8s}")
    print(f"robust: examples still correct (seed 0; * varied between rounds); seeds mean: PGD robust accuracy over "
          f"seeds 0..{c['strength_seeds'] - 1}\npeak memory: {res['memory_method']}\n"
          f"torchvision imported: {res['torchvision_imported']}")
    noisy = [f"{r['attack']}/{r['contestant']}" for r in res["results"] if r["max_s"] > 1.5 * r["min_s"]]
    if noisy:
        print(f"WARNING: slowest round > 1.5x the fastest for {', '.join(noisy)}: other load disturbed the timings; "
              "re-run on a quiet machine")
    for attack, checks in res["targets"].items():
        print(f"targets ({attack}): " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in checks.items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="FGSM and PGD: sparring vs torchattacks, foolbox, ART, a hand loop.")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up round (default 5)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads(N); 0 keeps torch's default")
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.add_argument("--n", type=int, default=256, help="number of test digits, one batch (default 256)")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=2,
                   help="PGD steps in the warm-up round and the memory pass (same batch and code paths; default 2)")
    p.add_argument("--strength-seeds", type=int, default=5,
                   help="PGD robust accuracy over seeds 0..K-1 (untimed; seed 0 is the timed run; default 5)")
    p.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    p.add_argument("--contestants", nargs="+", choices=CHOICES, default=list(CHOICES))
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory pass")
    p.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)  # internal: the memory pass
    a = p.parse_args(argv)
    if a.rounds < 1 or a.steps < 1 or a.n < 1:
        p.error(f"--rounds, --steps and --n must be >= 1; got {a.rounds}, {a.steps}, {a.n}")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda asked for, but torch.cuda.is_available() is False here; use --device cpu")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # peers' own deprecations are not what we measure
        if a.memory_probe:
            print(json.dumps(memory_probe(a)))
            return 0
        res = run_benchmark(a)
    print_table(res)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.json.with_suffix(a.json.suffix + ".tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n")
        tmp.replace(a.json)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
