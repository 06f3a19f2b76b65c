"""sparring's AutoAttack against the authors' code (``pyautoattack`` 0.2.0, Croce & Hein 2020): strength per point
and wall time, interleaved in one process.

Both attack the same function (raw ``x`` in [0, 1] -> logits of a zoo model, its input normalisation wrapped into
one plain module for the reference), on the same first ``--n`` test points, with the same budget, in the standard
version (APGD-CE; APGD-T, 9 targets; FAB-T, 9 targets; Square, 5000 queries; 100 iterations, one restart each).
Runs alternate sparring, reference, sparring, reference ... (``--rounds`` pairs) with ``torch.set_num_threads``
(``--threads``, default 1) in this one process, so that load from other processes on a shared machine falls on both
alike: the time *ratio* is the measure, absolute seconds are not. Per run: wall seconds, seconds per component
(sparring's ``extras["seconds_per_attack"]``; the reference's ``perturb`` calls timed), robust count after each
component, and the robust set (each ``x_adv`` checked within eps + 1e-5 and [0, 1], scored by one shared forward).

Criterion (issue 16, items 6 and 7): sparring leaves at most one point robust that the reference breaks (``--max-
extra``, default 1; the per-point disagreements are listed), and with ``--max-ratio`` the median time ratio must not
exceed it. Exit 1 when a criterion fails. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_autoattack_reference.py --models digits-cnn-pgdat \\
        --norms linf --n 200 --rounds 2 --json benchmarks/results/autoattack-reference-pgdat-linf.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparring.attacks.norms import Norm, norm_of
from sparring.data import zoo
from sparring.targets.torch import TorchTarget

EPS = {"linf": 0.1, "l2": 1.5}  # as benchmarks/bench_autoattack.py (L∞) and the APGD cross-checks (L2)
COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")


class RawToLogits(nn.Module):
    """Raw inputs -> logits: the zoo model with its input normalisation (TorchTarget's arithmetic), one module."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("inv_std", 1.0 / std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model((x - self.mean) * self.inv_std)
        return out


def setup(model_name: str, n: int) -> tuple[TorchTarget, nn.Module, torch.Tensor, torch.Tensor]:
    target = zoo.load(model_name)
    assert isinstance(target, TorchTarget)
    ds = zoo.data(model_name)
    x, y = ds.x_test[:n].float(), ds.y_test[:n].long()
    norm = target.spec.norm_tensors(torch.device("cpu"), torch.float32)
    mean, std = norm if norm is not None else (torch.zeros(1, 1, 1), torch.ones(1, 1, 1))
    module = RawToLogits(target.model, mean, std).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return target, module, x, y


def run_sparring(target: TorchTarget, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
                 seed: int = 0) -> dict[str, Any]:
    from sparring.attacks.evasion.autoattack import AutoAttack

    cpu_parts: dict[str, float] = {}

    class Timed(AutoAttack):  # each component's CPU seconds (its wall seconds are in extras)
        def _component(self, name: str) -> Any:
            comp = super()._component(name)
            inner = comp._run_batch

            def run(*a: Any, **k: Any) -> Any:
                c = time.thread_time()
                out = inner(*a, **k)
                cpu_parts[name] = cpu_parts.get(name, 0.0) + time.thread_time() - c
                return out

            comp._run_batch = run  # type: ignore[method-assign]
            return comp

    t0, c0 = time.perf_counter(), time.thread_time()
    r = Timed(eps=eps, norm=norm, version="standard", seed=seed)(target, x, y)
    seconds, cpu = time.perf_counter() - t0, time.thread_time() - c0
    n = x.shape[0]
    return {"x_adv": torch.as_tensor(r.x_adv), "seconds": seconds, "cpu_seconds": round(cpu, 2),
            "components": {k: round(v, 2) for k, v in r.extras["seconds_per_attack"].items()},
            "components_cpu": {k: round(v, 2) for k, v in cpu_parts.items()},
            "robust_after": {k: round(v * n) for k, v in r.extras["robust_after"].items()}}


def run_reference(module: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
                  seed: int = 0) -> dict[str, Any]:
    """The authors' AutoAttack, standard version, each component's ``perturb`` timed (the cascade is theirs)."""
    from pyautoattack import AutoAttack as ReferenceAutoAttack

    aa = ReferenceAutoAttack(module, norm="Linf" if norm == "linf" else "L2", eps=eps, version="standard",
                             seed=seed, device="cpu")
    times: dict[str, float] = {}
    cpu_parts: dict[str, float] = {}
    after: dict[str, int] = {}
    names = {"apgd": "apgd-ce", "apgd_targeted": "apgd-t", "fab": "fab-t", "square": "square"}
    for attr, name in names.items():
        sub = getattr(aa, attr)
        inner = sub.perturb

        def timed(xs: torch.Tensor, ys: torch.Tensor, *a: Any, _inner: Any = inner, _name: str = name,
                  **k: Any) -> torch.Tensor:
            s, c = time.perf_counter(), time.thread_time()
            out = _inner(xs, ys, *a, **k)
            times[_name] = times.get(_name, 0.0) + time.perf_counter() - s
            cpu_parts[_name] = cpu_parts.get(_name, 0.0) + time.thread_time() - c
            return out  # type: ignore[no-any-return]

        sub.perturb = timed
    class Counts(logging.Handler):  # the reference logs "robust accuracy after APGD-CE: 71.00% ..."
        def emit(self, record: logging.LogRecord) -> None:
            m = re.match(r"robust accuracy after ([A-Z-]+): ([0-9.]+)%", record.getMessage())
            if m:
                after[m.group(1).lower()] = round(float(m.group(2)) * x.shape[0] / 100)

    handler = Counts()
    aa.logger.addHandler(handler)
    aa.logger.setLevel(logging.DEBUG)
    aa.logger.propagate = False
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        x_adv, _ = aa.run_standard_evaluation(x.clone(), y.clone(), batch_size=max(250, x.shape[0]))
        seconds, cpu = time.perf_counter() - t0, time.thread_time() - c0
    finally:
        aa.logger.removeHandler(handler)
    return {"x_adv": x_adv.detach(), "seconds": seconds, "cpu_seconds": round(cpu, 2),
            "components": {k: round(v, 2) for k, v in times.items()},
            "components_cpu": {k: round(v, 2) for k, v in cpu_parts.items()}, "robust_after": after}


def score(target: TorchTarget, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, norm: str,
          eps: float) -> torch.Tensor:
    """Per-point robust flags of ``x_adv`` (one shared forward pass); a point outside the budget counts robust."""
    inside = norm_of(x_adv - x, Norm.parse(norm)) <= eps + 1e-5
    inside &= (x_adv.flatten(1).min(1).values >= 0) & (x_adv.flatten(1).max(1).values <= 1)
    with torch.inference_mode():
        pred = target.query(x_adv.float()).argmax(1)
    return (pred == y) | ~inside


def compare(model_name: str, norm: str, n: int, rounds: int, contestants: tuple[str, ...] = ("sparring", "reference"),
            log: Any = print) -> dict[str, Any]:
    """Interleaved runs of sparring and the reference on one model and norm; per-point disagreements."""
    target, module, x, y = setup(model_name, n)
    eps = EPS[norm]
    with torch.inference_mode():
        clean = target.query(x).argmax(1) == y
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contestants}
    flags: dict[str, torch.Tensor] = {}
    for r in range(rounds):
        for c in contestants:
            out = run_sparring(target, x, y, norm, eps) if c == "sparring" else run_reference(module, x, y, norm, eps)
            robust = score(target, x, y, out.pop("x_adv"), norm, eps)
            flags[c] = robust if c not in flags else flags[c] & robust  # worst case over rounds (same seed)
            row = {"round": r, **out, "robust": int(robust.sum()), "seconds": round(out["seconds"], 2)}
            runs[c].append(row)
            log(f"{model_name} {norm} {c:9s} round {r}: robust {row['robust']}/{n}  {row['seconds']:.1f} s "
                f"({row['cpu_seconds']:.1f} s CPU)  CPU per component {row['components_cpu']}  "
                f"robust after {row['robust_after']}")
    result: dict[str, Any] = {"model": model_name, "norm": norm, "eps": eps, "n": n,
                              "clean": int(clean.sum()), "runs": runs}
    if "sparring" in flags and "reference" in flags:
        only_sp = (flags["sparring"] & ~flags["reference"]).nonzero().squeeze(1).tolist()
        only_ref = (flags["reference"] & ~flags["sparring"]).nonzero().squeeze(1).tolist()
        pairs = list(zip(runs["sparring"], runs["reference"], strict=True))
        ratios = [s["seconds"] / max(rf["seconds"], 1e-9) for s, rf in pairs]
        cpu_ratios = [s["cpu_seconds"] / max(rf["cpu_seconds"], 1e-9) for s, rf in pairs]
        result.update({
            "robust_sparring": int(flags["sparring"].sum()), "robust_reference": int(flags["reference"].sum()),
            "robust_only_under_sparring": only_sp, "robust_only_under_reference": only_ref,
            "time_ratios": [round(v, 3) for v in ratios], "time_ratio_median": round(statistics.median(ratios), 3),
            "cpu_ratios": [round(v, 3) for v in cpu_ratios],
            "cpu_ratio_median": round(statistics.median(cpu_ratios), 3),
        })
        log(f"{model_name} {norm}: robust sparring {result['robust_sparring']}, reference "
            f"{result['robust_reference']}; robust only under sparring {only_sp}, only under the reference "
            f"{only_ref}; time ratio sparring/reference {result['time_ratios']} (median "
            f"{result['time_ratio_median']}; CPU {result['cpu_ratio_median']})")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="digits-cnn-pgdat,digits-cnn")
    p.add_argument("--norms", default="linf,l2")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--rounds", type=int, default=1, help="interleaved (sparring, reference) pairs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--contestants", default="sparring,reference")
    p.add_argument("--max-extra", type=int, default=1,
                   help="most points sparring may leave robust that the reference breaks")
    p.add_argument("--max-ratio", type=float, default=None, help="fail if the median time ratio exceeds this")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    results = []
    failed = []
    for model_name in a.models.split(","):
        for norm in a.norms.split(","):
            res = compare(model_name, norm, a.n, a.rounds, tuple(a.contestants.split(",")),
                          log=lambda s: print(s, flush=True))
            results.append(res)
            if len(res.get("robust_only_under_sparring", [])) > a.max_extra:
                failed.append(f"{model_name} {norm}: sparring leaves {len(res['robust_only_under_sparring'])} "
                              f"points robust that the reference breaks: {res['robust_only_under_sparring']}")
            if a.max_ratio is not None and res.get("time_ratio_median", 0.0) > a.max_ratio:
                failed.append(f"{model_name} {norm}: time ratio {res['time_ratio_median']} > {a.max_ratio}")
    out = {"threads": a.threads, "torch": torch.__version__, "platform": platform.platform(),
           "pyautoattack": _version("pyautoattack"), "sparring": _version("sparring"), "results": results,
           "failed": failed}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2))
    for f in failed:
        print("FAILED:", f, file=sys.stderr)
    sys.exit(1 if failed else 0)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
