"""Adversarial training: PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019), fast FGSM-AT (Wong et al. 2020).

All three train the model inside a :class:`~sparring.targets.TorchTarget` on points found by an inner attack in an
``eps``-ball around each training example. Budgets are in raw input space: the training forward is the target's
own (``spec.mean``/``spec.std`` are applied inside), so the model is trained exactly as it is later attacked.
The zoo's ``digits-cnn-pgdat`` and ``digits-cnn-trades`` are trained with :func:`adversarial_train`.

The inner maximisation and objectives are in :mod:`.objectives`, the history and checkpoints in :mod:`.checkpoints`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sparring._progress import progress_bar
from sparring._util import as_xy, reinit_parameters
from sparring.attacks.evasion._checks import check_eps, check_positive_int
from sparring.attacks.evasion.pgd import PGD
from sparring.attacks.norms import Norm
from sparring.data.cache import save_state
from sparring.defenses.training.checkpoints import (
    FORMAT,
    FORMAT_VERSION,
    EpochStats,
    TrainHistory,
    checkpoint_path,
    data_fingerprint,
    latest_checkpoint,
)
from sparring.defenses.training.objectives import FAST_STEP, check_number, cyclic_lr, inner_attack, objective
from sparring.errors import ParameterError
from sparring.targets.spec import InputSpec
from sparring.targets.torch import TorchTarget

__all__ = ["METHODS", "SCHEDULES", "EpochStats", "TrainHistory", "adversarial_train"]

METHODS = ("pgd", "trades", "fast-fgsm")
SCHEDULES = ("constant", "cyclic")


def adversarial_train(
    target: TorchTarget,
    data: Any,
    *,
    eps: float,
    method: str = "pgd",
    norm: str | Norm = "linf",
    steps: int = 10,
    alpha: float | None = None,
    beta: float = 6.0,
    epochs: int = 10,
    lr: float = 1e-3,
    schedule: str = "constant",
    batch_size: int = 64,
    seed: int = 0,
    reinit: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = False,
    eval_data: Any = None,
    eval_steps: int = 10,
    callback: Callable[[EpochStats], None] | None = None,
) -> TrainHistory:
    r"""Train the model inside ``target`` to resist ``eps``-bounded perturbations (raw input space).

    Methods (threat model: white-box, untargeted, L∞ or L2 ball of radius ``eps``):

    - ``"pgd"`` — Madry, Makelov, Schmidt, Tsipras, Vladu (2018), "Towards Deep Learning Models Resistant to
      Adversarial Attacks", eq. 2.1: minimise :math:`\mathbb{E}\,\max_{\|\delta\|\le\epsilon} \ell(f(x+\delta), y)`;
      the inner max is PGD with ``steps`` steps of size ``alpha`` (default ``2.5·eps/steps``) from a uniform random
      start, and the model is trained on the last iterate only.
    - ``"trades"`` — Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan (2019), "Theoretically Principled Trade-off between
      Robustness and Accuracy", eq. 5 / Alg. 1: minimise
      :math:`\ell(f(x), y) + \beta\,\mathrm{KL}(f(x)\,\|\,f(x'))` where :math:`x'` maximises the KL term by PGD
      from :math:`x + 0.001\,\mathcal N(0, I)`; ``beta`` (default 6) trades accuracy for robustness.
    - ``"fast-fgsm"`` — Wong, Rice, Kolter (2020), "Fast is better than free: Revisiting adversarial training",
      Alg. 3: one FGSM step of size ``alpha`` (default ``1.25·eps``) from a uniform random start in the L∞ ball,
      then cross-entropy on that point. ``steps`` is ignored (always one step).

    Every iterate is projected onto the ball (:func:`~sparring.attacks.norms.project`) and clipped to
    ``spec.bounds``. The inner maximisation runs with the weights frozen and the model in **eval mode** (as in the
    TRADES reference code): batch-norm statistics are not moved by the search batches and dropout does not make the
    attack noisy; the update's forward pass runs in train mode. It never stops early: broken points keep climbing
    the loss, as in the papers. The optimiser is Adam for all three methods (the papers use SGD; Adam needs no
    tuning on the small models sparring ships), with a constant learning rate or, with ``schedule="cyclic"``, the
    one-cycle schedule of Wong et al. (2020, sec. 5.1): per batch, linear from 0 up to ``lr`` at 40% of the
    epochs, then linear down to 0 at the end — the schedule that lets fast training converge in few epochs.

    Determinism: ``seed`` fixes the initial weights (with ``reinit``), the order of the examples, the random starts
    and any dropout (run inside ``torch.random.fork_rng`` with a seed drawn from the run's generator), all from
    private ``torch.Generator``\ s — the global RNG state is left untouched. Two runs with the same arguments on the
    same machine give identical weights.

    Checkpoints: with ``checkpoint_dir``, after every epoch the model, the optimiser, the generators' states and the
    history are written atomically (with a sha256 sidecar) to ``checkpoint_dir/epoch-NNNN.pt``. With ``resume``
    a later call continues from the newest checkpoint with ``epoch <= epochs`` and ends with exactly the weights of
    an uninterrupted run; a checkpoint from a run with other parameters or data raises
    :class:`~sparring.errors.CheckpointError`. With the constant schedule ``epochs`` may grow between calls (train 5
    epochs, then resume to 10); the cyclic schedule depends on ``epochs``, so it must stay the same.

    Args:
        target: the model to train (a :class:`~sparring.targets.TorchTarget`); trained in place, on its device,
            and left in eval mode.
        data: training data: ``(x, y)``, a :class:`~sparring.data.Dataset` (its training split), ``LabelledData`` or
            a torch ``DataLoader`` of ``(x, y)`` batches (read once; batching and shuffling then follow ``batch_size``
            and ``seed``), in raw space within ``target.spec.bounds``. Held in memory (on the model's device) for
            the whole run.
        eps: radius of the training ball in raw input units (e.g. ``0.1`` or ``8/255`` for 0-1 pixels).
        method: ``"pgd"``, ``"trades"`` or ``"fast-fgsm"``.
        norm: ``"linf"`` or ``"l2"`` (``"fast-fgsm"``: L∞ only).
        steps: inner PGD steps (``"pgd"`` and ``"trades"``).
        alpha: inner step size in raw units; default ``2.5·eps/steps`` (``1.25·eps`` for ``"fast-fgsm"``).
        beta: TRADES weight of the KL term.
        epochs: total number of passes over the training data (counting epochs done before a resume).
        lr: Adam learning rate (the peak of the cyclic schedule).
        schedule: ``"constant"`` or ``"cyclic"`` (one cycle over all epochs).
        batch_size: examples per update.
        seed: seed of initialisation, data order and attack randomness.
        reinit: re-initialise the weights from ``seed`` before the first epoch (ignored when resuming).
        checkpoint_dir: folder for per-epoch checkpoints; ``None`` for none.
        resume: continue from the newest checkpoint in ``checkpoint_dir``.
        progress: draw a progress bar over epochs.
        eval_data: ``(x, y)``, a Dataset (its test split) or LabelledData to measure clean and PGD accuracy on after
            every epoch; keep it small (e.g. 128 points).
        eval_steps: PGD steps of that evaluation.
        callback: called with each epoch's :class:`EpochStats` after its checkpoint is written.

    Returns:
        The :class:`TrainHistory` (one entry per epoch, earlier ones read back from the checkpoint on resume).

    Example:
        >>> from sparring import PGD, load_digits
        >>> from sparring.targets import TorchTarget
        >>> from torch import nn
        >>> ds = load_digits(8)  # 8×8 digits in [0, 1]
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> target = TorchTarget(net, ds.spec)
        >>> history = adversarial_train(target, ds, method="trades", eps=0.2, steps=5, epochs=3, lr=3e-3,
        ...                             eval_data=(ds.x_test[:128], ds.y_test[:128]))
        >>> [e.epoch for e in history.epochs]
        [1, 2, 3]
        >>> PGD(eps=0.2, steps=20)(target, ds.x_test[:128], ds.y_test[:128]).robust_accuracy > 0.2
        True
    """
    if not isinstance(target, TorchTarget):
        raise ParameterError(f"adversarial_train needs a TorchTarget (a white-box torch model); got "
                             f"{type(target).__name__}.")
    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    nrm = Norm.parse(norm)
    if method == "fast-fgsm" and nrm is not Norm.LINF:
        raise ParameterError("fast-fgsm is an L∞ method (sign steps); use norm='linf', or method='pgd' for L2.")
    spec: InputSpec = target.spec
    e = check_eps(eps, nrm, spec)
    n_steps = 1 if method == "fast-fgsm" else check_positive_int(steps, "steps")
    if alpha is None:
        step = FAST_STEP * e if method == "fast-fgsm" else 2.5 * e / n_steps
    else:
        step = check_number(alpha, "alpha (inner step size)", low=0.0, strict=True)
    b = check_number(beta, "beta (TRADES weight of the KL term)", low=0.0, strict=False)
    check_positive_int(epochs, "epochs")
    rate = check_number(lr, "lr", low=0.0, strict=True)
    if schedule not in SCHEDULES:
        raise ParameterError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}.")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(eval_steps, "eval_steps")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"seed must be an integer >= 0; got {seed!r}.")
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, str | os.PathLike):
        raise ParameterError(f"checkpoint_dir must be a folder path or None; got {type(checkpoint_dir).__name__}.")
    if callback is not None and not callable(callback):
        raise ParameterError(f"callback must be callable (it receives EpochStats); got {type(callback).__name__}.")
    x_raw, y_raw = as_xy(data, "train", "data")
    x_all, y_all = spec.validate(x_raw, y_raw)
    assert y_all is not None
    x_eval = y_eval = None
    if eval_data is not None:
        x_eval, y_eval = spec.validate(*as_xy(eval_data, "test", "eval_data"))

    model, dev, dtype = target.model, target.device, target.dtype
    params: dict[str, Any] = {"method": method, "eps": e, "norm": nrm.value, "steps": n_steps, "alpha": step,
                              "beta": b, "lr": rate, "schedule": schedule, "batch_size": batch_size, "seed": seed,
                              "reinit": reinit}
    run_key = {**params, "data": data_fingerprint(x_all, y_all)}
    if schedule == "cyclic":
        run_key["epochs"] = epochs
    x_all, y_all = x_all.to(dev, dtype), y_all.to(dev)
    low, high = spec.bounds_tensors(dev, dtype)
    fwd = target._raw_forward()  # raw x -> logits, the target's own normalisation, no query counting
    cuda = [dev.index or 0] if dev.type == "cuda" else []

    def attack(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return inner_attack(fwd, xb, yb, method=method, norm=nrm, eps=e, alpha=step, steps=n_steps, low=low,
                             high=high, gen=noise_gen)

    order_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=rate)
    history = TrainHistory(method=method, params=params)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    state = latest_checkpoint(ckpt_dir, run_key, epochs) if ckpt_dir is not None and resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        order_gen.set_state(state["order_gen"])
        noise_gen.set_state(state["noise_gen"])
        history = TrainHistory.from_dict(state["history"])
        history.resumed_from = int(state["epoch"])
    elif reinit:
        reinit_parameters(model, seed)
    start = len(history.epochs)

    n = x_all.shape[0]
    n_batches = -(-n // batch_size)
    for epoch in progress_bar(range(start + 1, epochs + 1), total=epochs - start,
                              description=f"{method} adversarial training", enabled=progress):
        t0 = time.perf_counter()
        epoch_seed = int(torch.randint(0, 2**62, (1,), generator=order_gen))
        perm = torch.randperm(n, generator=order_gen).to(dev)
        loss_sum = torch.zeros((), device=dev, dtype=dtype)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(epoch_seed)  # only dropout-like layers draw from it; restored on exit
            for i, s in enumerate(range(0, n, batch_size)):
                if schedule == "cyclic":
                    for group in opt.param_groups:
                        group["lr"] = cyclic_lr(rate, epoch - 1 + (i + 1) / n_batches, epochs)
                xb, yb = x_all[perm[s : s + batch_size]], y_all[perm[s : s + batch_size]]
                with target.frozen():
                    xa = attack(xb, yb)
                model.train()
                loss, z_adv = objective(fwd, method, b, xb, xa, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                with torch.no_grad():
                    loss_sum += loss.detach() * xb.shape[0]
                    correct += (z_adv.argmax(dim=1) == yb).sum()
        opt.zero_grad(set_to_none=True)
        model.eval()
        clean_acc = robust_acc = None
        if x_eval is not None and y_eval is not None:
            evaluator = TorchTarget(model, spec, batch_size=target.batch_size)  # its own counter, not the user's
            res = PGD(eps=e, norm=nrm, steps=eval_steps, seed=seed)(evaluator, x_eval, y_eval)
            clean_acc, robust_acc = float(res.clean_accuracy), float(res.robust_accuracy)
        stats = EpochStats(epoch=epoch, loss=float(loss_sum) / n, train_robust_accuracy=int(correct) / n,
                           clean_accuracy=clean_acc, robust_accuracy=robust_acc, seconds=time.perf_counter() - t0)
        history.epochs.append(stats)
        if ckpt_dir is not None:
            save_state(checkpoint_path(ckpt_dir, epoch), {
                "format": FORMAT, "format_version": FORMAT_VERSION, "epoch": epoch, "run": run_key,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "order_gen": order_gen.get_state(),
                "noise_gen": noise_gen.get_state(), "history": history.to_dict(),
            })
        if callback is not None:
            callback(stats)
    model.eval()
    return history
