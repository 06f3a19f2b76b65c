"""The ``sparring attack-tabular`` command: constrained feature-space evasion, with the unconstrained baseline."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["add_commands", "run_tabular_attack"]

_ATTACKS = ("cpgd", "capgd", "search", "tree-milp")


def _constraints(model: str, path: str | None) -> Any:
    from sparring.data import transactions
    from sparring.errors import ParameterError
    from sparring.targets.constraints import FeatureConstraints

    if path is not None:
        return FeatureConstraints.load(path)
    if model.startswith("fraud-"):
        return transactions.transactions_constraints()
    if model.startswith("breast-cancer"):
        return transactions.breast_cancer_constraints()
    raise ParameterError(f"no built-in constraints for {model!r}; give --constraints PATH (.json or .yaml).")


def _attack(name: str, constraints: Any, eps: float, steps: int, constrained: bool, seed: int) -> Any:
    from sparring.attacks.tabular import CAPGD, CPGD, CostSearch, TreeEvasion

    if name == "cpgd":
        return CPGD(constraints=constraints, eps=eps, steps=steps, constrained=constrained, seed=seed)
    if name == "capgd":
        return CAPGD(constraints=constraints, eps=eps, steps=steps, constrained=constrained, seed=seed)
    if name == "search":
        return CostSearch(constraints=constraints, constrained=constrained, seed=seed)
    return TreeEvasion(constraints=constraints)


def run_tabular_attack(attack: str, *, model: str = "fraud-mlp", constraints: str | None = None, n: int = 64,
                       attacked_class: int | None = 1, eps: float = 0.3, steps: int = 40, compare: bool = True,
                       seed: int = 0) -> dict[str, Any]:
    """What the command does, as one library call: attack the correctly classified rows of ``attacked_class``
    (``None``: all classes) with constraints and, if ``compare``, the unconstrained baseline; JSON-ready summary."""
    from sparring.data import zoo
    from sparring.errors import ParameterError

    if attack not in _ATTACKS:
        raise ParameterError(f"unknown tabular attack {attack!r}; use one of {', '.join(_ATTACKS)}.")
    c = _constraints(model, constraints)
    target = zoo.load(model)
    ds = zoo.data(model)
    keep = target.predict(ds.x_test) == ds.y_test
    if attacked_class is not None:
        keep &= ds.y_test == attacked_class
    x, y = ds.x_test[keep][:n], ds.y_test[keep][:n]
    if len(x) == 0:
        raise ParameterError(f"no correctly classified test rows of class {attacked_class} to attack.")
    out: dict[str, Any] = {"model": model, "attack": attack, "n": len(x), "results": []}
    modes = (True, False) if compare and attack != "tree-milp" else (True,)
    for constrained in modes:
        r = _attack(attack, c, eps, steps, constrained, seed)(target, x, y)
        checked = c.check(x, r.x_adv)
        s = r.summary()
        out["results"].append({
            "constrained": constrained, "evasion_rate": s["success_rate"],
            "feasible_rows": float(checked.ok.float().mean()), "median_cost": s["median_cost"],
            "median_claimed_cost": s["median_norm_of_successes"], "violations": checked.by_rule(),
            "queries": s["cost"]["queries"], "seconds": s["cost"]["seconds"],
        })
    return out


def add_commands(cli: click.Group) -> None:
    from sparring.cli import _EXIT_HELP, _fail
    from sparring.errors import SparringError

    @cli.command("attack-tabular", epilog=_EXIT_HELP)
    @click.argument("attack", type=click.Choice(_ATTACKS))
    @click.option("--model", "-m", default="fraud-mlp", show_default=True,
                  help="Zoo model: fraud-mlp / fraud-gbm (transactions), breast-cancer-mlp / -logreg.")
    @click.option("--constraints", "constraints_path", type=click.Path(dir_okay=False),
                  help="Constraints file (.json/.yaml); default: the built-in spec of the zoo model's data.")
    @click.option("--n", "n", type=click.IntRange(min=1), default=64, show_default=True, help="Rows to attack.")
    @click.option("--class", "attacked_class", type=int, default=1, show_default=True,
                  help="Attack correctly classified rows of this class (fraud = 1); -1 for every class.")
    @click.option("--eps", type=float, default=0.3, show_default=True, help="CPGD budget, fraction of each range.")
    @click.option("--steps", type=click.IntRange(min=1), default=40, show_default=True)
    @click.option("--no-compare", is_flag=True, help="Skip the unconstrained baseline.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
    def attack_tabular(attack: str, model: str, constraints_path: str | None, n: int, attacked_class: int,
                       eps: float, steps: int, no_compare: bool, seed: int, as_json: bool) -> None:
        """Evade a tabular model within its domain constraints, beside the unconstrained baseline.

        \b
        Every returned row is re-checked against the constraints; the baseline's "successes" are shown with the
        constraints they break (feasible rows, violations per rule).
        """
        try:
            out = run_tabular_attack(attack, model=model, constraints=constraints_path, n=n,
                                     attacked_class=None if attacked_class < 0 else attacked_class, eps=eps,
                                     steps=steps, compare=not no_compare, seed=seed)
        except SparringError as exc:
            _fail(exc)
        if as_json:
            click.echo(json.dumps(out, indent=1))
            return
        click.echo(f"{attack} on {model}, {out['n']} rows")
        for r in out["results"]:
            label = "constrained  " if r["constrained"] else "UNCONSTRAINED"
            cost = "-" if r["median_cost"] is None else f"{r['median_cost']:.3f}"
            if not r["constrained"] and r["median_claimed_cost"] is not None:
                cost += f" (claimed {r['median_claimed_cost']:.3f})"
            click.echo(f"  {label} evasion {r['evasion_rate']:.1%}  feasible rows {r['feasible_rows']:.1%}  "
                       f"median cost of feasible evasions {cost}  ({r['queries']} queries, {r['seconds']:.1f} s)")
            for rule, k in sorted(r["violations"].items(), key=lambda kv: -kv[1])[:8]:
                click.echo(f"      violates {rule}: {k} rows")
