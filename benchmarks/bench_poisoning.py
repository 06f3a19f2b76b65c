"""Poisoning and backdoor benchmark on bundled digits (28×28, the zoo's ``digits-cnn`` architecture and recipe:
Adam, 12 epochs, normalisation inside), per seed:

* BadNets (3×3 checkerboard, bottom-right) and Blended (random key, alpha 0.15), 5% poison, target class 0:
  clean accuracy, attack success rate (ASR) and robust accuracy against the clean model;
* spectral signatures on the flattened last convolutional map (recall when removing 1.5× the poison count from the
  flagged classes, and with Tran et al.'s rule alone: 1.5× the poison count from every class; flagged classes) and
  activation clustering (flagged classes, precision, recall) on the last hidden layer (Chen et al.'s layer, the
  default) and on the last convolutional map, on the poisoned training sets;
* Neural Cleanse anomaly indices on the clean, BadNets and Blended models;
* STRIP false acceptance at 1% false rejection (overlays: 50 defender digits; threshold fitted on the other 175);
* fine-pruning: ASR and clean accuracy before/after;
* the clean-label backdoor's ASR (``--parts clean-label``).

Defender's data: the first 225 test digits (Neural Cleanse uses 200 of them, fine-pruning all); every metric is
measured on the other 225. Models are cached under the sparring cache dir.

    python benchmarks/bench_poisoning.py --seeds 0 1 2 --nc-steps 150 --json benchmarks/results/poisoning.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparring.attacks.poisoning import BadNets, Blended, CleanLabel, PoisonResult, backdoor_metrics, detection_metrics
from sparring.data import models, zoo
from sparring.data.cache import cache_dir, load_state, save_state
from sparring.data.zoo import train_torch_classifier
from sparring.defenses.backdoor import FinePruning, NeuralCleanse
from sparring.defenses.detect.metrics import tpr_at_fpr
from sparring.defenses.detect.poison import ActivationClustering, SpectralSignatures, representations
from sparring.defenses.detect.strip import STRIP
from sparring.targets.torch import TorchTarget

TARGET = 0


def train(name: str, ds: Any, seed: int) -> TorchTarget:
    spec = zoo.entry("digits-cnn").spec()
    net = models.digits_cnn()
    path = cache_dir() / "bench-poisoning" / f"{name}-{seed}.pt"
    state = load_state(path)
    if state is None:
        train_torch_classifier(net, ds, spec, epochs=12, seed=seed)
        save_state(path, net.state_dict())
    else:
        net.load_state_dict(state)
    return TorchTarget(net.eval(), spec)


PARTS = ("scans", "nc", "strip", "fp", "clean-label")


def run_seed(seed: int, nc_steps: int, fp_ratio: float, parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    ds = zoo.data("digits-cnn")
    x_def, y_def, x_ev, y_ev = ds.x_test[:225], ds.y_test[:225], ds.x_test[225:], ds.y_test[225:]
    attacks: dict[str, PoisonResult] = {
        "badnets": BadNets(poison_share=0.05, target_class=TARGET, size=3, seed=seed)(
            ds.x_train, ds.y_train, spec=ds.spec),
        "blended": Blended(poison_share=0.05, target_class=TARGET, alpha=0.15, seed=seed)(
            ds.x_train, ds.y_train, spec=ds.spec),
    }
    clean = train("clean", ds, seed)
    out: dict[str, Any] = {"seed": seed, "clean_accuracy": clean.accuracy(x_ev, y_ev)}
    if "clean-label" in parts:
        out["clean_label"] = clean_label_row(clean, ds, x_ev, y_ev, seed)
        print(json.dumps({"seed": seed, "clean_label": out["clean_label"]}), flush=True)
    nc = NeuralCleanse(steps=nc_steps, seed=seed)
    if "nc" in parts:
        t0 = time.perf_counter()
        out["nc_clean_max_anomaly"] = float(nc(clean, x_def[:200]).anomaly.max())
        out["nc_seconds"] = time.perf_counter() - t0
    for name, res in attacks.items():
        model = train(name, res.dataset(ds), seed)
        m = backdoor_metrics(model, x_ev, y_ev, res)
        row: dict[str, Any] = {"clean_accuracy": m.clean_accuracy, "asr": m.attack_success_rate,
                               "robust_accuracy": m.robust_accuracy,
                               "clean_model_asr": backdoor_metrics(clean, x_ev, y_ev, res).attack_success_rate}
        if "scans" in parts:
            conv = representations(model, res.x, layer="last-conv")
            ss = SpectralSignatures(n_remove=round(1.5 * res.n_poisoned))(conv, res.y)
            row["ss_recall"] = detection_metrics(ss.suspicious, res.indices).recall
            row["ss_flagged"] = ss.flagged_classes
            # the paper's rule with no verdict: 1.5 × the poison count from every class (issue 22, item 9)
            ss_all = SpectralSignatures(expected_share=res.n_poisoned / len(res.y), min_separation=1.0)(conv, res.y)
            row["ss_paper_rule_recall"] = detection_metrics(ss_all.suspicious, res.indices).recall
            for key, layer in (("ac", "last-hidden"), ("ac_conv", "last-conv")):  # Chen et al.'s layer, then ours
                feats = conv if layer == "last-conv" else representations(model, res.x, layer=layer)
                ac = ActivationClustering(seed=seed)(feats, res.y)
                row[f"{key}_flagged"] = ac.flagged_classes
                row[f"{key}_recall"] = detection_metrics(ac.suspicious, res.indices).recall
                row[f"{key}_precision"] = detection_metrics(ac.suspicious, res.indices).precision
        if "nc" in parts:
            scan = nc(model, x_def[:200])
            row["nc_anomaly_target"] = float(scan.anomaly[TARGET])
            row["nc_flagged"] = scan.flagged
        if "strip" in parts:
            row.update(strip_row(model, res, x_def, x_ev, y_ev, seed))
        if "fp" in parts:
            hidden = next(mm for mm in model.model.modules() if isinstance(mm, nn.Linear))
            fp = FinePruning(layer=hidden, prune_ratio=fp_ratio, seed=seed)(model, x_def, y_def)
            after = backdoor_metrics(fp.target, x_ev, y_ev, res)
            row["fp_clean_accuracy"], row["fp_asr"] = after.clean_accuracy, after.attack_success_rate
        out[name] = row
        print(json.dumps({"seed": seed, name: row}), flush=True)
    return out


def clean_label_row(surrogate: TorchTarget, ds: Any, x_ev: torch.Tensor, y_ev: torch.Tensor,
                    seed: int) -> dict[str, float]:
    """Clean-label backdoor (Turner et al. 2019): 5% of the training set (half of class 0), L∞ PGD eps 0.3 against
    the clean model of the same seed, 3×3 patch; ASR of a model trained on it."""
    res = CleanLabel(poison_share=0.05, target_class=TARGET, eps=0.3, steps=20, seed=seed)(
        surrogate, ds.x_train, ds.y_train)
    m = backdoor_metrics(train("clean-label", res.dataset(ds), seed), x_ev, y_ev, res)
    return {"clean_accuracy": m.clean_accuracy, "asr": m.attack_success_rate}


def strip_row(model: TorchTarget, res: PoisonResult, x_def: torch.Tensor, x_ev: torch.Tensor, y_ev: torch.Tensor,
              seed: int) -> dict[str, float]:
    """STRIP with overlays from 50 defender digits and the threshold fitted on the other 175 at 1% FRR; on the
    evaluation digits: the FRR and FAR of that threshold, and the ROC point (FAR at 1% FRR of the evaluation set)."""
    strip = STRIP(model, x_def[:50], seed=seed).fit(x_def[50:], frr=0.01)
    trig = res.triggered(x_ev[y_ev != TARGET])
    h_clean, h_trig = strip.entropy(x_ev), strip.entropy(trig)
    tpr, _ = tpr_at_fpr(-h_clean, -h_trig, 0.01)  # low entropy = trojaned
    return {"strip_frr": float(strip.detect(x_ev).float().mean()),
            "strip_far": 1 - float(strip.detect(trig).float().mean()), "strip_far_at_1pct_frr": 1 - tpr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--nc-steps", type=int, default=300)
    ap.add_argument("--fp-ratio", type=float, default=0.85)
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure besides the "
                    "attacks' clean accuracy and ASR")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = [run_seed(s, args.nc_steps, args.fp_ratio, tuple(args.parts)) for s in args.seeds]
    med: dict[str, float] = {}
    if "nc" in args.parts:
        med["nc_clean_max_anomaly"] = statistics.median(r["nc_clean_max_anomaly"] for r in runs)
    for name in ("badnets", "blended"):
        for key in ("clean_accuracy", "asr", "robust_accuracy", "ss_recall", "ss_paper_rule_recall", "ac_recall",
                    "ac_precision", "ac_conv_recall", "ac_conv_precision", "nc_anomaly_target",
                    "strip_far", "strip_frr", "strip_far_at_1pct_frr", "fp_clean_accuracy", "fp_asr"):
            if key in runs[0][name]:
                med[f"{name}_{key}"] = statistics.median(r[name][key] for r in runs)
    med["clean_accuracy"] = statistics.median(r["clean_accuracy"] for r in runs)
    if "clean-label" in args.parts:
        med["clean_label_asr"] = statistics.median(r["clean_label"]["asr"] for r in runs)
    print(json.dumps({"median": med}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs, "median": med}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
