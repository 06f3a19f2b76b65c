"""Certified training: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020) for L∞ balls.

Both minimise a mix of the clean cross-entropy and the cross-entropy of the *worst-case logits* implied by sound
bounds on the margins ``z_y - z_j`` over the ball, so that the bounds themselves become tight and positive — which is
what :func:`~sparring.defenses.certify.verify.verify` later checks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sparring._util import reinit_parameters
from sparring.attacks.evasion._checks import check_eps, check_positive_int
from sparring.attacks.norms import Norm
from sparring.data.datasets import Dataset
from sparring.defenses.certify.bounds import BoundedModel, margin_spec
from sparring.errors import ParameterError
from sparring.targets.spec import InputSpec

__all__ = ["train_certified"]

METHODS = ("ibp", "crown-ibp")


def _check_pair(value: tuple[float, float], name: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a (start, end) pair of numbers in [0, 1]; got {value!r}.") from None
    if not (0 <= a <= 1 and 0 <= b <= 1):
        raise ParameterError(f"{name} must be a (start, end) pair of numbers in [0, 1]; got {value!r}.")
    return a, b


def _check_fraction(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ParameterError(f"{name} must be a fraction of the training steps in [0, 1]; got {value!r}.")
    return float(value)


def train_certified(
    model: nn.Module,
    dataset: Dataset,
    spec: InputSpec,
    *,
    eps: float,
    epochs: int,
    method: str = "ibp",
    kappa: tuple[float, float] = (1.0, 0.5),
    beta: tuple[float, float] = (1.0, 0.0),
    warmup: float = 0.1,
    ramp: float = 0.5,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    reinit: bool = True,
) -> nn.Module:
    r"""Train ``model`` to be verifiably robust within an L∞ ball of radius ``eps`` (raw input space).

    The loss of each batch (Gowal et al. 2018, "On the Effectiveness of Interval Bound Propagation for Training
    Verifiably Robust Models", eq. 12) is

    .. math:: \kappa\,\ell(z(x), y) + (1-\kappa)\,\ell(\hat z(x, \epsilon_t), y), \qquad
              \hat z_j = -\underline{m}_j,\; \underline{m}_j \le z_y - z_j \text{ on the ball}

    where the margin lower bounds come from IBP (``method="ibp"``), or, for ``"crown-ibp"`` (Zhang et al. 2020,
    "Towards Stable and Efficient Training of Verifiably Robust Neural Networks", eq. 7), from
    :math:`\beta\,\underline{m}^{\text{CROWN-IBP}} + (1-\beta)\,\underline{m}^{\text{IBP}}`. Schedules: the first
    ``warmup`` fraction of the steps is clean training (``eps_t = 0``); over the next ``ramp`` fraction ``eps_t``
    grows linearly from 0 to ``eps`` while ``kappa`` and ``beta`` move linearly from their start to their end value;
    then everything stays at the end values.

    Optimiser: Adam(``lr``). Mini-batches are drawn with a ``torch.Generator`` seeded with ``seed``; with ``reinit``
    the weights are first re-initialised from ``seed`` inside ``torch.random.fork_rng`` (the global RNG is left
    untouched), so two runs with the same arguments give the same weights. Batch-norm layers act with their running
    statistics (updated from each clean batch); dropout is off, because bounds are computed in eval mode.

    Args:
        model: a supported architecture (see :data:`~sparring.defenses.certify.bounds.SUPPORTED_LAYERS`), taking
            normalised inputs if ``spec`` has ``mean``/``std``.
        dataset: training data (``x_train``, ``y_train``) in raw space, matching ``spec``.
        spec: the input spec (bounds cut the ball; normalisation is applied inside).
        eps: final training radius. epochs: passes over the training set.
        method: ``"ibp"`` or ``"crown-ibp"``.
        kappa: (start, end) weight of the clean loss. beta: (start, end) CROWN-IBP weight (``"crown-ibp"`` only).
        warmup, ramp: fractions of all steps for clean warm-up and for the linear ramp.
        lr, batch_size, seed, reinit: optimiser step size, batch size, seed, re-initialise first.

    Returns:
        The trained model, in eval mode.

    Example:
        >>> from sparring import load_digits
        >>> from torch import nn
        >>> ds = load_digits(8)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> net = train_certified(net, ds, ds.spec, eps=0.05, epochs=2)
    """
    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    e = check_eps(eps, Norm.LINF, spec)
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    k0, k1 = _check_pair(kappa, "kappa")
    b0, b1 = _check_pair(beta, "beta")
    warm, rmp = _check_fraction(warmup, "warmup"), _check_fraction(ramp, "ramp")
    if warm + rmp > 1:
        raise ParameterError(f"warmup + ramp must be at most 1 (fractions of the steps); got {warm} + {rmp}.")
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ParameterError(f"lr must be a finite number > 0; got {lr!r}.")
    x_all, y_all = spec.validate(dataset.x_train, dataset.y_train)
    assert y_all is not None

    model.eval()
    bm = BoundedModel(model, spec)  # fails early, naming any unsupported layer
    dev, dtype = bm.device, bm.dtype
    if reinit:
        reinit_parameters(model, seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    norm = spec.norm_tensors(dev, dtype)
    low, high = spec.bounds_tensors(dev, dtype)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=float(lr))
    n = x_all.shape[0]
    per_epoch = -(-n // batch_size)
    total = epochs * per_epoch
    warm_steps, ramp_steps = round(warm * total), round(rmp * total)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            xb, yb = x_all[idx].to(dev, dtype), y_all[idx].to(dev)
            p = 0.0 if step < warm_steps else min(1.0, (step - warm_steps + 1) / ramp_steps) if ramp_steps else 1.0
            eps_t, kap, bet = p * e, k0 + p * (k1 - k0), b0 + p * (b1 - b0)
            if bns:  # refresh the running statistics from the clean batch (dropout stays off), then bound with them
                for bn in bns:
                    bn.train()
                with torch.no_grad():
                    model(xb if norm is None else (xb - norm[0]) / norm[1])
                for bn in bns:
                    bn.eval()
            logits = bm.forward(xb)
            loss = F.cross_entropy(logits, yb)
            if eps_t > 0 and kap < 1:
                lo, hi = torch.maximum(xb - eps_t, low), torch.minimum(xb + eps_t, high)
                c = margin_spec(yb, logits.shape[1]).to(dtype)
                mlb = bm.interval(lo, hi, c)[0] if method == "ibp" or bet < 1 else None
                if method == "crown-ibp" and bet > 0:
                    mc = bm.crown_lower(lo, hi, c, intermediate="ibp")
                    mlb = mc if mlb is None else bet * mc + (1 - bet) * mlb
                assert mlb is not None
                loss = kap * loss + (1 - kap) * F.cross_entropy(-mlb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            step += 1
    opt.zero_grad(set_to_none=True)
    return model.eval()
