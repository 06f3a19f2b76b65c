"""The ``sparring attack-tabular`` command: constrained feature-space evasion, with the unconstrained baseline.

Works on zoo models and on the user's own: model files (skops, with ``--trusted-type`` or ``--trust-pickle`` for
types skops flags; TorchScript; ``torch.export``; ONNX) or a prediction API (``--url``), with ``--spec``, the user's
data (``--data``: CSV with a header and a named label column, or ``.npz``) and constraints (``--constraints``),
checked strictly against the model's feature count and the CSV's column names.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from sparring.cli.options import http_options, http_settings

__all__ = ["add_commands", "run_tabular_attack"]

_ATTACKS = ("cpgd", "capgd", "search", "tree-milp")


def _constraints(model: str, path: str | None, n_features: int, columns: Sequence[str] | None) -> Any:
    from sparring.data import transactions, zoo
    from sparring.errors import ParameterError
    from sparring.targets.constraints import FeatureConstraints

    if path is not None:
        return FeatureConstraints.load(path, n_features=n_features, columns=columns)
    if model in zoo.names() and model.startswith("fraud-"):
        return transactions.transactions_constraints()
    if model in zoo.names() and model.startswith("breast-cancer"):
        return transactions.breast_cancer_constraints()
    raise ParameterError(f"no built-in constraints for {model!r}; give --constraints PATH (.json or .yaml) with one "
                         "entry per feature column (see docs/tabular.md).")


def _target(model: str, url: str | None, spec: str | None, trust_pickle: bool, trusted_types: Sequence[str],
            output: str, http: dict[str, Any]) -> Any:
    from sparring.cli import _load_target
    from sparring.cli.options import require_url

    require_url(http, url)
    if url is None:
        return _load_target(model, spec, None, trust_pickle, "cpu", trusted_types=trusted_types)
    return _load_target(model, spec, None, trust_pickle, "cpu", url=url, output=output, http=http)


def _data(model: str, data: str | None, label_column: str) -> tuple[Any, Any, list[str] | None]:
    from sparring.data import zoo
    from sparring.errors import ParameterError

    if data is None:
        if model not in zoo.names():
            raise ParameterError(f"--data is needed for a model that is not in the zoo ({model!r}): a CSV with a "
                                 "header and a label column (--label-column), or an .npz with arrays x and y.")
        ds = zoo.data(model)
        return ds.x_test, ds.y_test, None
    from sparring.data.files import load_data

    kw = {"label_column": label_column} if Path(data).suffix.lower() in (".csv", ".tsv") else {}
    x, y, _ = load_data(data, **kw)
    from sparring.data.files import csv_feature_columns

    return x, y, csv_feature_columns(data, label_column)


def _attack(name: str, constraints: Any, eps: float, steps: int, constrained: bool, seed: int) -> Any:
    from sparring.attacks.tabular import CAPGD, CPGD, CostSearch, TreeEvasion

    if name == "cpgd":
        return CPGD(constraints=constraints, eps=eps, steps=steps, constrained=constrained, seed=seed)
    if name == "capgd":
        return CAPGD(constraints=constraints, eps=eps, steps=steps, constrained=constrained, seed=seed)
    if name == "search":
        return CostSearch(constraints=constraints, constrained=constrained, seed=seed)
    return TreeEvasion(constraints=constraints)


def run_tabular_attack(attack: str, *, model: str = "fraud-mlp", url: str | None = None, spec: str | None = None,
                       data: str | None = None, label_column: str = "label", constraints: str | None = None,
                       trust_pickle: bool = False, trusted_types: Sequence[str] = (), output: str = "scores",
                       n: int = 64, attacked_class: int | None = 1, eps: float = 0.3, steps: int = 40,
                       compare: bool = True, query_budget: int | None = None, seed: int = 0,
                       http: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the command does, as one library call: attack the correctly classified rows of ``attacked_class``
    (``None``: all classes) with constraints and, if ``compare``, the unconstrained baseline; JSON-ready summary.

    ``query_budget`` is the attacker's budget for each run (the row selection before it is not charged); a run
    that exhausts it reports its unfinished rows as unknown (``n_unknown``, ``budget_exhausted``), never robust.
    ``http``: settings for ``url`` (:func:`sparring.cli.options.http_settings`: headers, timeout, keys, score kind).
    """
    from sparring.errors import ParameterError

    if attack not in _ATTACKS:
        raise ParameterError(f"unknown tabular attack {attack!r}; use one of {', '.join(_ATTACKS)}.")
    target = _target(model, url, spec, trust_pickle, trusted_types, output, http or {})
    try:
        return _run(target, attack, model=model, url=url, data=data, label_column=label_column,
                    constraints=constraints, n=n, attacked_class=attacked_class, eps=eps, steps=steps,
                    compare=compare, query_budget=query_budget, seed=seed)
    finally:
        close = getattr(target, "close", None)  # an HttpTarget holds a connection pool
        if close is not None:
            close()


def _run(target: Any, attack: str, *, model: str, url: str | None, data: str | None, label_column: str,
         constraints: str | None, n: int, attacked_class: int | None, eps: float, steps: int, compare: bool,
         query_budget: int | None, seed: int) -> dict[str, Any]:
    from sparring.errors import ParameterError
    from sparring.targets.base import QueryCounter

    x_all, y_all, columns = _data(model, data, label_column)
    c = _constraints(model, constraints, target.spec.n_features, columns)
    if attacked_class is not None and not 0 <= attacked_class < target.spec.n_classes:
        raise ParameterError(f"--class {attacked_class} is not a class of this model (0..{target.spec.n_classes - 1}"
                             "); give one of them, or -1 to attack every class.")
    keep = target.predict(x_all) == y_all
    if attacked_class is not None:
        keep &= y_all == attacked_class
    x, y = x_all[keep][:n], y_all[keep][:n]
    if len(x) == 0:
        which = "any class" if attacked_class is None else f"class {attacked_class}"
        raise ParameterError(f"no correctly classified rows of {which} to attack; check --data, --label-column and "
                             "--class.")
    out: dict[str, Any] = {"model": url or model, "attack": attack, "n": len(x), "query_budget": query_budget,
                           "results": []}
    modes = (True, False) if compare and attack != "tree-milp" else (True,)
    for constrained in modes:
        target.counter = QueryCounter(query_budget)  # each run gets the attacker's whole budget
        r = _attack(attack, c, eps, steps, constrained, seed)(target, x, y)
        checked = c.check(x, r.x_adv)
        s = r.summary()
        out["results"].append({
            "constrained": constrained, "evasion_rate": s["success_rate"], "robust_accuracy": s["robust_accuracy"],
            "n_unknown": s["n_unknown"], "budget_exhausted": s["budget_exhausted"],
            "feasible_rows": float(checked.ok.float().mean()), "median_cost": s["median_cost"],
            "median_claimed_cost": s["median_norm_of_successes"], "violations": checked.by_rule(),
            "queries": s["cost"]["queries"], "seconds": s["cost"]["seconds"],
        })
    return out


def add_commands(cli: click.Group) -> None:
    from sparring.cli import _EXIT_HELP, EXIT_BUDGET, _fail
    from sparring.errors import SparringError

    @cli.command("attack-tabular", epilog=_EXIT_HELP)
    @click.argument("attack", type=click.Choice(_ATTACKS))
    @click.option("--model", "-m", default="fraud-mlp", show_default=True,
                  help="Zoo model (fraud-mlp / fraud-gbm, breast-cancer-mlp / -logreg) or a model file: skops, "
                       "TorchScript, torch.export .pt2, ONNX (joblib/pickle only with --trust-pickle).")
    @click.option("--url", help="Attack a prediction API at this URL instead (needs --spec, or a zoo --model whose "
                  "spec it serves).")
    @click.option("--output", type=click.Choice(["scores", "labels"]), default="scores", show_default=True,
                  help="What the --url API returns.")
    @http_options()
    @click.option("--spec", "spec_path", type=click.Path(dir_okay=False),
                  help="InputSpec JSON for a model file or URL (shape, n_classes, bounds, layout 'features').")
    @click.option("--data", "-d", type=click.Path(),
                  help="Rows to attack: CSV/TSV with a header and a label column, or .npz (x, y). Default: the zoo "
                       "model's test split.")
    @click.option("--label-column", default="label", show_default=True, help="The CSV column holding the labels.")
    @click.option("--constraints", "constraints_path", type=click.Path(dir_okay=False),
                  help="Constraints file (.json/.yaml), one entry per feature column in column order; default: the "
                       "built-in spec of a zoo model's data.")
    @click.option("--trust-pickle", is_flag=True, help="Allow pickle-based model files and every type a skops file "
                  "flags (they can run code).")
    @click.option("--trusted-type", "trusted_types", multiple=True, metavar="TYPE",
                  help="A type to trust in a skops file, e.g. sklearn.tree._tree.Tree (repeat for each).")
    @click.option("--n", "n", type=click.IntRange(min=1), default=64, show_default=True, help="Rows to attack.")
    @click.option("--class", "attacked_class", type=int, default=1, show_default=True,
                  help="Attack correctly classified rows of this class (fraud = 1); -1 for every class.")
    @click.option("--eps", type=float, default=0.3, show_default=True,
                  help="CPGD budget, a fraction of each feature's range (the same for every feature).")
    @click.option("--steps", type=click.IntRange(min=1), default=40, show_default=True)
    @click.option("--no-compare", is_flag=True, help="Skip the unconstrained baseline.")
    @click.option("--query-budget", type=click.IntRange(min=0), help="Queries per run; past it a partial result "
                  "whose unfinished rows are unknown (never robust), and exit code 5.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
    def attack_tabular(attack: str, model: str, url: str | None, output: str, http_header: tuple[str, ...],
                       timeout: float | None, input_key: str | None, output_key: str | None, scores: str | None,
                       retries: int | None, spec_path: str | None,
                       data: str | None, label_column: str, constraints_path: str | None, trust_pickle: bool,
                       trusted_types: tuple[str, ...], n: int, attacked_class: int, eps: float, steps: int,
                       no_compare: bool, query_budget: int | None, seed: int, as_json: bool) -> None:
        """Evade a tabular model within its domain constraints, beside the unconstrained baseline.

        \b
        Every returned row is re-checked against the constraints; the baseline's "successes" are shown with the
        constraints they break (feasible rows, violations per rule).

        \b
        Examples:
          sparring attack-tabular search -m fraud-gbm --n 64
          sparring attack-tabular search -m gb.skops --trusted-type sklearn.tree._tree.Tree --spec spec.json \\
              --data rows.csv --label-column fraud --constraints c.json
        """
        try:
            http = http_settings(http_header, timeout, input_key, output_key, scores, retries)
            out = run_tabular_attack(attack, model=model, url=url, spec=spec_path, data=data, http=http,
                                     label_column=label_column, constraints=constraints_path,
                                     trust_pickle=trust_pickle, trusted_types=trusted_types, output=output, n=n,
                                     attacked_class=None if attacked_class < 0 else attacked_class, eps=eps,
                                     steps=steps, compare=not no_compare, query_budget=query_budget, seed=seed)
        except SparringError as exc:
            _fail(exc)
        cut = [r for r in out["results"] if r["budget_exhausted"]]
        counts = ", ".join(f"{r['n_unknown']} of {out['n']} rows unknown"
                           f" ({'constrained' if r['constrained'] else 'baseline'})" for r in cut)
        budget_msg = (f"the query budget ({query_budget}) ran out: {counts} (neither robust nor evaded; not counted "
                      "as robust). Raise --query-budget or lower --n.") if cut else ""
        if as_json:
            if budget_msg:  # the results are still the answer; the error keys say it failed, as every --json error
                out.update(error=budget_msg, type="QueryBudgetExceeded", exit_code=EXIT_BUDGET)
            click.echo(json.dumps(out, indent=1))
        else:
            click.echo(f"{attack} on {out['model']}, {out['n']} rows")
            for r in out["results"]:
                label = "constrained  " if r["constrained"] else "UNCONSTRAINED"
                cost = "-" if r["median_cost"] is None else f"{r['median_cost']:.3f}"
                if not r["constrained"] and r["median_claimed_cost"] is not None:
                    cost += f" (claimed {r['median_claimed_cost']:.3f})"
                unknown = f"  unknown {r['n_unknown']}" if r["n_unknown"] else ""
                click.echo(f"  {label} evasion {r['evasion_rate']:.1%}  robust {r['robust_accuracy']:.1%}{unknown}  "
                           f"feasible rows {r['feasible_rows']:.1%}  median cost of feasible evasions {cost}  "
                           f"({r['queries']} queries, {r['seconds']:.1f} s)")
                for rule, k in sorted(r["violations"].items(), key=lambda kv: -kv[1])[:8]:
                    click.echo(f"      violates {rule}: {k} rows")
        if budget_msg:
            click.echo(f"error (QueryBudgetExceeded): {budget_msg}", err=True)
            sys.exit(EXIT_BUDGET)
