"""FGSM and PGD-20 side by side: sparring against torchattacks, foolbox, ART and a hand-written PyTorch loop.

Every contestant attacks the same function, raw ``x`` in [0, 1] -> logits of the zoo ``digits-cnn`` (the
normalisation the zoo target applies inside is wrapped into a plain ``nn.Module`` for the peers, in eval mode), on
the same batch of test digits, with the same L∞ budget. PGD (Madry et al. 2018) runs ``--steps`` steps of size
``--alpha`` from one uniform random start; FGSM (Goodfellow et al. 2015) is one step of size eps.

The contestants run interleaved in one process, round-robin (the order rotates every round), after one warm-up
round that is not counted. Per contestant the table reports the median wall-clock seconds of a call, the ratio to
the hand-written loop, the robust accuracy of the returned ``x_adv`` (every contestant's examples are scored by the
same forward pass), whether every ``x_adv`` lies within eps (+1e-6) and the [0, 1] bounds, and peak memory.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above what was allocated before the call. On CPU, the
growth of the process's peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs`` before each call)
during one call, in a separate untimed pass; glibc's mmap threshold is fixed at 64 KiB for that pass so freed
buffers leave the resident set instead of being recycled unseen. It covers everything a call allocates (torch
tensors, numpy copies, Python objects) and the returned ``x_adv``.

Run it through ``bash scripts/bench.sh --rounds 5`` (a separate ``.venv-bench`` with the peers pinned).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
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


@dataclass(frozen=True)
class Config:
    eps: float
    alpha: float
    steps: int
    n: int
    device: torch.device


@dataclass
class Contestant:
    """One library: a builder per attack; ``pgd(steps)`` returns the attack function for that many steps."""

    name: str
    version: str
    fgsm: Callable[[], AttackFn] | None
    pgd: Callable[[int], AttackFn] | None
    note: str = ""


@dataclass
class Row:
    attack: str
    contestant: str
    times: list[float] = field(default_factory=list)
    robust: list[float] = field(default_factory=list)
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


def make_sparring(cfg: Config, target: TorchTarget, *, early_stop: bool = True) -> Contestant:
    from sparring.attacks.evasion.fgsm import FGSM
    from sparring.attacks.evasion.pgd import PGD

    def fgsm() -> AttackFn:
        attack = FGSM(eps=cfg.eps)
        return lambda x, y: attack(target, x, y).x_adv

    def pgd(steps: int) -> AttackFn:
        attack = PGD(eps=cfg.eps, steps=steps, alpha=cfg.alpha, random_start=True, early_stop=early_stop, seed=0)
        return lambda x, y: attack(target, x, y).x_adv

    if early_stop:
        return Contestant("sparring", _version("sparring"), fgsm, pgd, "PGD(early_stop=True), the default")
    return Contestant("sparring (no early stop)", _version("sparring"), None, pgd, "PGD(early_stop=False)")


def make_hand(cfg: Config, model: nn.Module) -> Contestant:
    """The straightforward Madry loop: requires_grad on x, CE, autograd.grad, sign step, clamp; weights untouched."""

    def fgsm() -> AttackFn:
        def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
            return (x.detach() + cfg.eps * grad.sign()).clamp(0.0, 1.0)

        return run

    def pgd(steps: int) -> AttackFn:
        def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            lo, hi = x - cfg.eps, x + cfg.eps
            x_adv = (x + torch.empty_like(x).uniform_(-cfg.eps, cfg.eps)).clamp(0.0, 1.0)
            for _ in range(steps):
                x_adv.requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
                x_adv = x_adv.detach() + cfg.alpha * grad.sign()
                x_adv = torch.min(torch.max(x_adv, lo), hi).clamp(0.0, 1.0)
            return x_adv

        return run

    return Contestant(HAND, torch.__version__, fgsm, pgd, "plain PyTorch, global RNG")


def make_torchattacks(cfg: Config, model: nn.Module) -> Contestant:
    import torchattacks

    def fgsm() -> AttackFn:
        attack = torchattacks.FGSM(model, eps=cfg.eps)
        return lambda x, y: attack(x, y)

    def pgd(steps: int) -> AttackFn:
        attack = torchattacks.PGD(model, eps=cfg.eps, alpha=cfg.alpha, steps=steps, random_start=True)
        return lambda x, y: attack(x, y)

    return Contestant("torchattacks", _version("torchattacks"), fgsm, pgd, "global torch RNG, seeded")


def make_foolbox(cfg: Config, model: nn.Module) -> Contestant:
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=cfg.device)

    def wrap(attack: Any) -> AttackFn:
        def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            _raw, clipped, _success = attack(fmodel, x, y, epsilons=cfg.eps)
            return clipped  # type: ignore[no-any-return]

        return run

    def fgsm() -> AttackFn:
        return wrap(fb.attacks.FGSM())

    def pgd(steps: int) -> AttackFn:
        return wrap(fb.attacks.LinfPGD(abs_stepsize=cfg.alpha, steps=steps, random_start=True))

    return Contestant("foolbox", _version("foolbox"), fgsm, pgd, "PyTorchModel bounds (0,1), clipped output")


def make_art(cfg: Config, model: nn.Module, shape: tuple[int, ...], n_classes: int) -> Contestant:
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=n_classes, clip_values=(0.0, 1.0),
        device_type="gpu" if cfg.device.type == "cuda" else "cpu",
    )

    def wrap(attack: Any) -> AttackFn:
        def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = attack.generate(x.cpu().numpy(), y.cpu().numpy())
            return torch.from_numpy(out).to(x.device)

        return run

    def fgsm() -> AttackFn:
        return wrap(FastGradientMethod(clf, norm=np.inf, eps=cfg.eps, batch_size=cfg.n))

    def pgd(steps: int) -> AttackFn:
        # num_random_init=1: one run from one uniform random start in the ball (0 would start at x itself).
        return wrap(ProjectedGradientDescentPyTorch(
            clf, norm=np.inf, eps=cfg.eps, eps_step=cfg.alpha, max_iter=steps, num_random_init=1,
            batch_size=cfg.n, verbose=False,
        ))

    return Contestant("art", _version("adversarial-robustness-toolbox"), fgsm, pgd,
                      "PyTorchClassifier clip (0,1), numpy in/out, global numpy RNG")


# ---------------------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def _proc_kib(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise OSError(f"{field_name} not in /proc/self/status")


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated above the allocation before the call"
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _proc_kib("VmHWM")
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, so large buffers are unmapped when freed
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except OSError:
        return ""
    return "growth of peak RSS (VmHWM after clear_refs) during one call, glibc mmap threshold 64 KiB"


def peak_memory_mib(fn: AttackFn, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    gc.collect()
    _seed()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn(x, y)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del out
        return (peak - base) / 2**20
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = _proc_kib("VmRSS")
    out = fn(x, y)
    peak = _proc_kib("VmHWM")
    del out
    return (peak - base) / 1024


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    target = zoo.load("digits-cnn", device=device, batch_size=args.n)
    assert isinstance(target, TorchTarget)
    data = zoo.data("digits-cnn")
    x, y = data.x_test[: args.n].to(device), data.y_test[: args.n].to(device)
    norm = target.spec.norm_tensors(device, torch.float32)
    assert norm is not None
    model = RawToLogits(target.model, *norm).to(device).eval()
    cfg = Config(eps=args.eps, alpha=args.alpha, steps=args.steps, n=int(x.shape[0]), device=device)

    builders: dict[str, Callable[[], Contestant]] = {
        "sparring": lambda: make_sparring(cfg, target),
        "sparring-no-early-stop": lambda: make_sparring(cfg, target, early_stop=False),
        "torchattacks": lambda: make_torchattacks(cfg, model),
        "foolbox": lambda: make_foolbox(cfg, model),
        "art": lambda: make_art(cfg, model, target.spec.shape, target.spec.n_classes),
        "hand": lambda: make_hand(cfg, model),
    }
    contestants, skipped = [], {}
    for key in args.contestants:
        try:
            contestants.append(builders[key]())
        except ImportError as exc:
            skipped[key] = f"not installed ({exc})"
            print(f"skipping {key}: {exc}", file=sys.stderr)
    torchvision_loaded = "torchvision" in sys.modules

    # The attack functions: timed config, and a short warm-up/memory config (same batch, shapes and code paths).
    fns: dict[tuple[str, str], AttackFn] = {}
    short: dict[tuple[str, str], AttackFn] = {}
    for c in contestants:
        if c.fgsm is not None and "fgsm" in args.attacks:
            fns["fgsm", c.name] = short["fgsm", c.name] = c.fgsm()
        if c.pgd is not None and "pgd" in args.attacks:
            fns["pgd", c.name] = c.pgd(cfg.steps)
            short["pgd", c.name] = c.pgd(min(args.warmup_steps, cfg.steps))
    names = [c.name for c in contestants]
    rows = {key: Row(*key) for key in sorted(fns, key=lambda k: (ATTACKS.index(k[0]), names.index(k[1])))}

    with torch.no_grad():
        clean_acc = float((model(x).argmax(1) == y).float().mean())
    for r in range(args.rounds + 1):
        order = names[r % len(names):] + names[: r % len(names)]
        for attack in ATTACKS:
            for name in order:
                if (attack, name) not in fns:
                    continue
                fn = (fns if r else short)[attack, name]
                _seed()
                _sync(device)
                t0 = time.perf_counter()
                x_adv = fn(x, y)
                _sync(device)
                dt = time.perf_counter() - t0
                if r == 0:
                    continue
                row = rows[attack, name]
                row.times.append(dt)
                x_adv = torch.as_tensor(x_adv).to(device, torch.float32)
                with torch.no_grad():
                    row.robust.append(float((model(x_adv).argmax(1) == y).float().mean()))
                row.max_linf = max(row.max_linf, float((x_adv - x).abs().amax()))
                row.in_bounds &= bool(x_adv.shape == x.shape and torch.isfinite(x_adv).all()
                                      and x_adv.min() >= -1e-6 and x_adv.max() <= 1 + 1e-6)
                print(f"round {r}/{args.rounds}  {attack:4s}  {name:26s} {dt:8.3f} s", file=sys.stderr)

    mem_method = memory_method(device) if args.memory else ""
    if mem_method:
        for key, fn in short.items():
            rows[key].peak_mib = peak_memory_mib(fn, x, y, device)

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "config": {"model": "digits-cnn", "n": cfg.n, "eps": cfg.eps, "alpha": cfg.alpha, "steps": cfg.steps,
                   "random_start": True, "rounds": args.rounds, "warmup_steps": args.warmup_steps,
                   "memory_steps": args.warmup_steps, "device": str(device), "seed": 0},
        "clean_accuracy": clean_acc,
        "memory_method": mem_method or "not measured",
        "torchvision_imported": torchvision_loaded,
        "skipped": skipped,
        "contestants": {c.name: {"version": c.version, "note": c.note} for c in contestants},
        "results": [summarise(row, rows, cfg) for row in rows.values()],
    }
    result["targets"] = check_targets(result["results"], cfg.n)
    return result


def summarise(row: Row, rows: dict[tuple[str, str], Row], cfg: Config) -> dict[str, Any]:
    med = statistics.median(row.times)
    hand = rows.get((row.attack, HAND))
    ratio = med / statistics.median(hand.times) if hand and hand.times else None
    return {
        "attack": row.attack, "contestant": row.contestant, "median_s": med, "min_s": min(row.times),
        "max_s": max(row.times), "times_s": row.times, "ratio_to_hand": ratio,
        "robust_accuracy": row.robust[-1], "robust_accuracy_stable": len(set(row.robust)) == 1,
        "max_linf": row.max_linf, "valid": row.max_linf <= cfg.eps + 1e-6 and row.in_bounds,
        "peak_mib": row.peak_mib,
    }


def check_targets(results: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """The issue's targets for sparring: robust accuracy <= every peer's + 1 example; time <= 0.85x hand, < peers."""
    out: dict[str, Any] = {}
    for attack in ATTACKS:
        by = {r["contestant"]: r for r in results if r["attack"] == attack}
        sp, peers = by.get("sparring"), [by[p] for p in PEERS if p in by]
        if sp is None or not peers:
            continue
        out[attack] = {
            "robust_accuracy_le_peers": all(sp["robust_accuracy"] <= p["robust_accuracy"] + 1 / n + 1e-9
                                            for p in peers),
            "time_le_0.85_hand": sp["ratio_to_hand"] is not None and sp["ratio_to_hand"] <= 0.85,
            "faster_than_every_peer": all(sp["median_s"] < p["median_s"] for p in peers),
        }
    return out


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_table(res: dict[str, Any]) -> None:
    m, c = res["machine"], res["config"]
    print(f"\ndigits-cnn, n={c['n']}, L∞ eps={c['eps']}, PGD steps={c['steps']} alpha={c['alpha']} random start; "
          f"clean accuracy {res['clean_accuracy']:.4f}")
    print(f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), device {c['device']}; "
          f"median of {c['rounds']} rounds after 1 warm-up round")
    head = f"{'attack':6s} {'contestant':26s} {'median s':>9s} {'min-max s':>15s} {'x hand':>7s} {'robust acc':>10s} " \
           f"{'valid':>5s} {'peak MiB':>8s}"
    print(head)
    print("-" * len(head))
    for r in res["results"]:
        ratio = f"{r['ratio_to_hand']:.2f}" if r["ratio_to_hand"] is not None else "-"
        mem = f"{r['peak_mib']:.1f}" if r["peak_mib"] is not None else "-"
        acc = f"{r['robust_accuracy']:.4f}" + ("" if r["robust_accuracy_stable"] else "*")
        print(f"{r['attack']:6s} {r['contestant']:26s} {r['median_s']:9.3f} "
              f"{r['min_s']:7.3f}-{r['max_s']:<7.3f} {ratio:>7s} {acc:>10s} {'yes' if r['valid'] else 'NO':>5s} "
              f"{mem:>8s}")
    print(f"peak memory: {res['memory_method']}; * robust accuracy varied between rounds (last shown)")
    print(f"torchvision imported: {res['torchvision_imported']}")
    for attack, checks in res["targets"].items():
        print(f"targets ({attack}): " + ", ".join(f"{k}={'met' if v else 'NOT met'}" for k, v in checks.items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
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
    p.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    p.add_argument("--contestants", nargs="+", default=["sparring", "sparring-no-early-stop", "torchattacks",
                                                         "foolbox", "art", "hand"],
                   choices=["sparring", "sparring-no-early-stop", "torchattacks", "foolbox", "art", "hand"])
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory pass")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1; got {args.rounds}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda asked for, but torch.cuda.is_available() is False on this machine; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # peers' own deprecations are not what we measure
        res = run_benchmark(args)
    print_table(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n")
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
