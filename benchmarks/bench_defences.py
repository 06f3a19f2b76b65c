"""Defences on the bundled digits (1×28×28): the measurements behind docs/defenses.md and docs/detection.md.

* ``trades``: TRADES (Zhang et al. 2019) clean / PGD-20 robust accuracy over β with the zoo's adversarial-training
  recipe (``sparring.data.zoo._AT_*``: L∞ eps 0.1, 5 inner steps, 6 epochs, Adam 3e-3 one-cycle, batch 32);
  models cached under ``$SPARRING_CACHE_DIR/bench/``. Writes ``results/trades-beta.json`` and ``trades-beta.png``.
* ``autoattack``: AutoAttack (standard, L∞ eps 0.1) robust accuracy of ``digits-cnn-pgdat`` and of the undefended
  ``digits-cnn`` on the same first ``--n`` test digits. Writes ``results/autoattack-pgdat-vs-undefended.json``.
* ``detectors``: ROC AUC and TPR at 5% FPR of the Mahalanobis, energy, max-softmax and feature-squeezing detectors
  on ``digits-cnn`` against FGSM, PGD, C&W L2 and the detector-aware adaptive attack. ``results/detectors.json``.
* ``layered``: the outcome table of ``digits-cnn-pgdat`` + bit depth + Mahalanobis detector (undefended baseline
  included). ``results/layered.json``.

Run: ``nice -n 10 .venv/bin/python benchmarks/bench_defences.py all --n 100`` (tens of minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from sparring import FGSM, PGD, AutoAttack, CarliniWagnerL2
from sparring.data import models, zoo
from sparring.data.cache import cache_dir, load_state, save_state
from sparring.targets.torch import TorchTarget

RESULTS = Path(__file__).resolve().parent / "results"
EPS = 0.1


def _write(name: str, data: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    data = {**data, "torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform()}
    (RESULTS / name).write_text(json.dumps(data, indent=1))
    print(f"wrote {RESULTS / name}")


def _torch(name: str) -> TorchTarget:
    t = zoo.load(name)
    assert isinstance(t, TorchTarget)
    return t


def _trades_model(beta: float) -> TorchTarget:
    from sparring.defenses.training.adversarial import adversarial_train

    spec = zoo.entry("digits-cnn-trades").spec()
    target = TorchTarget(models.digits_cnn(), spec)
    path = cache_dir() / "bench" / f"trades-beta{beta:g}-torch{torch.__version__.split('+')[0]}.pt"
    state = load_state(path)
    if state is not None:
        target.model.load_state_dict(state)
        return target
    adversarial_train(target, zoo.data("digits-cnn-trades"), method="trades", beta=beta, eps=zoo._AT_EPS,
                      steps=zoo._AT_STEPS, epochs=zoo._AT_EPOCHS, lr=zoo._AT_LR, schedule="cyclic",
                      batch_size=zoo._AT_BATCH, seed=0, progress=True)
    save_state(path, target.model.state_dict())
    return target


def bench_trades(n: int, betas: list[float]) -> None:
    ds = zoo.data("digits-cnn")
    x, y = ds.x_test[:n], ds.y_test[:n]
    rows = []
    for beta in betas:
        t0 = time.perf_counter()
        target = _trades_model(beta)
        res = PGD(eps=EPS, steps=20)(target, x, y)
        rows.append({"beta": beta, "clean_accuracy": target.accuracy(ds.x_test, ds.y_test),
                     "clean_accuracy_n": res.clean_accuracy, "pgd20_robust_accuracy": res.robust_accuracy,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1])
    _write("trades-beta.json", {"eps": EPS, "n": n, "n_clean": len(ds.x_test), "rows": rows})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot([r["clean_accuracy"] for r in rows], [r["pgd20_robust_accuracy"] for r in rows], "o-")
    for r in rows:
        ax.annotate(f"β={r['beta']:g}", (r["clean_accuracy"], r["pgd20_robust_accuracy"]))
    ax.set_xlabel("clean accuracy (450 test digits)")
    ax.set_ylabel(f"PGD-20 robust accuracy (L∞ {EPS:g}, n={n})")
    ax.set_title("TRADES trade-off over β (digits-cnn)")
    fig.tight_layout()
    fig.savefig(RESULTS / "trades-beta.png", dpi=120)


def bench_autoattack(n: int) -> None:
    ds = zoo.data("digits-cnn")
    x, y = ds.x_test[:n], ds.y_test[:n]
    rows = {}
    for name in ("digits-cnn", "digits-cnn-pgdat"):
        target = _torch(name)
        t0 = time.perf_counter()
        res = AutoAttack(eps=EPS, version="standard")(target, x, y)
        rows[name] = {"clean_accuracy": res.clean_accuracy, "robust_accuracy": res.robust_accuracy,
                      "clean_accuracy_all_test": target.accuracy(ds.x_test, ds.y_test),
                      "seconds": round(time.perf_counter() - t0, 1)}
        print(name, rows[name])
    gap = rows["digits-cnn-pgdat"]["robust_accuracy"] - rows["digits-cnn"]["robust_accuracy"]
    _write("autoattack-pgdat-vs-undefended.json", {"eps": EPS, "n": n, "rows": rows, "gap_points": 100 * gap})


def bench_detectors(n: int) -> None:
    from sparring.defenses.detect.evaluate import detector_aware_pgd, evaluate
    from sparring.defenses.detect.features import EnergyDetector, MahalanobisDetector, MaxSoftmaxDetector
    from sparring.defenses.detect.squeezing import FeatureSqueezingDetector
    from sparring.defenses.preprocess import BitDepth, MedianSmoothing

    target, ds = _torch("digits-cnn"), zoo.data("digits-cnn")
    eps = 0.2
    x, y = ds.x_test[:n], ds.y_test[:n]
    x_cal, x_val, y_val = ds.x_test[250:450], ds.x_test[n:n + 100], ds.y_test[n:n + 100]
    val = FGSM(eps=eps)(target, x_val, y_val)
    dets = {
        "mahalanobis (penultimate)": MahalanobisDetector(target).fit(ds.x_train, ds.y_train).calibrate(x_cal),
        "mahalanobis (3 layers, LR)": MahalanobisDetector(target).fit(ds.x_train, ds.y_train)
        .fit_combiner(x_val, val.x_adv[val.success]).calibrate(x_cal),
        "energy": EnergyDetector(target).calibrate(x_cal),
        "max-softmax": MaxSoftmaxDetector(target).calibrate(x_cal),
        "feature squeezing": FeatureSqueezingDetector(target, (BitDepth(2), MedianSmoothing(2))).fit(x_cal),
    }
    attacks = {"fgsm": FGSM(eps=eps), "pgd": PGD(eps=eps, steps=20),
               "cw-l2": CarliniWagnerL2(binary_steps=3, steps=30, lr=0.05, c_init=0.1)}
    adv = {}
    for name, attack in attacks.items():
        r = attack(target, x, y)
        adv[name] = r.x_adv[r.success]
    rows = []
    for dname, det in dets.items():
        row: dict[str, Any] = {"detector": dname}
        for aname, xa in adv.items():
            e = evaluate(det, x, xa)
            row[aname] = {"roc_auc": e["roc_auc"], "tpr_at_5fpr": e["tpr_at_fpr"]}
        xa = detector_aware_pgd(target, det, x, y, eps=eps, steps=40)  # type: ignore[arg-type]
        fooled = target.predict(xa) != y
        e = evaluate(det, x, xa[fooled])
        row["adaptive"] = {"roc_auc": e["roc_auc"], "tpr_at_5fpr": e["tpr_at_fpr"],
                           "fooled": float(fooled.float().mean()), "detection_rate": e.get("detection_rate")}
        rows.append(row)
        print(row)
    _write("detectors.json", {"eps": eps, "n": n, "rows": rows})


def bench_layered(n: int) -> None:
    from sparring.defenses.detect.features import MahalanobisDetector
    from sparring.defenses.layered import LayeredDefence, evaluate_layers
    from sparring.defenses.preprocess import BitDepth

    robust, base, ds = _torch("digits-cnn-pgdat"), _torch("digits-cnn"), zoo.data("digits-cnn")
    det = MahalanobisDetector(robust).fit(ds.x_train, ds.y_train).calibrate(ds.x_test[250:450])
    t0 = time.perf_counter()
    ev = evaluate_layers(LayeredDefence(robust, [BitDepth(3)], det), ds.x_test[:n], ds.y_test[:n], eps=EPS,
                         steps=40, baseline=base)
    print(ev.table())
    _write("layered.json", {**ev.to_dict(), "seconds": round(time.perf_counter() - t0, 1)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["trades", "autoattack", "detectors", "layered", "all"])
    p.add_argument("--n", type=int, default=100, help="test points attacked")
    p.add_argument("--betas", default="0.5,1,3,6")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.which in ("detectors", "all"):
        bench_detectors(min(a.n, 200))
    if a.which in ("layered", "all"):
        bench_layered(a.n)
    if a.which in ("trades", "all"):
        bench_trades(a.n, [float(b) for b in a.betas.split(",")])
    if a.which in ("autoattack", "all"):
        bench_autoattack(a.n)


if __name__ == "__main__":
    main()
