"""``sparring train``: robust training of a zoo architecture on its data, or of a user's model on a data file.

Thin: :func:`run_train` is one call to :func:`~sparring.defenses.training.adversarial_train` (PGD-AT, TRADES, fast
FGSM) or :func:`~sparring.defenses.training.train_with_noise` (Gaussian noise augmentation), then writes the weights
(a state dict) and the input spec, so the result loads with ``sparring attack --model OUT --spec OUT.spec.json
--entry-point ...``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["METHODS", "add_commands", "run_train"]

METHODS = ("pgd", "trades", "fast-fgsm", "noise")


def _spec_path(out: Path) -> Path:
    return out.with_name(out.name + ".spec.json") if out.suffix == "" else out.with_suffix(".spec.json")


def _model_and_data(model: str, spec_path: str | None, entry_point: str | None, data: str | None,
                    eval_n: int, reinit: bool) -> tuple[Any, Any, Any, str | None]:
    """The target to train, its training data, its evaluation data, and the entry point to load it again."""
    from sparring.cli import _load_data, _load_target
    from sparring.data import zoo
    from sparring.errors import ParameterError
    from sparring.targets.torch import TorchTarget

    if model in zoo.names() and entry_point is None:
        e = zoo.entry(model)
        if e.kind != "torch":
            torch_names = [n for n in zoo.names() if zoo.entry(n).kind == "torch"]
            raise ParameterError(f"train needs a torch model; zoo model {model!r} is {e.kind}. Choose one of: "
                                 f"{', '.join(torch_names)}.")
        if data is not None:
            raise ParameterError(f"zoo model {model!r} trains on its own data; drop --data, or train a model file "
                                 "(--model weights.pt --entry-point ... --spec ...) on your data.")
        ds = zoo.data(model)
        ep = getattr(e.build, "__module__", "") + ":" + getattr(e.build, "__name__", "")
        return TorchTarget(e.build(), e.spec()), (ds.x_train, ds.y_train), (ds.x_test[:eval_n], ds.y_test[:eval_n]), ep
    if data is None:
        raise ParameterError(f"--data is needed to train {model!r} (not a zoo model): an .npz with x and y, a CSV "
                             "with a label column, or an image folder.")
    target = _load_target(model, spec_path, entry_point, False, "cpu")
    if not isinstance(target, TorchTarget):
        raise ParameterError(f"train needs a torch model (a state dict with --entry-point); {model!r} loads as "
                             f"{type(target).__name__}.")
    if reinit:
        from sparring._util import reinit_parameters

        reinit_parameters(target.model, 0)
    x, y = _load_data(model, data, 10**9, "train")
    return target, (x, y), None, entry_point


def run_train(
    model: str, *, method: str, epochs: int, eps: float, beta: float, steps: int, lr: float, schedule: str,
    batch_size: int, sigma: float, seed: int, out: str, resume: bool, checkpoint_dir: str | None,
    spec_path: str | None = None, entry_point: str | None = None, data: str | None = None, reinit: bool = False,
    eval_n: int = 128, progress: bool = False,
) -> dict[str, Any]:
    """Train ``model`` with ``method`` and save it to ``out``; a JSON-ready summary (history, final accuracies).

    Zoo names train a fresh copy of the zoo architecture on its training split (evaluated on ``eval_n`` test
    points); a model file (with ``entry_point`` and ``spec_path``) trains on ``data``, from its own weights unless
    ``reinit``. Adversarial methods write per-epoch checkpoints to ``checkpoint_dir`` (default ``OUT.ckpt/``) and
    ``resume`` continues from the newest one.
    """
    import torch

    from sparring.errors import ParameterError

    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    if method == "noise" and resume:
        raise ParameterError("noise training has no checkpoints to resume from; drop --resume (it takes seconds).")
    target, train_data, eval_data, ep = _model_and_data(model, spec_path, entry_point, data, eval_n, reinit)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = Path(checkpoint_dir) if checkpoint_dir else out_path.with_name(out_path.name + ".ckpt")
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"model": model, "method": method, "out": str(out_path)}
    if method == "noise":
        from sparring.defenses.training.noise import train_with_noise
        from sparring.targets.torch import TorchTarget as _TT

        if not reinit and model not in _zoo_names():
            raise ParameterError("noise training starts from fresh weights; add --reinit to retrain the model file.")
        train_with_noise(target.model, _as_dataset(train_data, target.spec), target.spec, sigma=sigma,
                         epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=progress)
        target = _TT(target.model, target.spec)
        summary["params"] = {"sigma": sigma, "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    else:
        from sparring.defenses.training.adversarial import adversarial_train

        hist = adversarial_train(target, train_data, method=method, eps=eps, steps=steps, beta=beta, epochs=epochs,
                                 lr=lr, schedule=schedule, batch_size=batch_size, seed=seed,
                                 reinit=model in _zoo_names() or reinit, checkpoint_dir=ckpt, resume=resume,
                                 progress=progress, eval_data=eval_data)
        summary.update(params=hist.params, history=hist.to_dict()["epochs"], resumed_from=hist.resumed_from,
                       checkpoints=str(ckpt))
    if eval_data is not None:
        summary["clean_accuracy"] = float(target.accuracy(*eval_data))
        summary["n_eval"] = len(eval_data[1])
    torch.save(target.model.state_dict(), out_path)
    spec_out = _spec_path(out_path)
    spec_out.write_text(json.dumps(target.spec.to_dict()))
    summary.update(spec=str(spec_out), entry_point=ep, seconds=round(time.perf_counter() - t0, 3))
    return summary


def _zoo_names() -> list[str]:
    from sparring.data import zoo

    return zoo.names()


def _as_dataset(xy: tuple[Any, Any], spec: Any) -> Any:
    """A minimal Dataset around ``(x, y)`` for :func:`train_with_noise` (which reads ``x_train``/``y_train``)."""
    from sparring.data.datasets import Dataset

    x, y = spec.validate(*xy)
    return Dataset(name="train", x_train=x, y_train=y, x_test=x[:1], y_test=y[:1], spec=spec)


def add_commands(cli: Any) -> None:
    import click

    from sparring import errors
    from sparring.cli import _EXIT_HELP, _fail
    from sparring.cli.options import npz_key_options

    group: click.Group = cli

    @group.command(epilog=_EXIT_HELP)
    @click.option("--model", "-m", default="digits-cnn", show_default=True,
                  help="Zoo name (its architecture and data), or a state-dict file (+ --entry-point, --spec, --data).")
    @click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="InputSpec JSON for a model file.")
    @click.option("--entry-point", help="'package.module:callable' building the nn.Module of a state-dict file.")
    @npz_key_options
    @click.option("--data", "-d", type=click.Path(), help="Training data for a model file (.npz x, y; CSV; folder).")
    @click.option("--method", type=click.Choice(METHODS), default="pgd", show_default=True)
    @click.option("--epochs", type=click.IntRange(min=1), default=6, show_default=True)
    @click.option("--eps", type=float, default=0.1, show_default=True, help="Training radius (raw input units).")
    @click.option("--beta", type=float, default=6.0, show_default=True, help="TRADES weight of the KL term.")
    @click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True, help="Inner PGD steps.")
    @click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate (peak if cyclic).")
    @click.option("--schedule", type=click.Choice(["cyclic", "constant"]), default="cyclic", show_default=True)
    @click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
    @click.option("--sigma", type=float, default=0.25, show_default=True, help="Noise std for --method noise.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--reinit", is_flag=True, help="Start a model file from fresh weights instead of its own.")
    @click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="Where to write the weights.")
    @click.option("--checkpoint-dir", type=click.Path(file_okay=False),
                  help="Per-epoch checkpoints (default OUT.ckpt).")
    @click.option("--resume", is_flag=True, help="Continue from the newest checkpoint of the same run.")
    @click.option("--eval-n", type=click.IntRange(min=1), default=128, show_default=True,
                  help="Zoo test points for per-epoch clean and PGD accuracy.")
    @click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def train(model: str, spec_path: str | None, entry_point: str | None, data: str | None, method: str,
              epochs: int, eps: float, beta: float, steps: int, lr: float, schedule: str, batch_size: int,
              sigma: float, seed: int, reinit: bool, out: str, checkpoint_dir: str | None, resume: bool, eval_n: int,
              progress: bool, as_json: bool) -> None:
        """Robust training: PGD-AT, TRADES, fast FGSM or Gaussian noise, with checkpoints and resume.

        \b
        Examples:
          sparring train --model digits-cnn --method trades --beta 3 --epochs 6 --out trades.pt
          sparring train --method pgd --out pgd.pt --resume          # continue after a kill
          sparring train --model w.pt --entry-point pkg.nets:build --spec spec.json --data d.npz --out robust.pt
        """
        try:
            summary = run_train(model, method=method, epochs=epochs, eps=eps, beta=beta, steps=steps, lr=lr,
                                schedule=schedule, batch_size=batch_size, sigma=sigma, seed=seed, out=out,
                                resume=resume, checkpoint_dir=checkpoint_dir, spec_path=spec_path,
                                entry_point=entry_point, data=data, reinit=reinit, eval_n=eval_n, progress=progress)
        except errors.SparringError as exc:
            _fail(exc)
        if as_json:
            click.echo(json.dumps(summary, default=str))
            return
        for e in summary.get("history", []):
            acc = "" if e["clean_accuracy"] is None else (f"  clean {e['clean_accuracy']:.3f}  "
                                                           f"PGD {e['robust_accuracy']:.3f}")
            click.echo(f"epoch {e['epoch']:3d}  loss {e['loss']:.4f}{acc}  ({e['seconds']:.1f}s)")
        click.echo(f"wrote {summary['out']} and {summary['spec']} ({summary['seconds']:.1f}s)")
        if summary.get("entry_point"):
            click.echo(f"attack it: sparring attack pgd --model {summary['out']} --spec {summary['spec']} "
                       f"--entry-point {summary['entry_point']}")
