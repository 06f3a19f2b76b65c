"""Fast gradient sign method (Goodfellow, Shlens, Szegedy 2015)."""

from __future__ import annotations

from typing import ClassVar

import torch

from sparring.attacks.base import BatchContext, EvasionAttack
from sparring.attacks.evasion._checks import check_eps
from sparring.attacks.losses import get_loss
from sparring.attacks.norms import Norm, steepest_direction
from sparring.targets.base import Target
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["FGSM"]


class FGSM(EvasionAttack):
    r"""Fast gradient sign method (Goodfellow, Shlens, Szegedy 2015, "Explaining and Harnessing Adversarial
    Examples", eq. 3): one step of size ``eps`` along ``sign(∇x loss)``, clipped to the input bounds.

    Threat model: white-box (gradients), untargeted or targeted (step against the gradient of the target's loss),
    L∞. With ``norm="l2"`` it is the fast gradient method, one step along the L2-normalised gradient.

    Args:
        eps: budget in raw input space.
        norm: ``"linf"`` (FGSM) or ``"l2"`` (FGM).
        loss: ``"ce"`` or ``"margin"``.

    Shape:
        x: ``(N, *spec.shape)``, y: ``(N,)``; ``result.x_adv`` as x.

    Example:
        >>> from sparring import FGSM, zoo
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> FGSM(eps=0.2)(target, data.x_test[:64], data.y_test[:64]).success_rate > 0.3
        True
    """

    name: ClassVar[str] = "fgsm"
    needs: ClassVar[Access] = Access.GRADIENTS
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)

    def __init__(self, *, eps: float = 8 / 255, norm: str | Norm = "linf", loss: str = "ce") -> None:
        self.eps = eps
        self.norm = norm
        self.loss = loss

    def _check_params(self, target: Target) -> None:
        check_eps(self.eps, Norm.parse(self.norm), target.spec)
        get_loss(self.loss)

    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target = ctx.target
        assert isinstance(target, TorchTarget)
        fwd = target.differentiable(type(self).__name__)
        norm, eps = Norm.parse(self.norm), float(self.eps)
        targeted = target_labels is not None
        goal = target_labels if target_labels is not None else y
        with target.frozen():
            xg = x.clone().requires_grad_(True)
            logits = fwd(xg)
            (grad,) = torch.autograd.grad(get_loss(self.loss)(logits, goal, targeted).sum(), xg)
            ctx.gradients += x.shape[0]
            with torch.no_grad():
                clean_pred = logits.argmax(dim=1)
                already = clean_pred == goal if targeted else clean_pred != goal
                x_adv = torch.clamp(x + eps * steepest_direction(grad, norm), ctx.lower, ctx.upper)
                x_adv = torch.where(already.view(-1, *[1] * (x.ndim - 1)), x, x_adv)
                adv_pred = fwd(x_adv).argmax(dim=1)
        return x_adv, clean_pred, adv_pred
