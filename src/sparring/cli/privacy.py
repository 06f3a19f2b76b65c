"""``sparring membership`` and ``sparring invert``: privacy attacks from the command line (thin: parse, call, print)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

__all__ = ["add_commands", "membership_summary"]


def membership_summary(model: str, attack: str, data: tuple[str, str] | None, n: int, n_shadow: int, seed: int,
                       roc: str | None, target: Any) -> dict[str, Any]:
    """Evaluate one membership attack on ``target``: zoo train/test splits, or members/non-members data files."""
    import torch

    from sparring import errors
    from sparring.attacks.privacy.membership import run_membership, zoo_membership_data, zoo_trainer
    from sparring.data import zoo

    in_zoo = model in zoo.names()
    if data is not None:
        from sparring.cli.options import npz_keys
        from sparring.data.files import load_data

        xm, ym = load_data(data[0], **(npz_keys() if data[0].lower().endswith(".npz") else {}))[:2]
        xn, yn = load_data(data[1], **(npz_keys() if data[1].lower().endswith(".npz") else {}))[:2]
        xm, ym, xn, yn = xm[:n], ym[:n], xn[:n], yn[:n]
        x = torch.cat([torch.as_tensor(xm), torch.as_tensor(xn)])
        y = torch.cat([torch.as_tensor(ym), torch.as_tensor(yn)])
        member = torch.arange(len(x)) < len(xm)
    elif in_zoo:
        x, y, member = zoo_membership_data(model, n)
    else:
        raise errors.ParameterError(
            f"the training data of {model!r} is unknown: give --members and --nonmembers data files (examples "
            "known to be in and out of its training set), or use a zoo model.")
    train = None
    if attack != "loss-threshold":
        if not in_zoo:
            raise errors.ParameterError(
                f"{attack} trains shadow models with the target's recipe, known only for zoo models; got {model!r}. "
                "Use loss-threshold, or the library (sparring.attacks.privacy) with your own trainer.")
        train = zoo_trainer(model)
    res = run_membership(attack, target, x, y, member, train=train, n_shadow=n_shadow, seed=seed)
    summary = res.summary()
    summary["model"] = model
    if roc:
        from sparring.attacks.privacy.metrics import plot_roc

        plot_roc({res.attack: res}, title=f"{res.attack} on {model}").savefig(roc)
        summary["roc"] = roc
    return summary


def _print_membership(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{s['attack']} on {s['model']} ({s['members']} members, {s['n'] - s['members']} "
                        "non-members)")
    low = s["lowest_measurable_fpr"]

    def at(key: str) -> str:  # a TPR only where 10 / FPR non-members resolve it, with its 95% interval
        ci = s[f"{key}_ci"]
        return "not measurable" if s[key] is None else f"{s[key]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    for col in ("AUC", "advantage", "TPR @ 0.1% FPR", "TPR @ 1% FPR", f"TPR @ {low:.1%} FPR (lowest measurable)",
                "queries", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(f"{s['auc']:.3f}", f"{s['advantage']:.3f}", at("tpr_at_0.001_fpr"), at("tpr_at_0.01_fpr"),
                  f"{s['tpr_at_lowest_measurable_fpr']:.3f}", str(s["cost"]["queries"]), f"{s['cost']['seconds']:.1f}")
    Console().print(table)
    for note in s["notes"]:
        Console().print(f"  {note}")
    if s.get("roc"):
        Console().print(f"  ROC (log axes) written to {s['roc']}")


def add_commands(cli: click.Group) -> None:
    """Add ``membership`` and ``invert`` to the ``sparring`` command group."""
    from sparring.attacks.privacy.membership import MEMBERSHIP_ATTACKS
    from sparring.cli import _EXIT_HELP, _fail, _load_target
    from sparring.cli.options import http_options, http_settings, npz_key_options, require_url

    @cli.command(epilog=_EXIT_HELP)
    @click.argument("attack", type=click.Choice(MEMBERSHIP_ATTACKS))
    @click.option("--model", "-m", default="breast-cancer-mlp", show_default=True,
                  help="Zoo name (training data known), or a model file with --members/--nonmembers.")
    @click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="InputSpec JSON for a model file.")
    @click.option("--entry-point", help="'package.module:callable' building the nn.Module for a state-dict file.")
    @click.option("--trust-pickle", is_flag=True, help="Allow pickle-based model files (they can run code).")
    @click.option("--url", help="Attack the prediction API at this URL instead (scores; with --spec, or the zoo "
                                "--model it serves, whose training data and recipe are then known).")
    @http_options()
    @npz_key_options
    @click.option("--members", type=click.Path(), help="Data file of training-set examples (.npz, CSV, folder).")
    @click.option("--nonmembers", type=click.Path(), help="Data file of examples not in the training set.")
    @click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True,
                  help="Members and non-members evaluated (each).")
    @click.option("--n-shadow", type=click.IntRange(min=1), default=8, show_default=True,
                  help="Shadow models (shadow, lira, lira-offline).")
    @click.option("--roc", type=click.Path(dir_okay=False), help="Write the ROC curve (log axes) to this PNG.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--device", default="cpu", show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
    def membership(attack: str, model: str, spec_path: str | None, entry_point: str | None, trust_pickle: bool,
                   url: str | None, http_header: tuple[str, ...], timeout: float | None, retries: int | None,
                   input_key: str | None, output_key: str | None, scores: str | None, members: str | None,
                   nonmembers: str | None, n: int, n_shadow: int, roc: str | None, seed: int, device: str,
                   as_json: bool) -> None:
        """Membership inference: how well can an attacker tell training examples from others?

        Reports AUC, membership advantage and the TPR at 0.1% and 1% FPR (Carlini et al. 2022) where there are
        at least 10 / FPR non-members (else "not measurable"), and the TPR at the lowest measurable FPR.

        \b
        Examples:
          sparring membership loss-threshold --model breast-cancer-mlp
          sparring membership lira --model breast-cancer-mlp --n-shadow 16 --roc roc.png
          sparring membership loss-threshold --url http://127.0.0.1:8000/predict --spec spec.json \\
              --members train.npz --nonmembers held_out.npz
        """
        from sparring import errors

        try:
            http = http_settings(http_header, timeout, input_key, output_key, scores, retries)
            require_url(http, url)
            if (members is None) != (nonmembers is None):
                raise errors.ParameterError("give both --members and --nonmembers (or neither, for a zoo model).")
            data = (members, nonmembers) if members is not None and nonmembers is not None else None
            target = _load_target(model, spec_path, entry_point, trust_pickle, device, url=url, http=http)
            try:
                summary = membership_summary(model, attack, data, n, n_shadow, seed, roc, target)
            finally:
                if url is not None:
                    target.close()  # an HttpTarget holds a connection pool
            if url is not None:
                summary["model"] = url
        except errors.SparringError as exc:
            _fail(exc)
        if as_json:
            click.echo(json.dumps(summary, default=str))
        else:
            _print_membership(summary)

    @cli.command(epilog=_EXIT_HELP)
    @click.option("--model", "-m", default="digits-cnn", show_default=True, help="Zoo name or torch model file.")
    @click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="InputSpec JSON for a model file.")
    @click.option("--entry-point", help="'package.module:callable' building the nn.Module for a state-dict file.")
    @click.option("--classes", help="Comma-separated classes to reconstruct (default: all).")
    @click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True, help="Max descent steps.")
    @click.option("--lr", type=float, default=0.1, show_default=True, help="Step size (raw input units).")
    @click.option("--patience", type=click.IntRange(min=1), default=100, show_default=True)
    @click.option("--smooth", type=float, default=0.0, show_default=True, help="Denoising weight in [0, 1].")
    @click.option("--cost", type=click.Choice(["probability", "log"]), default="probability", show_default=True,
                  help="1 - p (the paper) or -log p (does not stall on deep networks).")
    @click.option("--out", "-o", type=click.Path(dir_okay=False), default="inversion.png", show_default=True,
                  help="PNG of the reconstructions.")
    @click.option("--device", default="cpu", show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
    def invert(model: str, spec_path: str | None, entry_point: str | None, classes: str | None, steps: int,
               lr: float, patience: int, smooth: float, cost: str, out: str, device: str, as_json: bool) -> None:
        """Model inversion (MI-Face, Fredrikson et al. 2015): reconstruct a representative input of each class.

        \b
        Example:
          sparring invert --model digits-cnn --classes 0,1,2 --out digits.png
        """
        from sparring import errors
        from sparring.attacks.privacy.inversion import MIFace, plot_inversions

        try:
            cls = _parse_classes(classes)
            target = _load_target(model, spec_path, entry_point, False, device)
            res = MIFace(steps=steps, lr=lr, patience=patience, smooth=smooth, cost=cost)(target, cls)
            plot_inversions(res, class_names=target.spec.class_names, layout=target.spec.layout).savefig(out)
        except errors.SparringError as exc:
            _fail(exc)
        summary = {**res.summary(), "model": model, "image": out}
        if as_json:
            click.echo(json.dumps(summary, default=str))
        else:
            for c, p, it in zip(summary["classes"], summary["confidence"], summary["iterations"], strict=True):
                click.echo(f"class {c}: confidence {p:.3f} after {it} steps")
            click.echo(f"reconstructions written to {out}")
            sys.stdout.flush()


def _parse_classes(text: str | None) -> list[int] | None:
    from sparring.errors import ParameterError

    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(f"--classes must be comma-separated integers, e.g. 0,1,2; got {text!r}.") from None
