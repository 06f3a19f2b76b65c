"""One step of adversarial training: the inner maximisation in the ``eps``-ball (PGD-AT, Madry et al. 2018; the KL
ascent of TRADES, Zhang et al. 2019, Alg. 1; one FGSM step from a random start, Wong, Rice & Kolter 2020, sec. 4),
the outer objective (cross-entropy on the adversarial points, or TRADES' cross-entropy + beta KL), and the cyclic
learning rate of fast adversarial training (Wong et al. 2020, sec. 5.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sparring.attacks.norms import Norm, ball_random, project, steepest_direction
from sparring.errors import ParameterError

__all__ = ["FAST_STEP", "Forward", "check_number", "cyclic_lr", "inner_attack", "objective"]


_TRADES_INIT = 0.001  # std of the Gaussian start of the TRADES inner maximisation (Zhang et al. 2019, Alg. 1)
FAST_STEP = 1.25  # fast FGSM step in units of eps (Wong et al. 2020, sec. 4)
_CYCLIC_PEAK = 0.4  # the cyclic schedule peaks after this fraction of the epochs (Wong et al. 2020, sec. 5.1)

Forward = Callable[[torch.Tensor], torch.Tensor]


def check_number(value: object, name: str, *, low: float, strict: bool) -> float:
    """``value`` as a float when it is a finite number above ``low`` (``strict``) or at least ``low``."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or (value <= low if strict else value < low):  # type: ignore[operator]
        raise ParameterError(f"{name} must be a finite number {'>' if strict else '>='} {low:g}; got {value!r}.")
    return float(value)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- inner attack
def inner_attack(
    fwd: Forward, x: torch.Tensor, y: torch.Tensor, *, method: str, norm: Norm, eps: float, alpha: float,
    steps: int, low: torch.Tensor, high: torch.Tensor, gen: torch.Generator,
) -> torch.Tensor:
    """The training-time maximisation: ``steps`` projected steepest-ascent steps from a random start.

    PGD / fast FGSM maximise the cross-entropy from a uniform start in the ball; TRADES maximises
    ``KL(f(x) || f(x'))`` from ``x + 0.001·N(0, I)``. No early stop: the maximisation runs its steps on every point,
    misclassified or not, as in the papers. Call with the weights frozen.
    """
    if method == "trades":
        with torch.no_grad():
            p_clean = F.softmax(fwd(x), dim=1)
        start = x + _TRADES_INIT * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)

        def objective(z: torch.Tensor) -> torch.Tensor:
            return F.kl_div(F.log_softmax(z, dim=1), p_clean, reduction="sum")
    else:
        start = x + ball_random(x, norm, eps, gen)

        def objective(z: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(z, y, reduction="sum")

    xa = torch.clamp(x + project(start - x, norm, eps), low, high)
    for _ in range(steps):
        xa.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(fwd(xa)), xa)
        with torch.no_grad():
            xa = xa.detach() + alpha * steepest_direction(grad, norm)
            xa = torch.clamp(x + project(xa - x, norm, eps), low, high)
    return xa.detach()


def cyclic_lr(peak: float, t: float, epochs: int) -> float:
    """One-cycle learning rate at time ``t`` (in epochs): 0 → ``peak`` at 40% of ``epochs`` → 0 at the end."""
    top = _CYCLIC_PEAK * epochs
    return peak * (t / top if t <= top else max(0.0, (epochs - t) / (epochs - top)))


def objective(
    fwd: Forward, method: str, beta: float, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss of a batch and the logits on the attacked points.

    PGD / fast FGSM: ``CE(f(x'), y)``. TRADES: ``CE(f(x), y) + β·KL(f(x) ‖ f(x'))``, averaged over the batch, with
    gradients through both terms (Zhang et al. 2019, eq. 5).
    """
    z_adv = fwd(x_adv)
    if method != "trades":
        return F.cross_entropy(z_adv, y), z_adv
    z_clean = fwd(x)
    kl = F.kl_div(F.log_softmax(z_adv, dim=1), F.softmax(z_clean, dim=1), reduction="batchmean")
    return F.cross_entropy(z_clean, y) + beta * kl, z_adv
