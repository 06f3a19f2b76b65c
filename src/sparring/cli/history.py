"""``sparring history``: the audits recorded with ``sparring audit --history``, their gates and trend."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

_F = TypeVar("_F", bound=Callable[..., Any])

__all__ = ["HISTORY_ENV", "add_commands", "history_option"]

HISTORY_ENV = "SPARRING_HISTORY"
"""The environment variable that names the history store when ``--history`` is not given (e.g. set once in CI)."""


def history_option(help_text: str) -> Callable[[_F], _F]:
    """The ``--history URL`` option (from :data:`HISTORY_ENV` when not given)."""
    return click.option("--history", "history", envvar=HISTORY_ENV, show_envvar=True, metavar="URL", help=help_text)


def _fmt(v: float | None, sign: bool = False) -> str:
    return "-" if v is None else (f"{v:+.4f}" if sign else f"{v:.4f}")


def add_commands(cli: click.Group) -> None:
    """Add ``history`` to the ``sparring`` command group."""
    from sparring.cli import _EXIT_HELP, _fail

    @cli.command(epilog=_EXIT_HELP)
    @history_option("The audit history: an SQLite file (sqlite:///audits.db or a path) or a PostgreSQL URL "
                    "(postgresql://user@host:5432/db).  [default: sqlite:///sparring-history.db]")
    @click.option("--model", "-m", help="Only runs of this system.model (as written in the threat model).")
    @click.option("--name", help="Only runs of this threat-model name.")
    @click.option("--limit", type=click.IntRange(min=1), help="Only the latest N runs.")
    @click.option("--plot", type=click.Path(dir_okay=False), help="Draw each gate's value over the runs into this "
                  ".png or .svg file.")
    @click.option("--metric", "metrics", multiple=True, help="With --plot: only gates of this metric, e.g. "
                  "robust_accuracy (repeatable).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object: {store, runs: [...]}.")
    def history(history: str | None, model: str | None, name: str | None, limit: int | None, plot: str | None,
                metrics: tuple[str, ...], as_json: bool) -> None:
        """List recorded audits: verdict, every gate's value, its change since the previous run of the same
        model and its delta against that audit's --baseline.

        Record runs with `sparring audit threat.yaml --history URL` (or set SPARRING_HISTORY).

        \b
        Examples:
          sparring history --history sqlite:///audits.db
          sparring history --model digits-cnn --plot trend.svg --metric robust_accuracy
          sparring history --history postgresql://ci@db:5432/sparring --json
        """
        from sparring.audit.history import open_history, plot_trend
        from sparring.errors import SparringError

        url = history or "sqlite:///sparring-history.db"
        try:
            with open_history(url, create=False) as store:
                runs = store.runs(model=model, name=name, limit=limit)
                store_url = store.url
            plotted = None
            if plot:
                plotted = str(plot_trend(runs, plot, metrics=metrics or None))
        except SparringError as exc:
            _fail(exc)
        if as_json:
            click.echo(json.dumps({"store": store_url, "runs": [r.to_dict() for r in runs], "plot": plotted},
                                  default=str))
            return
        if not runs:
            click.echo(f"no recorded audits in {store_url}" + (" matching the filter" if model or name else ""))
            return
        _print(runs, store_url)
        if plotted:
            click.echo(f"wrote {plotted}")


def _print(runs: list[Any], store_url: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"audit history ({store_url})")
    for col in ("run", "recorded (UTC)", "model", "verdict", "gate", "value", "change", "vs baseline", "result"):
        table.add_column(col, justify="right" if col in ("value", "change", "vs baseline") else "left")
    for run in runs:
        first = True
        for g in run.gates or [{"gate": "(no gates)", "value": None, "change": None, "baseline_delta": None,
                                "status": ""}]:
            head = [str(run.id), run.recorded_at.replace("T", " ")[:19], run.model, run.verdict] if first else [""] * 4
            table.add_row(*head, g["gate"], _fmt(g.get("value")), _fmt(g.get("change"), True),
                          _fmt(g.get("baseline_delta"), True), g.get("status", ""))
            first = False
    Console(width=160).print(table)
