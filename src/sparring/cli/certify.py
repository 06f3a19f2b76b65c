"""``sparring certify``: the command's body (cli.py only declares its options)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["parse_floats", "print_certify", "run_certify"]


def parse_floats(text: str, name: str) -> list[float]:
    """``"0,0.25,0.5"`` -> ``[0.0, 0.25, 0.5]``; a ParameterError naming the option otherwise."""
    from sparring.errors import ParameterError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(f"{name} must be comma-separated numbers, e.g. 0,0.25,0.5; got {text!r}.") from None
    if not values or any(v < 0 or v != v for v in values):
        raise ParameterError(f"{name} must list numbers >= 0, e.g. 0,0.25,0.5; got {text!r}.")
    return sorted(set(values))


def run_certify(method: str, target: Any, x: Any, y: Any, *, sigma: float, n0: int, n_samples: int, alpha: float,
                radii: str, eps: str, bound: str, seed: int, progress: bool) -> dict[str, Any]:
    """Certify ``x`` on ``target`` with randomized smoothing (L2) or bound propagation (L∞); a JSON-ready summary."""
    import torch

    if method == "smoothing":
        from sparring.defenses.certify.smoothing import SmoothedClassifier

        rs = parse_floats(radii, "--radii")
        res = SmoothedClassifier(target, sigma, seed=seed).certify(x, y, n0=n0, n=n_samples, alpha=alpha,
                                                                    progress=progress)
        out = res.summary()
        out["certified_accuracy"] = {f"{r:g}": a for r, a in res.curve(rs)}
        out["norm"] = "l2"
        return out
    from sparring.defenses.certify.verify import verify

    rows = {}
    seconds = 0.0
    clean = None
    for e in parse_floats(eps, "--eps"):
        v = verify(target, x, y, e, method=bound)  # type: ignore[arg-type]
        rows[f"{e:g}"] = v.verified_accuracy
        seconds += v.seconds
        clean = v.clean_accuracy
    n = int(torch.as_tensor(y).shape[0])
    return {"defense": "bound-propagation", "norm": "linf", "params": {"method": bound}, "n": n,
            "clean_accuracy": clean, "certified_accuracy": rows, "cost": {"seconds": round(seconds, 4)}}


def print_certify(summary: dict[str, Any], as_json: bool, model: str) -> None:
    if as_json:
        print(json.dumps({**summary, "model": model}, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    key = "radius (L2)" if summary["norm"] == "l2" else "eps (L∞)"
    table = Table(title=f"{summary['defense']} on {model} ({summary['n']} examples)")
    table.add_column(key, justify="right")
    table.add_column("certified accuracy", justify="right")
    for r, a in summary["certified_accuracy"].items():
        table.add_row(r, f"{a:.3f}")
    Console().print(table)
    keys = ("smoothed_accuracy", "clean_accuracy", "abstain_rate")
    extra = {k: summary[k] for k in keys if summary.get(k) is not None}
    Console().print("  " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in extra.items()))
