"""``sparring universal patch|perturbation``: train one input-agnostic attack on training data, evaluate it on
held-out data, optionally save it (``.npz``) and a picture of it (``.png``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["add_commands", "run_universal"]


def run_universal(kind: str, target: Any, x_train: Any, x_test: Any, y_test: Any, *, target_class: int | None,
                  size: float, steps: int | None, eps: float, norm: str, method: str, seed: int,
                  progress: bool, region: float = 1.0,
                  scale: tuple[float, float] = (0.8, 1.2)) -> tuple[dict[str, Any], Any]:
    """Train and evaluate; return a JSON-ready summary and the result object."""
    from sparring.errors import ParameterError

    if kind == "patch":
        from sparring.attacks.universal import UniversalPatch

        if target_class is None:
            raise ParameterError("a patch is targeted: give --target-class (a class index).")
        patch = UniversalPatch(target_class, size=size, steps=steps or 500, seed=seed, region=region, scale=scale)
        result: Any = patch.fit(target, x_train, progress=progress)
        metrics = result.evaluate(target, x_test, y_test)
        params = patch.get_params()
    else:
        from sparring.attacks.universal import UniversalPerturbation

        if target_class is not None:
            raise ParameterError("a universal perturbation is untargeted: drop --target-class.")
        uap = UniversalPerturbation(eps=eps, norm=norm, method=method, seed=seed)  # type: ignore[arg-type]
        result = uap.fit(target, x_train, progress=progress)
        metrics = result.evaluate(target, x_test, y_test)
        params = uap.get_params()
    summary = {"attack": result.attack, "params": params, "metrics": metrics, "n_train": len(x_train),
               "cost": {"queries": result.cost.queries, "gradients": result.cost.gradients,
                        "seconds": round(result.cost.seconds, 3)}}
    return summary, result


def _save(result: Any, path: Path) -> list[str]:
    """Write the trained patch / perturbation to ``path`` (.npz) and a picture beside it (.png)."""
    import numpy as np
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (result.patch if hasattr(result, "patch") else result.v).detach().cpu().numpy()
    np.savez_compressed(path, **{"patch" if hasattr(result, "patch") else "v": arr})
    img = arr.transpose(1, 2, 0) if arr.ndim == 3 else arr
    if hasattr(result, "v"):  # a perturbation: centre on grey so negative values show
        img = 0.5 + img / (2 * max(float(np.abs(img).max()), 1e-12))
    fig = Figure(figsize=(2.5, 2.5), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(img.squeeze(), cmap="gray" if img.ndim == 2 or img.shape[-1] == 1 else None, vmin=0, vmax=1)
    ax.set_axis_off()
    png = path.with_suffix(".png")
    fig.savefig(png)
    return [str(path), str(png)]


def add_commands(cli: click.Group) -> None:
    from sparring import errors
    from sparring.cli import _fail, _load_data, _load_target
    from sparring.cli.options import npz_key_options

    @cli.command()
    @click.argument("kind", type=click.Choice(["patch", "perturbation"]))
    @click.option("--model", "-m", default="digits-cnn", show_default=True, help="Zoo name or model file.")
    @click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="InputSpec JSON for a model file.")
    @click.option("--entry-point", help="'package.module:callable' building the nn.Module for a state-dict file.")
    @click.option("--trust-pickle", is_flag=True, help="Allow pickle-based model files (they can run code).")
    @npz_key_options
    @click.option("--train-data", type=click.Path(), help="Training data (.npz/CSV/folder; default: the zoo model's "
                  "training split).")
    @click.option("--data", "-d", type=click.Path(), help="Held-out data (default: the zoo model's test split).")
    @click.option("--n-train", type=click.IntRange(min=1), default=1000, show_default=True)
    @click.option("--n", "n", type=click.IntRange(min=1), default=500, show_default=True, help="Held-out examples.")
    @click.option("--target-class", type=int, help="Patch: the class it should cause.")
    @click.option("--size", type=float, default=0.1, show_default=True, help="Patch: fraction of the image area.")
    @click.option("--steps", type=click.IntRange(min=1), help="Patch: optimisation steps (default 500).")
    @click.option("--region", type=float, default=1.0, show_default=True,
                  help="Patch: share of the feasible positions (around the centre) it is placed in; 0.3 = on the "
                       "object.")
    @click.option("--max-scale", type=float, default=1.2, show_default=True,
                  help="Patch: largest scale of its side (scale is drawn in [0.8, max]); 1.0 keeps the area <= --size.")
    @click.option("--eps", type=float, default=0.2, show_default=True, help="Perturbation: budget in raw units.")
    @click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
    @click.option("--method", type=click.Choice(["sgd", "deepfool"]), default="sgd", show_default=True,
                  help="Perturbation: Shafahi et al.'s SGD or Moosavi-Dezfooli et al.'s DeepFool passes.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--device", default="cpu", show_default=True)
    @click.option("--save", type=click.Path(dir_okay=False), help="Write the patch/perturbation (.npz) and a .png.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
    @click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
    def universal(kind: str, model: str, spec_path: str | None, entry_point: str | None, trust_pickle: bool,
                  train_data: str | None, data: str | None, n_train: int, n: int, target_class: int | None,
                  size: float, steps: int | None, region: float, max_scale: float, eps: float, norm: str,
                  method: str, seed: int, device: str, save: str | None, as_json: bool, no_progress: bool) -> None:
        """Train a universal adversarial PATCH or PERTURBATION on training images; evaluate it on held-out ones.

        \b
        Examples:
          sparring universal patch --model signs-cnn --target-class 5 --size 0.1 --max-scale 1.0 \\
              --region 0.3 --steps 400 --n-train 2400 --n 800 --save patch.npz
          sparring universal perturbation --model digits-cnn --eps 0.2 --json
        """
        try:
            target = _load_target(model, spec_path, entry_point, trust_pickle, device)
            x_tr, _ = _load_data(model, train_data, n_train, "train")
            x_te, y_te = _load_data(model, data, n, "test")
            summary, result = run_universal(kind, target, x_tr, x_te, y_te, target_class=target_class, size=size,
                                            steps=steps, eps=eps, norm=norm, method=method, seed=seed,
                                            progress=not (no_progress or as_json) and sys.stderr.isatty(),
                                            region=region, scale=(0.8, max_scale))
        except errors.SparringError as exc:
            _fail(exc)
        summary["model"] = model
        if save:
            summary["saved"] = _save(result, Path(save))
        if as_json:
            click.echo(json.dumps(summary, default=str))
            return
        click.echo(f"{summary['attack']} on {model}: trained on {summary['n_train']} images")
        for key, value in summary["metrics"].items():
            click.echo(f"  {key:24s} {value:.3f}" if isinstance(value, float) else f"  {key:24s} {value}")
        cost = summary["cost"]
        click.echo(f"  gradients {cost['gradients']}, {cost['seconds']:.1f} s")
        if save:
            click.echo(f"  saved: {', '.join(summary['saved'])}")
