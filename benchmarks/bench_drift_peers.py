"""Drift tests side by side with alibi-detect 0.13.0 (torch backend) and frouros 0.9.0 on the same samples.

Issue 18 asks for sparring's offline tests to be compared with a peer on the same streams. This runs, on every
sample, sparring's MMD (permutation), LSDD (permutation) and per-feature KS (Bonferroni) next to

* alibi-detect: ``MMDDrift(backend="pytorch")``, ``LSDDDrift(backend="pytorch")`` and ``KSDrift`` (Bonferroni);
* frouros: ``MMD`` with the ``PermutationTestDistanceBased`` callback (RBF kernel, bandwidth given: the median
  heuristic on the pooled sample, as sparring's; frouros' default is sigma = 1) and ``KSTest`` per feature,
  Bonferroni applied here (frouros tests one feature at a time); frouros has no LSDD.

Each library keeps its own defaults otherwise (alibi-detect: bandwidth from its own median heuristic; p-values
that leave the observed statistic out of the permutation count, alibi-detect #960). Same permutation count for
all (``--permutations``), α = 0.05.

Data: the Failing Loudly setup of ``bench_drift.py`` on all 1,797 UCI 8×8 digits (reference of 500 held-out
digits, target sample drawn from the other 500 and shifted: Gaussian noise small/medium/large, medium image
transforms, FGSM at L∞ 0.1, knockout of class 0), on the raw 64 pixels, each shift on 100% of the target sample.
Reported per method, shift and sample size: the detection rate of each library, the share of samples on which
sparring's decision matches the peer's, and the mean |p_sparring - p_peer|; with no shift, the false-positive rate
over ``--fpr-runs`` draws with its 95% Clopper–Pearson interval.

alibi-detect and frouros are bench-only: ``bash scripts/bench.sh drift-peers`` installs them into .venv-bench with
``--no-deps`` (requirements-bench.lock lists what their code paths import, numba 0.68 and numpy 2 included, outside
their declared pins). Writes ``benchmarks/results/drift-peers.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_drift as fl
from sparring.defenses.detect.drift import lsdd_test, mmd_test, univariate_test
from sparring.defenses.detect.drift.mmd import median_bandwidth

ALPHA = 0.05
Test = Callable[[np.ndarray, np.ndarray, int], float]  # (reference, current, seed) -> p-value


def sparring_tests(perms: int) -> dict[str, Test]:
    return {
        "mmd": lambda a, b, s: mmd_test(a, b, estimator="permutation", n_permutations=perms, seed=s).p_value,
        "lsdd": lambda a, b, s: lsdd_test(a, b, n_permutations=perms, seed=s).p_value,
        "ks": lambda a, b, s: univariate_test(a, b, test="ks", correction="bonferroni").p_value,
    }


def alibi_tests(perms: int) -> dict[str, Test]:
    from alibi_detect.cd import KSDrift, LSDDDrift, MMDDrift

    def mmd(a: np.ndarray, b: np.ndarray, s: int) -> float:
        torch.manual_seed(s)
        det = MMDDrift(a.astype(np.float32), backend="pytorch", p_val=ALPHA, n_permutations=perms, device="cpu")
        return float(det.predict(b.astype(np.float32))["data"]["p_val"])

    def lsdd(a: np.ndarray, b: np.ndarray, s: int) -> float:
        torch.manual_seed(s)
        det = LSDDDrift(a.astype(np.float32), backend="pytorch", p_val=ALPHA, n_permutations=perms, device="cpu")
        return float(det.predict(b.astype(np.float32))["data"]["p_val"])

    def ks(a: np.ndarray, b: np.ndarray, s: int) -> float:
        det = KSDrift(a, p_val=ALPHA, correction="bonferroni")
        p = np.asarray(det.predict(b)["data"]["p_val"], dtype=np.float64)
        p = np.where(np.isnan(p), 1.0, p)  # a feature constant in both samples: alibi-detect returns nan
        return float(min(1.0, p.min() * a.shape[1]))

    return {"mmd": mmd, "lsdd": lsdd, "ks": ks}


def frouros_tests(perms: int) -> dict[str, Test]:
    from functools import partial

    from frouros.callbacks import PermutationTestDistanceBased
    from frouros.detectors.data_drift import MMD, KSTest
    from frouros.utils.kernels import rbf_kernel

    def mmd(a: np.ndarray, b: np.ndarray, s: int) -> float:
        sigma = median_bandwidth(torch.from_numpy(np.concatenate([a, b])), torch.Generator().manual_seed(s))
        det = MMD(kernel=partial(rbf_kernel, sigma=sigma),
                  callbacks=[PermutationTestDistanceBased(num_permutations=perms, random_state=s, num_jobs=1,
                                                          name="perm")])
        det.fit(X=a)
        _, log = det.compare(X=b)
        return float(log["perm"]["p_value"])

    def ks(a: np.ndarray, b: np.ndarray, s: int) -> float:
        ps = []
        for j in range(a.shape[1]):
            det = KSTest()
            det.fit(X=a[:, j])
            ps.append(float(det.compare(X=b[:, j])[0].p_value))
        p = np.nan_to_num(np.asarray(ps), nan=1.0)
        return float(min(1.0, p.min() * a.shape[1]))

    return {"mmd": mmd, "ks": ks}


def sample(x: torch.Tensor, y: torch.Tensor, target: Any, shift: str, run: int, n: int,
           sh: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    if shift == "knockout_class0":
        a, _, b, _ = fl.draw(x, y, 1000 + run, n, knockout=1.0)
    else:
        a, _, b, yb = fl.draw(x, y, 1000 + run, n)
        if shift != "none":
            b = sh[shift](b, yb, torch.Generator().manual_seed(run))
    return (a.reshape(len(a), -1).double().numpy(), b.reshape(len(b), -1).double().numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,100,500")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fpr-runs", type=int, default=40)
    ap.add_argument("--fpr-size", type=int, default=100)
    ap.add_argument("--permutations", type=int, default=100)
    ap.add_argument("--shifts", default="gn_small,gn_medium,gn_large,img_medium,adversarial_fgsm,knockout_class0")
    ap.add_argument("--out", default=str(fl.RESULTS / "drift-peers.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # the peers warn about their own dependencies and pins
    logging.getLogger("alibi_detect").setLevel(logging.WARNING)  # one INFO line per LSDD call
    import alibi_detect
    import frouros

    libs = {"sparring": sparring_tests(args.permutations), "alibi-detect": alibi_tests(args.permutations),
            "frouros": frouros_tests(args.permutations)}
    target, x, y, acc = fl.setup()
    sh = fl.shifts(target)
    sizes = [int(s) for s in args.sizes.split(",")]
    seconds: dict[str, list[float]] = {}

    def run_all(a: np.ndarray, b: np.ndarray, seed: int) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for lib, tests in libs.items():
            for m, f in tests.items():
                t0 = time.perf_counter()
                out.setdefault(m, {})[lib] = f(a, b, seed)
                seconds.setdefault(f"{lib}/{m}", []).append(time.perf_counter() - t0)
        return out

    def summarise(ps: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
        res: dict[str, Any] = {}
        for m in ps[0]:
            row: dict[str, Any] = {}
            for lib in ps[0][m]:
                row[f"{lib}_detect"] = float(np.mean([p[m][lib] < ALPHA for p in ps]))
                if lib != "sparring":
                    row[f"{lib}_agree"] = float(np.mean([(p[m][lib] < ALPHA) == (p[m]["sparring"] < ALPHA)
                                                         for p in ps]))
                    row[f"{lib}_mean_abs_dp"] = float(np.mean([abs(p[m][lib] - p[m]["sparring"]) for p in ps]))
            res[m] = row
        return res

    fpr_ps = [run_all(*sample(x, y, target, "none", 5000 + r, args.fpr_size, sh), seed=r)
              for r in range(args.fpr_runs)]
    fpr = summarise(fpr_ps)
    for row in fpr.values():
        for k in [k for k in row if k.endswith("_detect")]:
            hits = round(row[k] * args.fpr_runs)
            row[k.replace("_detect", "_fpr_ci95")] = fl.clopper_pearson(hits, args.fpr_runs)
    print(f"no shift, n={args.fpr_size}, {args.fpr_runs} draws: {json.dumps(fpr)}", flush=True)
    power: dict[str, Any] = {}
    for shift in args.shifts.split(","):
        power[shift] = {}
        for n in sizes:
            ps = [run_all(*sample(x, y, target, shift, r, n, sh), seed=r) for r in range(args.runs)]
            power[shift][str(n)] = summarise(ps)
            print(f"{shift} n={n}: " + "; ".join(
                f"{m} " + " ".join(f"{k.split('_')[0]} {v:.2f}" for k, v in row.items() if k.endswith("_detect"))
                for m, row in power[shift][str(n)].items()), flush=True)
    mean = {m: {lib: {str(n): round(float(np.mean([power[s][str(n)][m][f"{lib}_detect"] for s in power])), 3)
                      for n in sizes} for lib in libs if m in libs[lib]} for m in ("mmd", "lsdd", "ks")}
    agree = {m: {lib: round(float(np.mean([power[s][str(n)][m][f"{lib}_agree"] for s in power for n in sizes])), 3)
                 for lib in libs if lib != "sparring" and m in libs[lib]} for m in ("mmd", "lsdd", "ks")}
    out = {"versions": {"alibi-detect": alibi_detect.__version__, "frouros": getattr(frouros, "__version__", "0.9.0"),
                        "numpy": np.__version__, "torch": torch.__version__},
           "args": vars(args), "cnn_accuracy": acc, "false_positive_rate": fpr, "power": power,
           "mean_power_over_shifts": mean, "decision_agreement_with_sparring": agree,
           "seconds_per_test": {k: round(float(np.mean(v)), 4) for k, v in seconds.items()}}
    print(json.dumps({k: out[k] for k in ("mean_power_over_shifts", "decision_agreement_with_sparring",
                                          "seconds_per_test")}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
