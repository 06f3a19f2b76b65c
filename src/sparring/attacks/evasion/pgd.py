"""Projected gradient descent (Madry, Makelov, Schmidt, Tsipras, Vladu 2018)."""

from __future__ import annotations

from typing import ClassVar

import torch

from sparring.attacks.base import BatchContext, EvasionAttack
from sparring.attacks.evasion._checks import check_eps, check_positive_int
from sparring.attacks.losses import get_loss
from sparring.attacks.norms import Norm, ball_random, project, steepest_direction
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["PGD"]


class PGD(EvasionAttack):
    r"""Projected gradient descent, L∞ or L2 (Madry et al. 2018, "Towards Deep Learning Models Resistant to
    Adversarial Attacks", eq. 2).

    Threat model: white-box (gradients), untargeted or targeted, L∞ or L2 budget ``eps`` in raw input space.

    Each step moves by ``alpha`` along the steepest-ascent direction of the loss for the norm (the gradient's sign
    for L∞, the L2-normalised gradient for L2), then projects back onto the ``eps``-ball around the input and onto the
    input bounds. A random start draws the first point uniformly from the ball; ``restarts`` repeats the search
    from new random points for the examples still unbroken.

    The first iterate that reaches the goal is kept (best-iterate, never worse than the last iterate); with
    ``early_stop`` broken examples leave the batch at once, so later steps cost only what is still robust.
    Where an example stays robust, ``x_adv`` holds the last iterate of the last restart. On a randomized model
    (detected or declared, see :meth:`EvasionAttack.__call__`) no iterate is kept because one draw misclassified
    it: every example runs all steps, ``x_adv`` is the last iterate of the restart with the highest final loss,
    and the base judges it by the majority over fresh draws. ``result.extras["zero_gradient_examples"]`` counts the
    examples whose first gradient was exactly zero (a sign of gradient masking when robust equals clean accuracy).

    Args:
        eps: budget (radius of the norm ball), e.g. ``8/255`` for L∞ on 0-1 pixels.
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per restart.
        alpha: step size; default ``2.5 * eps / steps`` (Madry et al.).
        random_start: start from a uniform random point in the ball.
        restarts: number of random restarts (only still-robust examples are restarted).
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (Carlini–Wagner logit margin).
        early_stop: drop examples from the batch as soon as they are broken.
        seed: seed of the default generator (reproducible runs); pass ``generator=`` at call time to override.

    Shape:
        x: ``(N, *spec.shape)``, y: ``(N,)``; ``result.x_adv`` as x.

    Example:
        >>> from sparring import PGD, zoo
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> result = PGD(eps=0.1, steps=20)(target, data.x_test[:64], data.y_test[:64])
        >>> result.robust_accuracy < result.clean_accuracy
        True
    """

    name: ClassVar[str] = "pgd"
    needs: ClassVar[Access] = Access.GRADIENTS
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        norm: str | Norm = "linf",
        steps: int = 20,
        alpha: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "ce",
        early_stop: bool = True,
        seed: int | None = 0,
    ) -> None:
        self.eps = eps
        self.norm = norm
        self.steps = steps
        self.alpha = alpha
        self.random_start = random_start
        self.restarts = restarts
        self.loss = loss
        self.early_stop = early_stop
        self.seed = seed

    def _check_params(self, target: Target) -> None:
        norm = Norm.parse(self.norm)
        check_eps(self.eps, norm, target.spec)
        check_positive_int(self.steps, "steps")
        check_positive_int(self.restarts, "restarts")
        if self.alpha is not None and not float(self.alpha) > 0:
            raise ParameterError(f"alpha (step size) must be > 0; got {self.alpha!r}.")
        get_loss(self.loss)

    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target = ctx.target
        assert isinstance(target, TorchTarget)
        fwd = target.differentiable(type(self).__name__)
        norm, eps = Norm.parse(self.norm), float(self.eps)
        alpha = float(self.alpha) if self.alpha is not None else 2.5 * eps / self.steps
        loss_fn = get_loss(self.loss)
        targeted = target_labels is not None
        goal = target_labels if target_labels is not None else y

        def reached(pred: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
            return pred == g if targeted else pred != g

        with target.frozen():
            with torch.no_grad():
                clean_pred = fwd(x).argmax(dim=1)
            adv_pred = clean_pred.clone()
            x_adv = x.clone()
            done = reached(clean_pred, goal) & (not ctx.randomized)
            # L∞: the ball and the bounds intersect to one box, so projection is a single clamp.
            box_lo = torch.maximum(x - eps, ctx.lower) if norm is Norm.LINF else ctx.lower
            box_hi = torch.minimum(x + eps, ctx.upper) if norm is Norm.LINF else ctx.upper

            best_loss = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)

            def record(where: torch.Tensor, xs: torch.Tensor, preds: torch.Tensor) -> None:
                x_adv[where] = xs
                adv_pred[where] = preds

            for _ in range(self.restarts):
                idx = (~done).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                x0, g = x[idx], goal[idx]
                lo = box_lo[idx] if box_lo.shape[0] > 1 else box_lo
                hi = box_hi[idx] if box_hi.shape[0] > 1 else box_hi
                xa = x0 + ball_random(x0, norm, eps, ctx.generator) if self.random_start else x0.clone()
                xa = torch.clamp(xa, lo, hi)
                for step in range(self.steps):
                    xa.requires_grad_(True)
                    logits = fwd(xa)
                    loss = loss_fn(logits, g, targeted).sum()
                    (grad,) = torch.autograd.grad(loss, xa)
                    ctx.gradients += xa.shape[0]
                    xa = xa.detach()
                    with torch.no_grad():
                        if step == 0:  # a gradient that is exactly zero everywhere: masking, not robustness
                            flat = int((grad.flatten(1).abs().amax(dim=1) == 0).sum())
                            ctx.notes["zero_gradient_examples"] = ctx.notes.get("zero_gradient_examples", 0) + flat
                        pred = logits.argmax(dim=1)
                        # randomized model: one draw's misclassification decides nothing; run to the last iterate
                        hit = torch.zeros_like(g, dtype=torch.bool) if ctx.randomized else reached(pred, g)
                        if bool(hit.any()):
                            record(idx[hit], xa[hit], pred[hit])
                            done[idx[hit]] = True
                            if self.early_stop:
                                keep = ~hit
                                idx, xa, x0, g, grad = idx[keep], xa[keep], x0[keep], g[keep], grad[keep]
                                lo = lo[keep] if lo.shape[0] > 1 else lo
                                hi = hi[keep] if hi.shape[0] > 1 else hi
                                if idx.numel() == 0:
                                    break
                        xa = xa + alpha * steepest_direction(grad, norm)
                        if norm is Norm.L2:
                            xa = x0 + project(xa - x0, norm, eps)
                        xa = torch.clamp(xa, lo, hi)
                if idx.numel() == 0:
                    continue
                with torch.no_grad():
                    logits = fwd(xa)
                    pred = logits.argmax(dim=1)
                hit = reached(pred, g)
                if ctx.randomized:  # keep the restart whose last iterate has the highest loss; judged by the base
                    final = loss_fn(logits, g, targeted)
                    better = final > best_loss[idx]
                    best_loss[idx[better]] = final[better]
                    record(idx[better], xa[better], pred[better])
                    continue
                done[idx[hit]] = True
                # The last iterate is kept for every example still in play: broken ones just succeeded, and
                # robust ones return their final attempt (useful for adversarial training).
                record(idx, xa, pred)
        return x_adv, clean_pred, adv_pred
