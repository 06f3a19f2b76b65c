"""``sparring steal``: model extraction through a prediction API (equation solving or a Knockoff surrogate)."""

from __future__ import annotations

import json
from typing import Any

import click

from sparring.cli.options import http_options, http_settings, npz_key_options, require_url

__all__ = ["add_commands", "run_steal"]


def run_steal(method: str, target: Any, pool: Any, eval_x: Any, eval_y: Any, *, budget: int | None, strategy: str,
              labels: str, rounds: int, epochs: int, seed: int) -> tuple[dict[str, Any], Any]:
    """Steal ``target``; a JSON-ready summary (queries, fidelity, accuracy) and the stolen model as a Target."""
    from sparring.attacks.extraction import EquationSolving, KnockoffNets, accuracy, fidelity

    victim_labels = target.predict(eval_x) if eval_x is not None else None
    if method == "equation":
        eq = EquationSolving(n_queries=budget, seed=seed)(target)
        stolen = eq.as_target(target)
        summary = eq.summary()
    else:
        res = KnockoffNets(budget=budget or 1000, strategy=strategy, labels=labels, rounds=rounds,  # type: ignore[arg-type]
                           epochs=epochs, seed=seed)(target, pool, eval_x=eval_x, eval_labels=victim_labels,
                                                     eval_y=eval_y)
        stolen = res.surrogate
        summary = res.summary()
    if eval_x is not None and victim_labels is not None:
        summary["fidelity"] = fidelity(stolen, victim_labels, eval_x)
        if eval_y is not None:
            summary["accuracy"] = accuracy(stolen, eval_x, eval_y)
    return summary, stolen


def add_commands(cli: click.Group) -> None:
    from sparring.cli import _EXIT_HELP, _fail, _load_data, _load_target

    @cli.command(epilog=_EXIT_HELP)
    @click.argument("method", type=click.Choice(["knockoff", "equation"]))
    @click.option("--model", "-m", default="digits-cnn", show_default=True, help="Zoo name or model file (victim).")
    @click.option("--url", help="Steal from a prediction API at this URL instead (needs --spec, or a zoo --model "
                  "whose spec it serves).")
    @click.option("--output", type=click.Choice(["scores", "labels"]), default="scores", show_default=True,
                  help="What the --url API returns.")
    @http_options()
    @click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="InputSpec JSON for a file or URL.")
    @click.option("--entry-point", help="'package.module:callable' building the nn.Module for a state-dict file.")
    @click.option("--trust-pickle", is_flag=True, help="Allow pickle-based model files (they can run code).")
    @npz_key_options
    @click.option("--pool", type=click.Path(), help="Attacker's natural data (.npz/CSV/images; default: the zoo "
                  "model's train split).")
    @click.option("--eval-data", type=click.Path(), help="Held-out data for fidelity/accuracy (default: zoo test).")
    @click.option("--n-eval", type=click.IntRange(min=1), default=450, show_default=True)
    @click.option("--budget", type=click.IntRange(min=1), help="Victim queries (default: 1000 for knockoff, d + 1 "
                  "for equation).")
    @click.option("--strategy", type=click.Choice(["natural", "random", "active", "jacobian"]), default="natural",
                  show_default=True)
    @click.option("--labels", type=click.Choice(["soft", "hard"]), default="soft", show_default=True)
    @click.option("--rounds", type=click.IntRange(min=1), default=4, show_default=True)
    @click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--save", type=click.Path(dir_okay=False), help="Write the stolen model's state dict (.pt).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
    def steal(method: str, model: str, url: str | None, output: str, http_header: tuple[str, ...],
              timeout: float | None, input_key: str | None, output_key: str | None, scores: str | None,
              retries: int | None, spec_path: str | None, entry_point: str | None, trust_pickle: bool, pool: str | None,
              eval_data: str | None, n_eval: int, budget: int | None,
              strategy: str, labels: str, rounds: int, epochs: int, seed: int, save: str | None, as_json: bool) -> None:
        """Steal a model through its prediction API and report fidelity against the queries spent.

        \b
        Examples:
          sparring steal knockoff --model digits-cnn --budget 500 --labels hard
          sparring steal equation --model breast-cancer-logreg --json
          sparring steal knockoff --url http://127.0.0.1:8000/predict --model digits-cnn --budget 300
        """
        from sparring.errors import SparringError

        try:
            http = http_settings(http_header, timeout, input_key, output_key, scores, retries)
            require_url(http, url)
            target = _load_target(model, spec_path, entry_point, trust_pickle, "cpu", url=url, output=output,
                                  http=http)
            x_pool = None if method == "equation" else _load_data(model, pool, 10**9, "train")[0]
            x_eval, y_eval = _load_data(model, eval_data, n_eval, "test")
            summary, stolen = run_steal(method, target, x_pool, x_eval, y_eval, budget=budget, strategy=strategy,
                                        labels=labels, rounds=rounds, epochs=epochs, seed=seed)
        except SparringError as exc:
            _fail(exc)
        summary.update(model=url or model)
        if save:
            import torch

            torch.save(stolen.model.state_dict(), save)
            summary["saved"] = save
        if as_json:
            click.echo(json.dumps(summary, default=str))
            return
        click.echo(f"{method} on {url or model}: {summary['queries']} queries")
        for key in ("fidelity", "accuracy", "residual"):
            if summary.get(key) is not None:
                click.echo(f"  {key:<9} {summary[key]:.4f}")
        for row in summary.get("history", []):
            click.echo(f"  after {int(row['queries'])} queries: fidelity {row.get('fidelity', float('nan')):.3f}")
