"""DeepFool (Moosavi-Dezfooli, Fawzi, Frossard 2016)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from sparring.attacks.base import BatchContext, EvasionAttack
from sparring.attacks.evasion._checks import check_eps, check_positive_int
from sparring.attacks.norms import Norm, norm_of
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["DeepFool"]

_TINY = 1e-12
_NUDGE = 1e-4  # added to each step's distance so the linearised boundary is crossed, not touched (authors' code)


class DeepFool(EvasionAttack):
    r"""DeepFool, L2 or L∞ (Moosavi-Dezfooli, Fawzi, Frossard 2016, "DeepFool: a simple and accurate method to
    fool deep neural networks", Algorithm 2 for multiclass models, §3.2 / eq. 11 for the ℓp case).

    Threat model: white-box (gradients), untargeted only (the paper's algorithm), minimal L2 or L∞ perturbation.

    Let ``k₀`` be the clean prediction and ``K`` its ``n_candidates - 1`` most likely other classes (from the clean
    logits, as in the authors' code). At each iteration and for each ``k ∈ K`` the model is linearised:
    ``f'_k = Z_k - Z_{k₀}`` and ``w'_k = ∇x f'_k``. The closest linearised boundary is
    ``l = argmin_k d_k``, ``d_k = |f'_k| / ||w'_k||_q`` (``q`` the dual norm: 2 for L2, 1 for L∞), and the step
    onto it is ``r = (d_l + 10⁻⁴)·w'_l/||w'_l||₂`` (L2) or ``(d_l + 10⁻⁴)·sign(w'_l)`` (L∞).
    Steps accumulate in ``r_tot`` and the iterate is ``x + (1 + overshoot)·r_tot``, clipped to the input bounds;
    an example stops as soon as its prediction leaves ``k₀``, or after ``steps`` iterations. On an affine binary
    classifier one step lands at ``(1 + overshoot)·(d + 10⁻⁴)`` from ``x``, ``d`` the exact boundary distance.

    All examples of a batch move together; the gradients of the candidate differences come from one backward
    pass per candidate over the whole batch (no per-example loop). Examples already misclassified are returned
    unchanged.

    Success: with ``eps=None``, leaving ``k₀`` (``x_adv`` is the point found). With ``eps``, only a point within
    ``eps`` in the attack's norm counts; otherwise ``x_adv`` is the input itself and the example counts as robust.
    Where no iteration flipped the prediction ``x_adv`` is also the input.

    Cost, per example and iteration: one forward pass and ``n_candidates - 1`` backward passes (counted in
    ``result.cost.gradients``).

    Args:
        norm: ``"l2"`` or ``"linf"``.
        steps: maximum iterations (paper: 50).
        overshoot: ``η``, the factor by which the summed step is lengthened (paper: 0.02).
        n_candidates: how many of the most likely classes (the prediction included) are considered (paper: 10).
        eps: optional budget for success (see above).
        seed: seed of the default generator (unused: the attack is deterministic; kept for a uniform API).

    Shape:
        x: ``(N, *spec.shape)``, y: ``(N,)``; ``result.x_adv`` as x.

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.evasion.deepfool import DeepFool
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> result = DeepFool(norm="l2")(target, data.x_test[:32], data.y_test[:32])
        >>> result.robust_accuracy <= 0.1
        True
    """

    name: ClassVar[str] = "deepfool"
    needs: ClassVar[Access] = Access.GRADIENTS
    norms: ClassVar[tuple[Norm, ...]] = (Norm.L2, Norm.LINF)
    supports_targeted: ClassVar[bool] = False

    def __init__(
        self,
        *,
        norm: str | Norm = "l2",
        steps: int = 50,
        overshoot: float = 0.02,
        n_candidates: int = 10,
        eps: float | None = None,
        seed: int | None = 0,
    ) -> None:
        self.norm = norm
        self.steps = steps
        self.overshoot = overshoot
        self.n_candidates = n_candidates
        self.eps = eps
        self.seed = seed

    def _check_params(self, target: Target) -> None:
        norm = Norm.parse(self.norm)
        check_positive_int(self.steps, "steps")
        os_ = self.overshoot
        if isinstance(os_, bool) or not isinstance(os_, int | float) or not math.isfinite(os_) or os_ < 0:
            raise ParameterError(f"overshoot must be a finite number >= 0 (the paper uses 0.02); got {os_!r}.")
        check_positive_int(self.n_candidates, "n_candidates")
        if self.n_candidates < 2:
            raise ParameterError(
                f"n_candidates must be >= 2 (the predicted class and at least one other); got {self.n_candidates}."
            )
        if self.eps is not None:
            check_eps(self.eps, norm, target.spec)

    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target = ctx.target
        assert isinstance(target, TorchTarget)
        fwd = target.differentiable(type(self).__name__)
        norm = Norm.parse(self.norm)
        scale = 1 + float(self.overshoot)

        with target.frozen():
            with torch.no_grad():
                clean_logits = fwd(x)
            clean_pred = clean_logits.argmax(dim=1)
            n_cand = min(int(self.n_candidates), clean_logits.shape[1])
            cand = clean_logits.topk(n_cand, dim=1).indices  # (N, n_cand); column 0 is the clean prediction
            x_adv, adv_pred = x.clone(), clean_pred.clone()
            wrong = clean_pred != y  # already misclassified: returned unchanged
            idx = (~wrong).nonzero().squeeze(1)
            xa, r_tot = x[idx].clone(), torch.zeros_like(x[idx])
            # `steps` updates; the extra pass only checks the last one.
            for step in range(self.steps + 1):
                if idx.numel() == 0:
                    break
                update = step < self.steps
                with torch.set_grad_enabled(update):
                    xa.requires_grad_(update)
                    logits = fwd(xa)
                c = cand[idx]
                with torch.no_grad():
                    pred = logits.argmax(dim=1)
                    moved = pred != c[:, 0]
                    if bool(moved.any()):
                        x_adv[idx[moved]], adv_pred[idx[moved]] = xa.detach()[moved], pred[moved]
                if not update:
                    break
                keep = ~moved
                if not bool(keep.any()):
                    break
                z0 = logits.gather(1, c[:, :1])
                best_dist = torch.full((int(keep.sum()),), math.inf, device=x.device, dtype=x.dtype)
                best_w = torch.zeros_like(xa[keep])
                for j in range(1, n_cand):
                    f_all = (logits.gather(1, c[:, j : j + 1]) - z0).squeeze(1)
                    (g_all,) = torch.autograd.grad(f_all.sum(), xa, retain_graph=j < n_cand - 1)
                    ctx.gradients += xa.shape[0]
                    with torch.no_grad():
                        f_k, w_k = f_all[keep], g_all[keep]
                        dist = f_k.abs() / _dual_norm(w_k, norm).clamp_min(_TINY)
                        closer = dist < best_dist
                        best_dist = torch.where(closer, dist, best_dist)
                        best_w = torch.where(_col(closer, best_w), w_k, best_w)
                with torch.no_grad():
                    size = _col(best_dist + _NUDGE, best_w)
                    if norm is Norm.L2:
                        r = size * best_w / _col(_dual_norm(best_w, norm).clamp_min(_TINY), best_w)
                    else:
                        r = size * best_w.sign()
                    idx, r_tot = idx[keep], r_tot[keep] + r
                    xa = torch.clamp(x[idx] + scale * r_tot, ctx.lower, ctx.upper)

            ok = wrong | (adv_pred != clean_pred)
            if self.eps is not None:
                ok &= norm_of(x_adv - x, norm) <= float(self.eps)
            x_adv = torch.where(_col(ok, x), x_adv, x)
            adv_pred = torch.where(ok, adv_pred, clean_pred)
        return x_adv, clean_pred, adv_pred

def _dual_norm(w: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example dual norm of gradients: L2 for the L2 attack, L1 for the L∞ attack."""
    flat = w.reshape(w.shape[0], -1)
    out: torch.Tensor = flat.abs().sum(dim=1) if norm is Norm.LINF else torch.linalg.vector_norm(flat, dim=1)
    return out


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *[1] * (like.ndim - 1))
