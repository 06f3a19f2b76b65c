"""The Failing Loudly protocol (Rabanser, Günnemann, Lipton 2019), scaled to the data that exist offline here.

Setup: all 1,797 UCI digits (8×8, in [0, 1]); a small CNN (two conv layers, zoo-style) is trained on 797 of them;
the other 1,000 are held out. Every run draws a fresh random partition of the held-out digits into a reference of
500 and a target pool of 500, and the target sample (``--sizes``) is drawn from the pool and shifted:

* Gaussian noise, std 1, 10, 100 on the 0–255 scale (``gn_small/medium/large``, Failing Loudly's values);
* image transforms (random rotation, translation, zoom per image; small 10°/5%/10%, medium 40°/20%/20%, large
  90°/40%/40%, the paper's three settings);
* FGSM adversarial inputs (Goodfellow et al. 2015, L∞ eps 0.1, white-box on the CNN);
* knockout: a fraction (10/50/100%) of class 0 removed from the pool before drawing;
* a mixture: medium transforms plus medium noise;

each applied to 10%, 50% or 100% of the target sample (knockout: its own fraction). Detectors: BBSDs (KS on the
CNN's softmax outputs, Bonferroni; the paper's best), BBSDh (χ² on predicted labels), BBSE label shift (Lipton et
al. 2018), and on the raw 64 pixels: univariate KS (Bonferroni), MMD (permutation), LSDD and a classifier
two-sample test. α = 0.05. Power is the share of runs that flag drift; with no shift that share is the
false-positive rate, given with its 95% Clopper–Pearson interval over ``--fpr-runs`` runs.

Online: OnlineMMD and OnlineLSDD on the raw pixels (window 10), CUSUM and Page–Hinkley on the CNN's top softmax
probability, calibrated to ERT 100 and 500 on the reference; the empirical ERT on the target pool (no shift) with
its 95% interval (exponential run lengths: 2T/χ²), and the mean detection delay after a change to each shift.

Last, the MMD test on 10,000 × 10,000 (breast-cancer rows resampled with jitter; block and permutation
estimators) in a subprocess: wall time and peak resident memory.

No peer runs here: benchmarks/bench_drift_peers.py compares sparring's MMD, LSDD and KS with alibi-detect and
frouros on the same samples, and benchmarks/bench_drift_ert.py measures the online ERT per reference on full
MNIST / Fashion-MNIST.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_drift.py`` (about 15 minutes on 2 busy CPU cores);
``--quick`` for a 1-minute smoke run. Writes ``benchmarks/results/drift-failing-loudly.json``. The offline runs are
executor tasks (one per shift, fraction, size and run, each seeded by its run index): ``--executor processes
--workers 2`` or ``--executor ray [--ray-address auto]`` spreads them and gives the same numbers as the local run
(checked on ``--quick``: identical false-positive rates and power tables).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import chi2
from torch import nn

from sparring.attacks.evasion import FGSM
from sparring.data import load_digits
from sparring.defenses.detect.drift import (
    CUSUM,
    OnlineLSDD,
    OnlineMMD,
    PageHinkley,
    classifier_test,
    label_shift_test,
    lsdd_test,
    mmd_test,
    univariate_test,
)
from sparring.executors import EXECUTORS, Executor, LocalExecutor, get_executor
from sparring.targets import InputSpec, TorchTarget

RESULTS = Path(__file__).resolve().parent / "results"
ALPHA = 0.05
IMG = {"small": (10.0, 0.05, 0.1), "medium": (40.0, 0.2, 0.2), "large": (90.0, 0.4, 0.4)}
GN = {"small": 1 / 255, "medium": 10 / 255, "large": 100 / 255}


# ----------------------------------------------------------------------------------------------- data and model
def cnn(side: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * (side // 2) ** 2, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def setup_28(name: str, seed: int = 0, n_train: int = 10_000, epochs: int = 2
             ) -> tuple[TorchTarget, torch.Tensor, torch.Tensor, float]:
    """Full MNIST or Fashion-MNIST (28×28): the same CNN trained on ``n_train`` training images; the 10,000 test
    images are the held-out set the reference and target samples are drawn from."""
    from sparring.data.mnist import load_fashion_mnist, load_mnist

    load = load_mnist if name == "mnist" else load_fashion_mnist
    xtr, ytr = load(split="train")
    xte, yte = load(split="test")
    xtr, xte = xtr.reshape(-1, 1, 28, 28).float(), xte.reshape(-1, 1, 28, 28).float()
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))[:n_train]
    torch.manual_seed(seed)
    net = cnn(28)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for b in idx[torch.randperm(len(idx))].split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xtr[b]), ytr[b]).backward()
            opt.step()
    target = TorchTarget(net, InputSpec(shape=(1, 28, 28), n_classes=10, bounds=(0.0, 1.0)))
    acc = float((target.predict(xte) == yte).float().mean())
    return target, xte, yte, acc


def setup(seed: int = 0) -> tuple[TorchTarget, torch.Tensor, torch.Tensor, float]:
    ds = load_digits(size=8)
    x = torch.cat([ds.x_train, ds.x_test]).float()
    y = torch.cat([ds.y_train, ds.y_test])
    p = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    tr, held = p[:797], p[797:]
    torch.manual_seed(seed)
    net = cnn()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(60):
        for idx in torch.randperm(797).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[tr][idx]), y[tr][idx]).backward()
            opt.step()
    target = TorchTarget(net, InputSpec(shape=(1, 8, 8), n_classes=10, bounds=(0.0, 1.0)))
    acc = float((target.predict(x[held]) == y[held]).float().mean())
    return target, x[held], y[held], acc


def transform(x: torch.Tensor, level: str, gen: torch.Generator) -> torch.Tensor:
    """Random rotation (± degrees), translation (± fraction of the side) and zoom (± fraction) per image."""
    deg, shift, zoom = IMG[level]
    n = x.shape[0]
    ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(deg)
    sc = 1 + (torch.rand(n, generator=gen) * 2 - 1) * zoom
    tx, ty = ((torch.rand(2, n, generator=gen) * 2 - 1) * shift * 2)
    theta = torch.stack([torch.stack([torch.cos(ang) / sc, -torch.sin(ang) / sc, tx], 1),
                         torch.stack([torch.sin(ang) / sc, torch.cos(ang) / sc, ty], 1)], 1)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="zeros").clamp(0, 1)


def noise(x: torch.Tensor, sd: float, gen: torch.Generator) -> torch.Tensor:
    return (x + sd * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def shifts(target: TorchTarget) -> dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]]:
    fgsm = FGSM(eps=0.1)
    out: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]] = {}
    for lv, sd in GN.items():
        out[f"gn_{lv}"] = lambda x, y, g, sd=sd: noise(x, sd, g)
    for lv in IMG:
        out[f"img_{lv}"] = lambda x, y, g, lv=lv: transform(x, lv, g)
    out["adversarial_fgsm"] = lambda x, y, g: fgsm(target, x, y).x_adv.detach()
    out["mixture_img+gn_medium"] = lambda x, y, g: noise(transform(x, "medium", g), GN["medium"], g)
    return out


# ----------------------------------------------------------------------------------------------- offline
def softmax(target: TorchTarget, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(target.model(x), 1).double()


def detectors(target: TorchTarget) -> dict[str, Callable[..., Any]]:
    def bbsds(a: Any, b: Any, ya: Any) -> bool:
        return univariate_test(softmax(target, a), softmax(target, b), alpha=ALPHA).drift

    def bbsdh(a: Any, b: Any, ya: Any) -> bool:
        la, lb = target.predict(a)[:, None].double(), target.predict(b)[:, None].double()
        return univariate_test(la, lb, categorical=[0], alpha=ALPHA).drift

    def flat(f: Callable[..., Any]) -> Callable[..., bool]:
        return lambda a, b, ya: bool(f(a.reshape(len(a), -1), b.reshape(len(b), -1)).drift)

    return {
        "bbsds_ks": bbsds,
        "bbsdh_chi2": bbsdh,
        "bbse_label_shift": lambda a, b, ya: label_shift_test(target, a, ya, b, alpha=ALPHA).drift,
        "raw_ks": flat(lambda a, b: univariate_test(a, b, alpha=ALPHA)),
        "raw_mmd": flat(lambda a, b: mmd_test(a, b, n_permutations=100, alpha=ALPHA)),
        "raw_lsdd": flat(lambda a, b: lsdd_test(a, b, n_permutations=100, alpha=ALPHA)),
        "raw_classifier": flat(lambda a, b: classifier_test(a, b, alpha=ALPHA)),
    }


def draw(x: torch.Tensor, y: torch.Tensor, run: int, n: int, knockout: float = 0.0
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 + run)
    p = torch.randperm(len(x), generator=g)
    ref, pool = p[:500], p[500:]
    if knockout > 0:
        zero = pool[y[pool] == 0]
        drop = zero[torch.randperm(len(zero), generator=g)[: round(knockout * len(zero))]]
        pool = pool[~torch.isin(pool, drop)]
    cur = pool[torch.randperm(len(pool), generator=g)[: min(n, len(pool))]]
    return x[ref], y[ref], x[cur], y[cur]


def clopper_pearson(k: int, n: int) -> list[float]:
    lo = 0.0 if k == 0 else float(beta_dist.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta_dist.ppf(0.975, k + 1, n - k))
    return [round(lo, 4), round(hi, 4)]


_TARGETS: dict[str, TorchTarget] = {}


def _shipped(target: TorchTarget, x: torch.Tensor, y: torch.Tensor) -> tuple[Any, ...]:
    """What every offline task needs, in a picklable form (a target holds locks): the CNN's weights and input spec
    with a token, so a worker rebuilds the target once, and the held-out data."""
    state = {k: v.detach().clone() for k, v in target.model.state_dict().items()}
    token = f"{id(target)}-{time.time_ns()}"
    return token, state, target.spec, x, y


def _target(token: str, state: dict[str, torch.Tensor], spec: InputSpec) -> TorchTarget:
    if token not in _TARGETS:
        net = cnn(spec.shape[-1])
        net.load_state_dict(state)
        _TARGETS[token] = TorchTarget(net, spec)
    return _TARGETS[token]


def _offline_task(shared: tuple[Any, ...], task: tuple[str, float, int, int]) -> dict[str, tuple[bool, float]]:
    """One offline run as an executor task: ``(shift, fraction, n, run)`` (shift ``""``: no shift, for the
    false-positive rate), every detector's verdict and seconds. Seeded by the run index alone (the samples, the
    shifted subset, the shift's randomness; the tests' own seeds are fixed), so the result is the same whichever
    executor or worker runs it."""
    token, state, spec, x, y = shared
    target = _target(token, state, spec)
    name, frac, n, r = task
    if not name:
        a, ya, b, _ = draw(x, y, r, n)
    elif name.startswith("knockout"):
        a, ya, b, _ = draw(x, y, 1000 + r, n, knockout=frac)
    else:
        a, ya, b, yb = draw(x, y, 1000 + r, n)
        g = torch.Generator().manual_seed(r)
        k = max(1, round(frac * len(b)))
        pick = torch.randperm(len(b), generator=g)[:k]
        b = b.clone()
        b[pick] = shifts(target)[name](b[pick], yb[pick], g)
    out = {}
    for det_name, det in detectors(target).items():
        t0 = time.perf_counter()
        out[det_name] = (bool(det(a, b, ya)), time.perf_counter() - t0)
    return out


def offline(target: TorchTarget, x: torch.Tensor, y: torch.Tensor, sizes: list[int], runs: int,
            fpr_sizes: list[int], fpr_runs: int, fractions: list[float], executor: Executor | None = None
            ) -> dict[str, Any]:
    """Every (shift, fraction, size, run) is one task of ``executor`` (default: in this process), so the repeated
    runs spread over a process pool or a Ray cluster and give the same numbers as the local run."""
    ex = executor or LocalExecutor()
    dets = list(detectors(target))
    configs = [(name, f) for name in shifts(target) for f in fractions] + [("knockout_class0", f) for f in fractions]
    tasks = [("", 0.0, n, r) for n in fpr_sizes for r in range(fpr_runs)]
    tasks += [(name, frac, n, r) for name, frac in configs for n in sizes for r in range(runs)]
    outcomes = ex.map(_offline_task, tasks, shared=_shipped(target, x, y))
    failed = [o.error for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} offline runs failed; the first: {failed[0]!r}")
    verdicts = {t: o.value for t, o in zip(tasks, outcomes, strict=True)}
    seconds = {d: sum(v[d][1] for v in verdicts.values() if v) for d in dets}

    def hits(name: str, frac: float, n: int, k: int) -> dict[str, int]:
        rows = [verdicts[(name, frac, n, r)] for r in range(k)]
        return {d: sum(int(row[d][0]) for row in rows if row) for d in dets}

    fpr: dict[str, Any] = {}
    for n in fpr_sizes:
        h = hits("", 0.0, n, fpr_runs)
        fpr[str(n)] = {k: {"rate": v / fpr_runs, "ci95": clopper_pearson(v, fpr_runs)} for k, v in h.items()}
        print(f"no shift n={n}: " + ", ".join(f"{k} {v / fpr_runs:.2f}" for k, v in h.items()), flush=True)
    power: dict[str, Any] = {}
    for name, frac in configs:
        key = f"{name}@{int(frac * 100)}%"
        power[key] = {str(n): {d: v / runs for d, v in hits(name, frac, n, runs).items()} for n in sizes}
        print(f"{key}: " + "; ".join(f"n={n} " + " ".join(f"{v:.1f}" for v in power[key][str(n)].values())
                                     for n in sizes), flush=True)
    mean_power = {d: {str(n): round(float(np.mean([power[k][str(n)][d] for k in power])), 3) for n in sizes}
                  for d in dets}
    return {"false_positive_rate": fpr, "power": power, "mean_power_over_shifts": mean_power,
            "seconds_per_test": {d: round(seconds[d] / len(tasks), 4) for d in dets},
            "executor": {"name": ex.name, "workers": ex.workers, "tasks": len(tasks)}}


def ert_interval(steps: int, alarms: int) -> list[float]:
    if alarms == 0:
        return [round(float(2 * steps / chi2.ppf(0.975, 2)), 1), math.inf]
    return [round(float(2 * steps / chi2.ppf(0.975, 2 * alarms)), 1),
            round(float(2 * steps / chi2.ppf(0.025, 2 * alarms)), 1)]


def _makers(target: TorchTarget, x: torch.Tensor, split: int
            ) -> tuple[dict[str, tuple[Callable[[int], Any], Any, Callable[[torch.Tensor], Any]]], torch.Tensor,
                       torch.Tensor]:
    """Detectors built on a 500-row reference of one random split of the held-out digits; the other 500 rows."""
    p = torch.randperm(len(x), generator=torch.Generator().manual_seed(split))
    ref, pool = x[p[:500]], x[p[500:]]
    flat_ref, flat_pool = ref.reshape(500, -1).double(), pool.reshape(len(pool), -1).double()
    conf_ref = softmax(target, ref).max(1).values.numpy()
    conf_pool = softmax(target, pool).max(1).values.numpy()

    def flat(b: torch.Tensor) -> torch.Tensor:
        return b.reshape(len(b), -1).double()

    def conf(b: torch.Tensor) -> np.ndarray:
        return np.asarray(softmax(target, b).max(1).values.numpy())

    makers: dict[str, tuple[Callable[[int], Any], Any, Callable[[torch.Tensor], Any]]] = {
        "online_mmd": (lambda e: OnlineMMD(flat_ref, ert=e, window_size=10), flat_pool, flat),
        "online_lsdd": (lambda e: OnlineLSDD(flat_ref, ert=e, window_size=10), flat_pool, flat),
        "cusum_confidence": (lambda e: CUSUM(conf_ref, ert=e), conf_pool, conf),
        "page_hinkley_confidence": (lambda e: PageHinkley(conf_ref, ert=e), conf_pool, conf),
        "cusum_confidence_winsorized5": (lambda e: CUSUM(conf_ref, ert=e, winsorize=0.05), conf_pool, conf),
        "page_hinkley_confidence_winsorized5": (lambda e: PageHinkley(conf_ref, ert=e, winsorize=0.05), conf_pool,
                                                conf),
    }
    return makers, p[500:], pool


def online(target: TorchTarget, x: torch.Tensor, y: torch.Tensor, erts: list[int], min_alarms: int,
           delay_runs: int, splits: list[int], only: set[str] | None = None) -> dict[str, Any]:
    """Empirical ERT per split (reference of 500, no-drift stream: fresh shuffles of the other 500 held-out
    rows, reset each pass so runs are censored at 500 steps: steps over alarms is the exponential MLE) and pooled
    over splits; detection delay after 50 clean steps on the first split."""
    sh = shifts(target)
    out: dict[str, Any] = {}
    for si, split in enumerate(splits):
        makers, pool_idx, pool = _makers(target, x, split)
        shifted = {name: sh[name](pool, y[pool_idx], torch.Generator().manual_seed(3))
                   for name in ("gn_large", "img_medium", "adversarial_fgsm")} if si == 0 else {}
        if si == 0:
            shifted["knockout_class0"] = pool[y[pool_idx] != 0]
        for name, (make, clean, feats) in makers.items():
            if only and name not in only:
                continue
            for ert in erts:
                row = out.setdefault(name, {}).setdefault(str(ert), {"splits": []})
                t0 = time.perf_counter()
                det = make(ert)
                det.calibrate()
                t_cal = time.perf_counter() - t0
                rng = np.random.default_rng(ert + split)
                steps = alarms = 0
                t0 = time.perf_counter()
                while alarms < min_alarms and steps < 400 * ert:
                    det.reset()
                    for i in rng.permutation(len(clean)):
                        alarms += det.update(clean[int(i)]).drift
                        steps += 1
                t_upd = (time.perf_counter() - t0) / steps
                row["splits"].append({"split": split, "empirical_ert": round(steps / max(alarms, 1), 1),
                                      "ert_ci95": ert_interval(steps, alarms), "alarms": alarms, "steps": steps,
                                      "calibration_seconds": round(t_cal, 2), "ms_per_update": round(1000 * t_upd, 3)})
                print(f"{name} ERT {ert} split {split}: {row['splits'][-1]['empirical_ert']} "
                      f"{row['splits'][-1]['ert_ci95']} ({alarms} alarms)", flush=True)
                if not shifted:
                    continue
                delays: dict[str, Any] = {}
                for sname, sx in shifted.items():
                    fs = feats(sx)
                    ds = []
                    for r in range(delay_runs):
                        det.reset()
                        rr = np.random.default_rng(100 + r)
                        for i in rr.permutation(len(clean))[:50]:
                            if det.update(clean[int(i)]).drift:
                                det.reset()
                        ds.append(next((k + 1 for k, i in enumerate(rr.permutation(len(fs)))
                                        if det.update(fs[int(i)]).drift), None))
                    found = [d for d in ds if d is not None]
                    delays[sname] = {"mean_delay": round(float(np.mean(found)), 1) if found else None,
                                     "median_delay": float(np.median(found)) if found else None,
                                     "missed": len(ds) - len(found), "runs": len(ds)}
                row["detection_delay"] = delays
                print("  delays: " + ", ".join(f"{k} {v['mean_delay']}" for k, v in delays.items()), flush=True)
    for v in out.values():
        for ert, row in v.items():
            steps = sum(r["steps"] for r in row["splits"])
            alarms = sum(r["alarms"] for r in row["splits"])
            row.update(empirical_ert=round(steps / max(alarms, 1), 1), ert_ci95=ert_interval(steps, alarms),
                       alarms=alarms, steps=steps, within_20pct=abs(steps / max(alarms, 1) / int(ert) - 1) <= 0.2)
    return out


# ----------------------------------------------------------------------------------------------- 10k x 10k
_BIG = """
import json, resource, sys, time, torch
from sparring.data import load_breast_cancer
from sparring.defenses.detect.drift import mmd_test
torch.set_num_threads(int(sys.argv[3]))
n, est = int(sys.argv[1]), sys.argv[2]
bc = load_breast_cancer(); base = torch.cat([bc.x_train, bc.x_test]).double()
g = torch.Generator().manual_seed(0)
a = base[torch.randint(len(base), (n,), generator=g)] + 0.01 * torch.randn(n, 30, generator=g)
b = base[torch.randint(len(base), (n,), generator=g)] + 0.01 * torch.randn(n, 30, generator=g)
t0 = time.perf_counter()
r = mmd_test(a, b, estimator=est, n_permutations=20)
print(json.dumps({"seconds": time.perf_counter() - t0, "p_value": r.p_value,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def big(threads: int) -> dict[str, Any]:
    out = {}
    for est in ("block", "linear", "permutation"):
        res = subprocess.run([sys.executable, "-c", _BIG, "10000", est, str(threads)], capture_output=True,
                             text=True, check=True)
        out[est] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"MMD 10k x 10k {est}: {out[est]}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,50,100,250,500")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fpr-runs", type=int, default=100)
    ap.add_argument("--fpr-sizes", default="10,100,500")
    ap.add_argument("--erts", default="100,500")
    ap.add_argument("--min-alarms", type=int, default=100)
    ap.add_argument("--delay-runs", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--splits", default="7,8,9", help="Reference/stream splits for the online ERT.")
    ap.add_argument("--parts", default="offline,online,big", help="Sections to run; others are kept from --out.")
    ap.add_argument("--online-detectors", help="Comma-separated online detectors to (re)run; the rest are kept.")
    ap.add_argument("--data", default="digits", choices=["digits", "mnist", "fashion-mnist"],
                    help="digits (8x8, all offline) or full MNIST / Fashion-MNIST (installed separately).")
    ap.add_argument("--fractions", default="0.1,0.5,1.0", help="Shares of the target sample shifted.")
    ap.add_argument("--out", default=str(RESULTS / "drift-failing-loudly.json"))
    ap.add_argument("--executor", default="local", choices=EXECUTORS,
                    help="Where the offline runs go: one task per (shift, fraction, size, run).")
    ap.add_argument("--workers", type=int, default=None, help="Processes (or private Ray CPUs) for --executor.")
    ap.add_argument("--ray-address", default=None, help="A running Ray cluster for --executor ray (auto|HOST:PORT).")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.runs, args.fpr_runs, args.fpr_sizes = "10,100", 2, 5, "100"
        args.erts, args.min_alarms, args.delay_runs, args.skip_big, args.splits = "100", 10, 2, True, "7"
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    target, x, y, acc = setup() if args.data == "digits" else setup_28(args.data)
    print(f"CNN accuracy on the {len(x)} held-out images: {acc:.3f}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    data = {"digits": "UCI digits 8x8", "mnist": "MNIST 28x28 (CNN on 10,000 training images, 2 epochs)",
            "fashion-mnist": "Fashion-MNIST 28x28 (CNN on 10,000 training images, 2 epochs)"}[args.data]
    res: dict[str, Any] = {"setup": {"data": data, "held_out": len(x), "reference": 500,
                                     "cnn_accuracy_held_out": round(acc, 4), "alpha": ALPHA, "runs": args.runs,
                                     "fpr_runs": args.fpr_runs, "sizes": sizes, "fractions": fractions,
                                     "torch_threads": 1, "peers": "none installed (alibi-detect, frouros, river)"}}
    parts = set(args.parts.split(","))
    if Path(args.out).exists() and parts != {"offline", "online", "big"}:
        res = {**json.loads(Path(args.out).read_text()), "setup": res["setup"]}
    fpr_sizes = [int(s) for s in args.fpr_sizes.split(",")]
    if "offline" in parts:
        ex = get_executor(args.executor, workers=args.workers, ray_address=args.ray_address)
        t1 = time.perf_counter()
        try:
            res["offline"] = offline(target, x, y, sizes, args.runs, fpr_sizes, args.fpr_runs, fractions, ex)
        finally:
            ex.close()
        res["offline"]["seconds"] = round(time.perf_counter() - t1, 1)
    if "online" in parts:
        only = set(args.online_detectors.split(",")) if args.online_detectors else None
        new = online(target, x, y, [int(e) for e in args.erts.split(",")], args.min_alarms, args.delay_runs,
                     [int(v) for v in args.splits.split(",")], only)
        res["online"] = {**res.get("online", {}), **new} if only else new
    if "big" in parts and not args.skip_big:
        res["mmd_10k_x_10k"] = big(threads=1)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out} in {res['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
