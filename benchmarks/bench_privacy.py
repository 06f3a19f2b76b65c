"""Membership inference and DP training, measured: the numbers in docs/privacy.md.

Setup (Carlini et al. 2022's evaluation, scaled down): a universe of ``--universe`` real 8×8 UCI digits; the target, a
one-hidden-layer MLP trained without regularisation until it fits its training set perfectly (deliberately
overfit), sees a random half. Every attack scores the whole universe; shadow models are trained on random halves of
it with the target's recipe. Reported per attack: AUC, membership advantage, TPR at 0.1 % and 1 % FPR where
measurable (else None and the raw reading), the TPR and its 95% interval at the lowest measurable FPR, seconds.

Then the same target architecture is trained with DP-SGD (Opacus) at each ``--dp-eps``; the loss-threshold attack and
offline LiRA (with shadow models trained with the same DP recipe) attack it, and every ROC point is checked against
``TPR ≤ e^ε·FPR + δ`` (Clopper–Pearson, 95 %).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_privacy.py`` (about 3-5 minutes on 2 CPU cores);
``--shadows 64`` for the paper-like online LiRA. Writes ``benchmarks/results/privacy-<n>shadows.json`` and
``privacy_roc-<n>shadows.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparring.attacks.privacy import (
    LiRA,
    LossThreshold,
    MembershipResult,
    MIFace,
    ShadowModelAttack,
    plot_inversions,
    plot_roc,
    torch_trainer,
)
from sparring.attacks.privacy.membership import random_halves
from sparring.data.datasets import load_digits
from sparring.defenses.training.dp import check_dp_bound, dp_trainer, train_dp
from sparring.targets import TorchTarget

RESULTS = Path(__file__).resolve().parent / "results"


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def row(res: MembershipResult, seconds: float) -> dict[str, Any]:
    """One attack's figures: a TPR at 0.1% / 1% FPR only where 10 / FPR non-members resolve it (else None, with the
    raw reading kept apart), and the TPR with its 95% interval at the lowest measurable FPR."""
    low = res.lowest_measurable_fpr
    ci = res.tpr_interval(low)
    return {"attack": res.attack, "auc": round(res.auc, 4), "advantage": round(res.advantage, 4),
            "tpr_at_0.1pct_fpr": res.tpr_at(0.001), "tpr_at_1pct_fpr": res.tpr_at(0.01),
            "raw_tpr_at_0.1pct_fpr": round(res.raw_tpr_at(0.001), 4),
            "raw_tpr_at_1pct_fpr": round(res.raw_tpr_at(0.01), 4),
            "lowest_measurable_fpr": low, "tpr_at_lowest_measurable_fpr": round(res.raw_tpr_at(low), 4),
            "tpr_at_lowest_measurable_fpr_ci": None if ci is None else [round(v, 4) for v in ci],
            "seconds": round(seconds, 1)}


def timed(fn: Any) -> tuple[MembershipResult, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def invert(target: TorchTarget, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """MI-Face on the target: confidence, and whether each reconstruction correlates best with its own class's
    average training digit. The image goes to ``results/privacy_inversion.png``."""
    t0 = time.perf_counter()
    res = MIFace(steps=1000, lr=0.1)(target)
    sec = time.perf_counter() - t0
    means = torch.stack([x[y == c].mean(0) for c in range(10)]).flatten(1)
    a, b = (v - v.mean(1, keepdim=True) for v in (res.x.flatten(1), means))
    corr = (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T
    plot_inversions(res).savefig(RESULTS / "privacy_inversion.png")
    return {"min_confidence": round(float(res.confidence.min()), 4),
            "own_class_closest": int((corr.argmax(1) == torch.arange(10)).sum()),
            "mean_own_class_correlation": round(float(corr.diag().mean()), 3), "seconds": round(sec, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--universe", type=int, default=1000)
    ap.add_argument("--shadows", type=int, default=16)
    ap.add_argument("--dp-eps", default="1,4,8", help="comma-separated target ε values ('' to skip DP)")
    ap.add_argument("--dp-shadows", type=int, default=4)
    ap.add_argument("--dp-epochs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_digits(8)
    x = torch.cat([ds.x_train, ds.x_test])[: args.universe]
    y = torch.cat([ds.y_train, ds.y_test])[: args.universe]
    member = random_halves(1, len(x), torch.Generator().manual_seed(123))[0]
    train = torch_trainer(mlp, ds.spec, epochs=100, lr=1e-2, batch_size=500)
    target = train(x[member], y[member], 999)
    out: dict[str, Any] = {"setup": {"universe": len(x), "members": int(member.sum()),
                                     "train_accuracy": target.accuracy(x[member], y[member]),
                                     "test_accuracy": target.accuracy(x[~member], y[~member])}, "overfit": []}
    curves: dict[str, MembershipResult] = {}
    for label, fn in (
        ("loss threshold", lambda: LossThreshold()(target, x, y, member)),
        (f"shadow ({4})", lambda: ShadowModelAttack(n_shadow=4)(target, x, y, member, train=train)),
        (f"LiRA offline ({args.shadows})", lambda: LiRA(n_shadow=args.shadows, online=False)(
            target, x, y, member, train=train)),
        (f"LiRA online ({args.shadows})", lambda: LiRA(n_shadow=args.shadows)(target, x, y, member, train=train)),
    ):
        res, sec = timed(fn)
        curves[label] = res
        out["overfit"].append({"label": label, **row(res, sec)})
        print(json.dumps(out["overfit"][-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    plot_roc(curves, title="Overfit digits MLP").savefig(RESULTS / f"privacy_roc-{args.shadows}shadows.png")
    out["inversion"] = invert(target, x[member], y[member])
    print(json.dumps(out["inversion"]), flush=True)
    out["dp"] = []
    for eps in [float(e) for e in args.dp_eps.split(",") if e.strip()]:
        dp_kw: dict[str, Any] = {"epochs": args.dp_epochs, "batch_size": 128, "lr": 0.5, "target_epsilon": eps}
        t0 = time.perf_counter()
        dp = train_dp(mlp(), x[member], y[member], ds.spec, seed=0, **dp_kw)
        dp_target = TorchTarget(dp.model, ds.spec)
        entry: dict[str, Any] = {"epsilon": round(dp.epsilon, 3), "delta": dp.delta,
                                 "noise_multiplier": round(dp.noise_multiplier, 3),
                                 "train_seconds": round(time.perf_counter() - t0, 1),
                                 "test_accuracy": dp_target.accuracy(x[~member], y[~member]), "attacks": []}
        shadow_train = dp_trainer(mlp, ds.spec, **dp_kw)
        for attack, kw in ((LossThreshold(), {}),
                           (LiRA(n_shadow=args.dp_shadows, online=False), {"train": shadow_train})):
            res, sec = timed(lambda a=attack, k=kw, t=dp_target: a(t, x, y, member, **k))
            check = check_dp_bound(res, dp.epsilon, dp.delta)
            entry["attacks"].append({**row(res, sec), "bound": check.summary()})
        out["dp"].append(entry)
        print(json.dumps(entry), flush=True)
    (RESULTS / f"privacy-{args.shadows}shadows.json").write_text(json.dumps(out, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
