"""Carlini & Wagner L2 attack (Carlini, Wagner 2017)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from sparring.attacks.base import BatchContext, EvasionAttack
from sparring.attacks.evasion._checks import check_eps, check_positive_int
from sparring.attacks.losses import margin as cw_margin
from sparring.attacks.norms import Norm
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["CarliniWagnerL2"]

_UPPER_INIT = 1e10  # "no upper bound on c yet" (the authors' code)
_ATANH_CLIP = 1 - 1e-6  # keeps atanh finite for inputs sitting on a bound
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


class CarliniWagnerL2(EvasionAttack):
    r"""Carlini & Wagner L2 attack (Carlini, Wagner 2017, "Towards Evaluating the Robustness of Neural Networks",
    §V-A, objective f6 with the change of variables of §V-A.3 "option 3").

    Threat model: white-box (gradients), untargeted or targeted (``target_labels``), minimal L2 perturbation.

    For each example the attack minimises ``||x' - x||²₂ + c·f(x')`` over ``w`` with
    ``x' = lo + (hi - lo)·(tanh(w) + 1)/2``, so ``x'`` always lies within the spec's bounds (one number or one per
    feature). ``f`` is the paper's f6 on logits ``Z``: ``max(Z_y - max_{i≠y} Z_i, -κ)`` untargeted,
    ``max(max_{i≠t} Z_i - Z_t, -κ)`` targeted. Each of ``binary_steps`` rounds starts from ``w`` of the input
    and runs ``steps`` iterations of Adam (``lr``); across rounds the constant ``c`` is searched per example:
    multiplied by 10 while no adversarial point has been found for that example, bisected between the largest
    failing and the smallest succeeding ``c`` once one has. Over all rounds and iterations the adversarial point
    (margin above κ) with the smallest L2 distance to ``x`` is kept.

    ``abort_early`` applies the authors' rule per example instead of per batch: every ``steps // 10`` iterations,
    an example whose objective has not fallen below 0.9999 of its value at the previous check leaves the round.
    Examples already misclassified (already classified as the target, when targeted) are returned unchanged.
    The authors' code also reruns the last round at the upper bound of ``c`` when ``binary_steps >= 10``; that
    heuristic is not in the paper and not done here.

    Success: with ``eps=None``, any adversarial point found (``x_adv`` is the smallest one, ``norms`` its L2
    distance). With ``eps``, only one with L2 norm ≤ ``eps``; where the smallest found is larger, ``x_adv`` is the
    input itself and the example counts as robust.

    Cost, per example and round: up to ``steps`` forward and backward passes.

    Args:
        eps: optional L2 budget for success (see above); ``None`` for the unbounded minimal-perturbation attack.
        confidence: κ, the logit margin an adversarial point must have (0 in the paper's main results).
        c_init: initial trade-off constant ``c`` (the authors use 1e-3 to 1e-2).
        binary_steps: rounds of the search over ``c`` (paper: 9).
        steps: Adam iterations per round (paper: 10 000, authors' code: 1 000).
        lr: Adam learning rate (paper: 1e-2).
        abort_early: stop an example's round when its objective stalls (see above).
        seed: seed of the default generator (unused: the attack is deterministic; kept for a uniform API).

    Shape:
        x: ``(N, *spec.shape)``, y: ``(N,)``; ``result.x_adv`` as x.

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.evasion.cw import CarliniWagnerL2
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> result = CarliniWagnerL2(binary_steps=5, steps=100)(target, data.x_test[:32], data.y_test[:32])
        >>> result.robust_accuracy <= 0.1
        True
    """

    name: ClassVar[str] = "cw"
    needs: ClassVar[Access] = Access.GRADIENTS
    norms: ClassVar[tuple[Norm, ...]] = (Norm.L2,)

    def __init__(
        self,
        *,
        eps: float | None = None,
        confidence: float = 0.0,
        c_init: float = 1e-2,
        binary_steps: int = 9,
        steps: int = 1000,
        lr: float = 1e-2,
        abort_early: bool = True,
        seed: int | None = 0,
    ) -> None:
        self.eps = eps
        self.confidence = confidence
        self.c_init = c_init
        self.binary_steps = binary_steps
        self.steps = steps
        self.lr = lr
        self.abort_early = abort_early
        self.seed = seed

    def _check_params(self, target: Target) -> None:
        if self.eps is not None:
            check_eps(self.eps, Norm.L2, target.spec)
        _check_number(self.confidence, "confidence (kappa)", minimum=0.0, strict=False, hint="0 in the paper")
        _check_number(self.c_init, "c_init", minimum=0.0, strict=True, hint="e.g. 1e-2")
        _check_number(self.lr, "lr", minimum=0.0, strict=True, hint="the paper uses 1e-2")
        check_positive_int(self.binary_steps, "binary_steps")
        check_positive_int(self.steps, "steps")
        if not isinstance(self.abort_early, bool):
            raise ParameterError(f"abort_early must be True or False; got {self.abort_early!r}.")

    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target = ctx.target
        assert isinstance(target, TorchTarget)
        fwd = target.differentiable(type(self).__name__)
        targeted = target_labels is not None
        goal = target_labels if target_labels is not None else y
        kappa = float(self.confidence)
        n = x.shape[0]
        lo, width = ctx.lower, ctx.upper - ctx.lower

        def to_input(w: torch.Tensor) -> torch.Tensor:
            return torch.clamp(lo + width * (torch.tanh(w) + 1) / 2, ctx.lower, ctx.upper)

        with target.frozen():
            with torch.no_grad():
                clean_pred = fwd(x).argmax(dim=1)
            w0 = torch.atanh(((x - lo) / width * 2 - 1).clamp(-_ATANH_CLIP, _ATANH_CLIP))
            best_x, best_pred = x.clone(), clean_pred.clone()
            best_norm = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
            already = clean_pred == goal if targeted else clean_pred != goal
            best_norm[already] = 0.0
            work = (~already).nonzero().squeeze(1)
            c = torch.full((work.numel(),), float(self.c_init), device=x.device, dtype=x.dtype)
            c_lo, c_hi = torch.zeros_like(c), torch.full_like(c, _UPPER_INIT)
            check_every = max(self.steps // 10, 1)

            for _round in range(self.binary_steps):
                if work.numel() == 0:
                    break
                found = torch.zeros(work.numel(), dtype=torch.bool, device=x.device)
                rows = torch.arange(work.numel(), device=x.device)  # positions in `work` still optimising
                w = w0[work].clone()
                m, v = torch.zeros_like(w), torch.zeros_like(w)
                prev = torch.full((work.numel(),), math.inf, device=x.device, dtype=x.dtype)
                for step in range(self.steps):
                    idx = work[rows]
                    wa = w.requires_grad_(True)
                    xa = to_input(wa)
                    logits = fwd(xa)
                    margin = cw_margin(logits, goal[idx], targeted)  # f6 = max(-margin, -κ)
                    dist2 = (xa - x[idx]).reshape(rows.numel(), -1).pow(2).sum(dim=1)
                    obj = dist2 + c[rows] * torch.clamp(-margin, min=-kappa)
                    (grad,) = torch.autograd.grad(obj.sum(), wa)
                    ctx.gradients += rows.numel()
                    with torch.no_grad():
                        w = wa.detach()
                        hit = (margin > 0) & (margin >= kappa)
                        found[rows[hit]] = True
                        l2 = dist2.sqrt()
                        better = hit & (l2 < best_norm[idx])
                        if bool(better.any()):
                            bi = idx[better]
                            best_norm[bi] = l2[better]
                            best_x[bi] = xa.detach()[better]
                            best_pred[bi] = logits.argmax(dim=1)[better]
                        # Adam (bias-corrected); all rows of a round share the step count.
                        t = step + 1
                        m = _ADAM_BETAS[0] * m + (1 - _ADAM_BETAS[0]) * grad
                        v = _ADAM_BETAS[1] * v + (1 - _ADAM_BETAS[1]) * grad * grad
                        m_hat = m / (1 - _ADAM_BETAS[0] ** t)
                        v_hat = v / (1 - _ADAM_BETAS[1] ** t)
                        w = w - float(self.lr) * m_hat / (v_hat.sqrt() + _ADAM_EPS)
                        if self.abort_early and step % check_every == 0:
                            go_on = obj.detach() <= prev[rows] * 0.9999
                            prev[rows] = obj.detach()
                            if not bool(go_on.all()):
                                rows, w, m, v = rows[go_on], w[go_on], m[go_on], v[go_on]
                                if rows.numel() == 0:
                                    break
                # Search over c, per example: bisect once bracketed, else grow tenfold.
                c_hi = torch.where(found, torch.minimum(c_hi, c), c_hi)
                c_lo = torch.where(found, c_lo, torch.maximum(c_lo, c))
                bracketed = c_hi < _UPPER_INIT
                c = torch.where(bracketed, (c_lo + c_hi) / 2, c * 10)

            ok = torch.isfinite(best_norm)
            if self.eps is not None:
                ok &= best_norm <= float(self.eps)
            x_adv = torch.where(ok.view(-1, *[1] * (x.ndim - 1)), best_x, x)
            adv_pred = torch.where(ok, best_pred, clean_pred)
        return x_adv, clean_pred, adv_pred


def _check_number(value: object, name: str, *, minimum: float, strict: bool, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number ({hint}); got {value!r}.")
    v = float(value)
    if v < minimum or (strict and v == minimum):
        op = ">" if strict else ">="
        raise ParameterError(f"{name} must be {op} {minimum:g} ({hint}); got {value!r}.")
    return v
