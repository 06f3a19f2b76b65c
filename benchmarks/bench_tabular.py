"""Constrained tabular evasion on the synthetic transactions: how much detected fraud can be disguised, at what cost.

**What is attacked.** Every test transaction that is fraud *and* flagged as fraud by the model (``fraud-mlp``: an
MLP; ``fraud-gbm``: scikit-learn gradient boosting, 60 trees of depth 3). The attacker may change only what
:func:`~sparring.data.transactions.transactions_constraints` allows (amount, items, hour, distance, channel, merchant
category; the 24 h count only upwards; the total follows the amount and stays within the credit limit).

**Reported per attack.** Evasion rate among detected fraud, share of returned rows that pass the separate
constraint checker, median cost of the evasions (weighted L1: $1000 of amount = 1, a category switch = 0.5, ...),
queries, gradients, seconds. The unconstrained baseline (same attack, bounds only) is shown beside it with its
violations. For the trees: the MILP (Kantchelian et al. 2016) against the black-box search on the same points,
counting points where the MILP is cheaper / equal / costlier. With ``--training``: constrained adversarial training
of the MLP (10 epochs, CPGD 10 steps) and the robust fraud recall / cost-to-evade before and after.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tabular.py [--milp-n 40] [--training] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from sparring import zoo
from sparring.attacks.tabular import CAPGD, CPGD, ConstrainedResult, CostSearch, TreeEvasion
from sparring.data.transactions import transactions_constraints
from sparring.defenses.training.constrained import constrained_adversarial_train, cost_to_evade
from sparring.targets import SklearnTarget, TorchTarget
from sparring.targets.base import Target
from sparring.targets.spec import Access

C = transactions_constraints()


def _row(r: ConstrainedResult, x: torch.Tensor, seconds: float) -> dict[str, Any]:
    ok = C.check(x, torch.as_tensor(r.x_adv)).ok
    succ = torch.as_tensor(r.success)
    claimed = torch.as_tensor(r.costs)[succ]
    return {
        "attack": r.attack, "constrained": r.constrained, "n": r.n,
        "evasion_rate": round(float(succ.float().mean()), 4),
        "feasible_rows": round(float(ok.float().mean()), 4),
        "feasible_evasion_rate": round(float((succ & ok).float().mean()), 4),
        "median_cost": None if r.median_cost is None else round(r.median_cost, 4),
        "median_claimed_cost": round(float(np.median(claimed.numpy())), 4) if claimed.numel() else None,
        "queries": r.cost.queries, "gradients": r.cost.gradients, "seconds": round(seconds, 2),
        "violations": r.violations,
    }


def _run(attack: Any, target: Target, x: torch.Tensor, y: torch.Tensor) -> tuple[ConstrainedResult, dict[str, Any]]:
    t0 = time.perf_counter()
    r = attack(target, x, y)
    return r, _row(r, x, time.perf_counter() - t0)


def _fraud(target: Target) -> tuple[torch.Tensor, torch.Tensor]:
    ds = zoo.data("fraud-gbm")
    keep = (target.predict(ds.x_test) == 1) & (ds.y_test == 1)
    return ds.x_test[keep], ds.y_test[keep]


def bench_mlp() -> list[dict[str, Any]]:
    t = zoo.load("fraud-mlp")
    x, y = _fraud(t)
    rows = []
    for a in (CPGD(constraints=C), CAPGD(constraints=C), CPGD(constraints=C, constrained=False, refine=False),
              CostSearch(constraints=C)):
        rows.append({"model": "fraud-mlp", **_run(a, t, x, y)[1]})
    labels = TorchTarget(t.model, t.spec, access=Access.LABELS)  # type: ignore[attr-defined]
    rows.append({"model": "fraud-mlp", "access": "labels", **_run(CostSearch(constraints=C), labels, x, y)[1]})
    rows.append({"model": "fraud-mlp", "access": "labels+hsj",
                 **_run(CostSearch(constraints=C, boundary_steps=10), labels, x, y)[1]})
    return rows


def bench_gbm(milp_n: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    t = zoo.load("fraud-gbm")
    x, y = _fraud(t)
    rows = []
    search, row = _run(CostSearch(constraints=C), t, x, y)
    rows.append({"model": "fraud-gbm", "access": "scores", **row})
    labels = SklearnTarget(t.estimator, t.spec, access=Access.LABELS)  # type: ignore[attr-defined]
    rows.append({"model": "fraud-gbm", "access": "labels", **_run(CostSearch(constraints=C), labels, x, y)[1]})
    rows.append({"model": "fraud-gbm", "access": "labels+hsj",
                 **_run(CostSearch(constraints=C, boundary_steps=10), labels, x, y)[1]})
    rows.append({"model": "fraud-gbm", **_run(CostSearch(constraints=C, constrained=False), t, x, y)[1]})
    xm, ym = x[:milp_n], y[:milp_n]
    exact, row = _run(TreeEvasion(constraints=C), t, xm, ym)
    rows.append({"model": "fraud-gbm", **row})
    sc, ec = np.asarray(search.costs[:milp_n]), np.asarray(exact.costs)
    both = np.asarray(search.success[:milp_n]) & np.asarray(exact.success)
    cmp = {"points": int(milp_n), "both_evaded": int(both.sum()),
           "milp_cheaper": int((ec[both] < sc[both] - 1e-4).sum()),
           "equal": int((np.abs(ec[both] - sc[both]) <= 1e-4).sum()),
           "milp_costlier": int((ec[both] > sc[both] + 1e-4).sum()),
           "median_cost_search": float(np.median(sc[both])) if both.any() else None,
           "median_cost_milp": float(np.median(ec[both])) if both.any() else None,
           "milp_seconds_per_point": round(row["seconds"] / max(1, milp_n), 3),
           "milp_proven_optimal": exact.extras.get("proven_optimal")}
    return rows, cmp


def bench_training() -> dict[str, Any]:
    ds = zoo.data("fraud-mlp")
    plain = zoo.load("fraud-mlp")
    assert isinstance(plain, TorchTarget)
    robust = TorchTarget(zoo.entry("fraud-mlp").build(), plain.spec)
    t0 = time.perf_counter()
    constrained_adversarial_train(robust, ds, C, eps=0.3, steps=10, epochs=10, seed=0)
    secs = time.perf_counter() - t0
    fraud = ds.y_test == 1
    out: dict[str, Any] = {"train_seconds": round(secs, 1)}
    for name, t in (("standard", plain), ("constrained-AT", robust)):
        r = CPGD(constraints=C, steps=40)(t, ds.x_test[fraud], ds.y_test[fraud])
        out[name] = {"clean_accuracy": round(t.accuracy(ds.x_test, ds.y_test), 4),
                     "fraud_recall": round(r.clean_accuracy, 4), "robust_fraud_recall": round(r.robust_accuracy, 4),
                     "cost_to_evade": cost_to_evade([r]).to_dict()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--milp-n", type=int, default=40)
    p.add_argument("--training", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = bench_mlp()
    gbm_rows, cmp = bench_gbm(args.milp_n)
    out: dict[str, Any] = {"attacks": rows + gbm_rows, "milp_vs_search": cmp}
    if args.training:
        out["training"] = bench_training()
    for r in out["attacks"]:
        print(f"{r['model']:10s} {r['attack']:12s} {'constrained' if r['constrained'] else 'UNCONSTR.':11s} "
              f"{r.get('access', ''):10s} evasion {r['evasion_rate']:.3f} feasible rows {r['feasible_rows']:.3f} "
              f"median cost {r['median_cost']} (claimed {r['median_claimed_cost']}) {r['queries']} queries "
              f"{r['seconds']} s")
    print("MILP vs search:", cmp)
    if "training" in out:
        print("training:", json.dumps(out["training"], indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
