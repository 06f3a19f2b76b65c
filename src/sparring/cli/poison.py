"""``sparring poison``, ``sparring scan-data`` and ``sparring scan-model``: poisoning attacks on a zoo model's
training data, training-set scans, and Neural Cleanse model scans. Thin commands; the bodies are plain functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "run_poison", "run_scan_data", "run_scan_model"]

_ATTACKS = ("badnets", "blended", "label-flip")


def run_poison(attack: str, model: str, *, share: float, target_class: int, size: int, position: str,
               alpha: float, seed: int, train: bool, epochs: int | None, out: str | None,
               save_model: str | None) -> dict[str, Any]:
    """Poison zoo model ``model``'s training set; optionally train its architecture on it and measure the backdoor."""
    import numpy as np
    import torch

    from sparring.attacks.poisoning import BadNets, Blended, LabelFlip, backdoor_metrics
    from sparring.data import zoo
    from sparring.errors import ParameterError

    if model not in zoo.names() or zoo.entry(model).kind != "torch":
        torch_names = [n for n in zoo.names() if zoo.entry(n).kind == "torch"]
        raise ParameterError(f"poison needs a torch zoo model (its training data and recipe); got {model!r}. "
                             f"Choose one of: {', '.join(torch_names)}.")
    entry, ds = zoo.entry(model), zoo.data(model)
    if attack == "badnets":
        res = BadNets(poison_share=share, target_class=target_class, size=size, position=position, seed=seed)(
            ds.x_train, ds.y_train, spec=ds.spec)
    elif attack == "blended":
        res = Blended(poison_share=share, target_class=target_class, alpha=alpha, seed=seed)(
            ds.x_train, ds.y_train, spec=ds.spec)
    else:
        res = LabelFlip(poison_share=share, seed=seed)(ds.x_train, ds.y_train, spec=ds.spec)
    summary: dict[str, Any] = {**res.summary(), "model": model}
    summary["cost"] = res.cost.to_dict()
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {} if res.trigger is None else {"trigger_mask": res.trigger.mask.numpy(),
                                                "trigger_pattern": res.trigger.pattern.numpy()}
        np.savez_compressed(out, x=torch.as_tensor(res.x).numpy(), y=torch.as_tensor(res.y).numpy(),
                            indices=res.indices.numpy() if res.indices is not None else np.zeros(0), **extra)
        summary["saved"] = out
    if train:
        from sparring.data.zoo import train_torch_classifier
        from sparring.targets.torch import TorchTarget

        spec = entry.spec()
        net = train_torch_classifier(entry.build(), res.dataset(ds), spec, epochs=epochs or entry.epochs,
                                     lr=entry.lr, seed=seed)
        poisoned, clean = TorchTarget(net, spec), zoo.load(model)
        if save_model:
            Path(save_model).parent.mkdir(parents=True, exist_ok=True)
            torch.save(net.state_dict(), save_model)
            summary["saved_model"] = save_model
        if res.trigger is not None:
            summary["before"] = backdoor_metrics(clean, ds.x_test, ds.y_test, res).to_dict()
            summary["after"] = backdoor_metrics(poisoned, ds.x_test, ds.y_test, res).to_dict()
        else:
            summary["before"] = {"clean_accuracy": clean.accuracy(ds.x_test, ds.y_test)}
            summary["after"] = {"clean_accuracy": poisoned.accuracy(ds.x_test, ds.y_test)}
    return summary


def run_scan_data(target: Any, x: Any, y: Any, *, methods: list[str], expected_share: float,
                  out: str | None) -> dict[str, Any]:
    """Spectral signatures and/or activation clustering on the training set ``(x, y)`` of ``target``."""
    import numpy as np

    from sparring.defenses.detect.poison import ActivationClustering, SpectralSignatures, representations
    from sparring.errors import ParameterError
    from sparring.targets.torch import TorchTarget

    if not isinstance(target, TorchTarget):
        raise ParameterError(f"scan-data reads the model's internal representations: it needs a torch model; got "
                             f"{type(target).__name__}.")
    feats = representations(target, x, layer="last-conv")  # both scans find the poison there (docs/poisoning.md)
    scans: dict[str, Any] = {"spectral": SpectralSignatures(expected_share=expected_share),
             "activation-clustering": ActivationClustering()}
    results = {m: scans[m](feats, y) for m in methods}
    summary: dict[str, Any] = {"n": len(y), "scans": {m: r.summary() for m, r in results.items()}}
    if out:
        keep = np.ones(len(y), dtype=bool)
        for r in results.values():
            keep &= r.keep.numpy()
        np.savez_compressed(out, x=np.asarray(x)[keep], y=np.asarray(y)[keep],
                            removed=np.flatnonzero(~keep))
        summary["saved"] = out
        summary["removed"] = int((~keep).sum())
    return summary


def run_scan_model(target: Any, x: Any, *, steps: int, seed: int) -> dict[str, Any]:
    """Neural Cleanse on ``target`` with clean inputs ``x``."""
    from sparring.defenses.backdoor import NeuralCleanse

    return NeuralCleanse(steps=steps, seed=seed)(target, x).summary()


def _print(summary: dict[str, Any], as_json: bool, kind: str) -> None:
    import click

    if as_json:
        click.echo(json.dumps(summary, default=str))
        return
    if kind == "poison":
        click.echo(f"{summary['attack']}: {summary['n_poisoned']} of {summary['n']} training examples poisoned "
                   f"(target class {summary['target_class']})")
        for stage in ("before", "after"):
            if stage in summary:
                vals = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in summary[stage].items()
                                 if isinstance(v, float))
                click.echo(f"  {'clean model' if stage == 'before' else 'poisoned model'}: {vals}")
    elif kind == "scan-data":
        for name, s in summary["scans"].items():
            click.echo(f"{name}: {s['n_suspicious']} suspicious of {summary['n']}; flagged classes "
                       f"{s['flagged_classes'] or 'none'}")
            for c in s["classes"]:
                click.echo(f"  class {c['class']}: n {c['n']}, statistic {c['statistic']:.3f}, removed {c['removed']}"
                           + ("  <- flagged" if c["flagged"] else ""))
    else:
        click.echo(f"Neural Cleanse: flagged labels {summary['flagged'] or 'none'}")
        for i, (n1, a) in enumerate(zip(summary["mask_l1"], summary["anomaly_index"], strict=True)):
            index = "not converged" if a is None else f"{a:.2f}" + ("  <- backdoor" if a > 2 else "")
            click.echo(f"  label {i}: trigger L1 {n1:.1f}, anomaly index {index}")
    if "saved" in summary:
        click.echo(f"wrote {summary['saved']}")


def add_commands(cli: Any) -> None:
    import click

    from sparring import errors
    from sparring.cli import _EXIT_HELP, EXIT_GATE, _fail, _load_data, _load_target
    from sparring.cli.options import npz_key_options

    group: click.Group = cli

    model_opt = click.option("--model", "-m", default="digits-cnn", show_default=True,
                             help="Zoo name, or a model file (with --spec, --entry-point for a state dict).")

    @group.command(epilog=_EXIT_HELP)
    @click.argument("attack", type=click.Choice(_ATTACKS))
    @model_opt
    @click.option("--share", type=float, default=0.05, show_default=True, help="Poisoned share of the training set.")
    @click.option("--target-class", type=int, default=0, show_default=True)
    @click.option("--size", type=int, default=3, show_default=True, help="BadNets patch side (pixels).")
    @click.option("--position", default="bottom-right", show_default=True, help="BadNets patch corner or center.")
    @click.option("--alpha", type=float, default=0.15, show_default=True, help="Blended trigger ratio.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--train/--no-train", default=True, show_default=True,
                  help="Train the zoo architecture on the poisoned data and report clean accuracy and ASR.")
    @click.option("--epochs", type=click.IntRange(min=1), help="Training epochs (default: the zoo recipe's).")
    @click.option("--out", type=click.Path(dir_okay=False), help="Write the poisoned x, y, indices to this .npz.")
    @click.option("--save-model", type=click.Path(dir_okay=False), help="Write the poisoned model's state dict.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def poison(attack: str, model: str, share: float, target_class: int, size: int, position: str, alpha: float,
               seed: int, train: bool, epochs: int | None, out: str | None, save_model: str | None,
               as_json: bool) -> None:
        """Poison a zoo model's training data with ATTACK and measure the planted backdoor.

        \b
        Examples:
          sparring poison badnets --model digits-cnn --share 0.05 --target-class 0 --save-model bad.pt
          sparring poison blended --alpha 0.2 --no-train --out poisoned.npz --json
        """
        try:
            summary = run_poison(attack, model, share=share, target_class=target_class, size=size,
                                 position=position, alpha=alpha, seed=seed, train=train, epochs=epochs, out=out,
                                 save_model=save_model)
        except errors.SparringError as exc:
            _fail(exc)
        _print(summary, as_json, "poison")

    @group.command("scan-data", epilog=_EXIT_HELP)
    @model_opt
    @click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="InputSpec JSON for a model file.")
    @click.option("--entry-point", help="'package.module:callable' building the nn.Module for a state-dict file.")
    @npz_key_options
    @click.option("--data", "-d", type=click.Path(), help="Training data (.npz with x, y; CSV; image folder). "
                  "Default: the zoo model's training split.")
    @click.option("--method", "methods", multiple=True, type=click.Choice(["spectral", "activation-clustering"]),
                  help="Scan(s) to run (repeatable; default both).")
    @click.option("--expected-share", type=float, default=0.05, show_default=True,
                  help="Upper bound on the poisoned share (spectral signatures remove 1.5× this).")
    @click.option("--out", type=click.Path(dir_okay=False), help="Write the cleaned x, y to this .npz.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def scan_data(model: str, spec_path: str | None, entry_point: str | None, data: str | None,
                  methods: tuple[str, ...], expected_share: float, out: str | None, as_json: bool) -> None:
        """Scan a training set for poisoned examples with the model trained on it.

        \b
        Examples:
          sparring scan-data --model bad.pt --spec spec.json --entry-point sparring.data.models:digits_cnn \\
              --data poisoned.npz --out cleaned.npz
        """
        try:
            target = _load_target(model, spec_path, entry_point, False, "cpu")
            x, y = _load_data(model, data, 10**9, "train")
            summary = run_scan_data(target, x, y, methods=list(methods) or ["spectral", "activation-clustering"],
                                    expected_share=expected_share, out=out)
        except errors.SparringError as exc:
            _fail(exc)
        _print(summary, as_json, "scan-data")

    @group.command("scan-model", epilog=_EXIT_HELP)
    @model_opt
    @click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="InputSpec JSON for a model file.")
    @click.option("--entry-point", help="'package.module:callable' building the nn.Module for a state-dict file.")
    @npz_key_options
    @click.option("--data", "-d", type=click.Path(), help="Clean inputs (.npz, CSV, image folder). Default: the zoo "
                  "model's test split.")
    @click.option("--n", "n", type=click.IntRange(min=2), default=200, show_default=True, help="Clean inputs used.")
    @click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--fail-on-backdoor", is_flag=True, help=f"Exit with code {EXIT_GATE} if a label is flagged.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def scan_model(model: str, spec_path: str | None, entry_point: str | None, data: str | None, n: int,
                   steps: int, seed: int, fail_on_backdoor: bool, as_json: bool) -> None:
        """Scan a model for a backdoor with Neural Cleanse (anomaly index of reverse-engineered triggers > 2).

        \b
        Examples:
          sparring scan-model --model digits-cnn --steps 300
          sparring scan-model --model bad.pt --spec spec.json --entry-point sparring.data.models:digits_cnn --json
        """
        try:
            target = _load_target(model, spec_path, entry_point, False, "cpu")
            x, _ = _load_data(model, data, n, "test")
            summary = run_scan_model(target, x, steps=steps, seed=seed)
        except errors.SparringError as exc:
            _fail(exc)
        _print(summary, as_json, "scan-model")
        if fail_on_backdoor and summary["flagged"]:
            raise SystemExit(EXIT_GATE)
