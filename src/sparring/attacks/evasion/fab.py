"""Fast Adaptive Boundary attack, FAB and FAB-T (Croce & Hein 2020): minimally distorted adversarials, L∞ and L2."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from sparring.attacks.base import BatchContext, EvasionAttack
from sparring.attacks.evasion._checks import check_eps, check_positive_int
from sparring.attacks.evasion._fast import fast_layout
from sparring.attacks.norms import Norm, ball_random, norm_of
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access
from sparring.targets.torch import Forward, TorchTarget

__all__ = ["FAB", "project_hyperplane_box"]

_TINY = 1e-12
_MAX_ROWS = 4096  # FAB-T with batch_targets: most (point, target) rows attacked as one batch


class FAB(EvasionAttack):
    r"""Fast Adaptive Boundary attack, L∞ or L2 (Croce & Hein 2020, "Minimally distorted Adversarial Examples with
    a Fast Adaptive Boundary Attack", ICML, Algorithm 1), untargeted or FAB-T.

    Threat model: white-box (gradients); untargeted (FAB, or FAB-T with ``targeted=True``) or targeted with
    ``target_labels``; L∞ or L2. FAB searches for the *smallest* perturbation that changes the decision; ``eps``
    only decides which of the adversarials it found count as successes.

    Each step linearises the classifier at the current iterate ``x_i``: the decision boundary between the label
    ``y`` and the class ``s`` whose linearised boundary is closest, ``|f_s − f_y| / ||∇f_s − ∇f_y||_q`` with ``q``
    the dual norm (FAB-T: ``s`` is the target class), becomes a hyperplane ``π``. Both ``x_i`` and the original
    point ``x`` are projected onto ``π ∩ [lower, upper]`` with the exact minimal-norm projection
    (:func:`project_hyperplane_box`), giving steps ``δ_i`` and ``δ_x``; the next iterate is the biased combination
    ``(1−α)(x_i + η δ_i) + α (x + η δ_x)`` with ``α = min(||δ_i|| / (||δ_i|| + ||δ_x||), alpha_max)``, clipped to
    the bounds (eq. 7–8). Whenever the iterate is adversarial it is kept if it is the closest so far, and then moved
    back towards ``x``: ``x + β (x_i − x)`` (sec. 3.3). Restarts after the first start from a uniform point of the
    ball of radius ``min(best norm, eps) / 2`` around ``x`` (sec. 3.4).

    FAB-T (``targeted=True``, as in the AutoAttack standard suite) runs the targeted version against the
    ``n_target_classes`` classes with the highest clean logits after the predicted one, in turn, each on the
    points still robust; its goal stays misclassification. With explicit ``target_labels`` the target class is
    fixed and the goal is that class: the linearised boundary is then the one between the target and its
    strongest rival at the current iterate.

    The closest adversarial found is returned where its norm is at most ``eps``; elsewhere ``x_adv`` is the input
    itself (robust). With ``early_stop`` a point leaves the batch as soon as an adversarial within ``eps`` is found
    (the verdict cannot change any more, but the returned perturbation is then not the smallest FAB would find);
    with ``early_stop=False`` every step, restart and target class runs on every correctly classified point and
    ``result.norms`` are FAB's minimal-norm estimates.

    Args:
        eps: budget in raw input space: an adversarial counts only if its norm is at most ``eps``.
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per restart (100 in the paper and AutoAttack).
        restarts: starts per target class; the first from ``x``, the others random (AutoAttack's FAB-T uses 1).
        alpha_max: largest bias ``α`` towards the projection of the original point (paper: 0.1).
        eta: extrapolation factor ``η >= 1`` of both steps (paper: 1.05).
        beta: backward step ``β`` in (0, 1] towards ``x`` after an adversarial iterate (paper: 0.9).
        n_target_classes: FAB-T: number of target classes (at most ``n_classes − 1`` are used).
        targeted: run FAB-T instead of the untargeted version.
        early_stop: drop points from the batch once broken within ``eps``.
        batch_targets: FAB-T: attack all target classes of all still-robust points as one batch (``n_target_classes``
            rows per point, up to 4096 rows at a time) instead of one pass per target; a point's rows leave together
            once it is broken within ``eps``, and of several rows that find adversarials at one step the closest
            counts. Same iterations per (point, target) as the passes, far fewer Python-level steps; False runs the
            passes one target after the other (the reference's order).
        seed: seed of the default generator (random restarts); pass ``generator=`` at call time to override.

    Shape:
        x: ``(N, *spec.shape)``, y: ``(N,)``; ``result.x_adv`` as x.

    Example:
        >>> from sparring import FAB, zoo
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> result = FAB(eps=0.1, steps=20)(target, data.x_test[:32], data.y_test[:32])
        >>> result.robust_accuracy < result.clean_accuracy
        True
    """

    name: ClassVar[str] = "fab"
    needs: ClassVar[Access] = Access.GRADIENTS
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        norm: str | Norm = "linf",
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        n_target_classes: int = 9,
        targeted: bool = False,
        early_stop: bool = True,
        batch_targets: bool = True,
        seed: int | None = 0,
    ) -> None:
        self.eps = eps
        self.norm = norm
        self.steps = steps
        self.restarts = restarts
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta
        self.n_target_classes = n_target_classes
        self.targeted = targeted
        self.early_stop = early_stop
        self.batch_targets = batch_targets
        self.seed = seed

    def _check_params(self, target: Target) -> None:
        check_eps(self.eps, Norm.parse(self.norm), target.spec)
        check_positive_int(self.steps, "steps")
        check_positive_int(self.restarts, "restarts")
        check_positive_int(self.n_target_classes, "n_target_classes")
        if not _number_in(self.alpha_max, 0.0, 1.0):
            raise ParameterError(f"alpha_max must be a number in [0, 1] (paper: 0.1); got {self.alpha_max!r}.")
        if not _number_in(self.eta, 1.0, math.inf):
            raise ParameterError(f"eta (extrapolation) must be a finite number >= 1 (paper: 1.05); got {self.eta!r}.")
        if not _number_in(self.beta, 0.0, 1.0) or float(self.beta) == 0.0:
            raise ParameterError(f"beta (backward step) must be a number in (0, 1] (paper: 0.9); got {self.beta!r}.")

    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with fast_layout(ctx, x):  # the same function, in a faster memory layout where it is exactly that
            return self._run(ctx, x, y, target_labels)

    def _run(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target = ctx.target
        assert isinstance(target, TorchTarget)
        fwd = target.differentiable(type(self).__name__)
        eps = float(self.eps)
        with target.frozen():
            with torch.no_grad():
                clean_logits = fwd(x)
            clean_pred = clean_logits.argmax(dim=1)
            goal = target_labels if target_labels is not None else y
            hit0 = clean_pred == goal if target_labels is not None else clean_pred != y
            state = _Best(x, clean_pred, hit0)
            if target_labels is not None:
                plans: list[torch.Tensor | None] = [target_labels]
            elif self.targeted:
                n_t = min(int(self.n_target_classes), clean_logits.shape[1] - 1)
                order = clean_logits.argsort(dim=1, descending=True)
                if self.batch_targets:
                    self._batched_targets(ctx, fwd, state, y, order[:, 1 : n_t + 1])
                    plans = []
                else:
                    plans = [order[:, k] for k in range(1, n_t + 1)]
            else:
                plans = [None]
            for tgt in plans:
                for restart in range(self.restarts):
                    todo = state.norm > eps if self.early_stop else state.norm > 0
                    idx = todo.nonzero().squeeze(1)
                    if idx.numel() == 0:
                        break
                    self._single_run(
                        ctx, fwd, state, idx, y[idx], None if tgt is None else tgt[idx],
                        user_targeted=target_labels is not None, random_start=restart > 0,
                    )
        broken = state.norm <= eps
        x_adv = torch.where(_col(broken, x), state.x, x)
        adv_pred = torch.where(broken, state.pred, clean_pred)
        return x_adv, clean_pred, adv_pred

    def _batched_targets(
        self, ctx: BatchContext, fwd: Forward, state: _Best, y: torch.Tensor, targets: torch.Tensor
    ) -> None:
        """FAB-T with every target of every still-robust point as one batch: rows ``(point, target)``, target-major,
        at most ``_MAX_ROWS`` at a time (one target at least); a point's rows leave together once it is broken."""
        eps = float(self.eps)
        n_t = targets.shape[1]
        for restart in range(self.restarts):
            j0 = 0
            while j0 < n_t:
                todo = state.norm > eps if self.early_stop else state.norm > 0
                idx = todo.nonzero().squeeze(1)
                m = idx.numel()
                if m == 0:
                    return
                js = list(range(j0, min(n_t, j0 + max(1, _MAX_ROWS // m))))
                j0 = js[-1] + 1
                rows = idx.repeat(len(js))
                self._single_run(ctx, fwd, state, rows, y[rows], targets[idx][:, js].T.reshape(-1),
                                 user_targeted=False, random_start=restart > 0)

    def _single_run(
        self, ctx: BatchContext, fwd: Forward, state: _Best, idx: torch.Tensor, y: torch.Tensor,
        tgt: torch.Tensor | None, *, user_targeted: bool, random_start: bool,
    ) -> None:
        """One run of Algorithm 1 on the points ``idx``; improves ``state`` in place."""
        norm, eps = Norm.parse(self.norm), float(self.eps)
        eta, beta, alpha_max = float(self.eta), float(self.beta), float(self.alpha_max)
        x0 = state.x0[idx]
        n = x0.shape[0]
        lo = ctx.lower.expand_as(x0[:1]).reshape(1, -1)
        hi = ctx.upper.expand_as(x0[:1]).reshape(1, -1)
        if random_start:
            radius = state.norm[idx].clamp(max=eps) / 2
            xa = x0 + ball_random(x0, norm, 1.0, ctx.generator) * _col(radius, x0)
            xa = torch.clamp(xa, ctx.lower, ctx.upper)
        else:
            xa = x0.clone()
        for _step in range(self.steps):
            xa.requires_grad_(True)
            logits = fwd(xa)
            if tgt is None:
                df, grad = _closest_boundary(logits, xa, y, norm)
                ctx.gradients += n * (logits.shape[1] - 1)
            else:
                rival = logits.detach().scatter(1, tgt[:, None], -math.inf).argmax(dim=1) if user_targeted else y
                df, grad = _pair_boundary(logits, xa, tgt, rival)
                ctx.gradients += n
            xa = xa.detach()
            with torch.no_grad():
                z, z0 = xa.reshape(n, -1), x0.reshape(n, -1)
                c0 = df + (grad * (z0 - z)).sum(dim=1)  # the same hyperplane, seen from the original point
                d = _min_norm_step(torch.cat((z, z0)), torch.cat((grad, grad)), torch.cat((df, c0)),
                                   lo, hi, norm)
                size = norm_of(d, norm)
                a_cur, a_orig = size[:n], size[n:]
                alpha = (a_cur / (a_cur + a_orig).clamp_min(_TINY)).clamp(0.0, alpha_max)[:, None]
                step = (1 - alpha) * (z + eta * d[:n]) + alpha * (z0 + eta * d[n:])
                xa = torch.clamp(step.reshape(x0.shape), ctx.lower, ctx.upper)
                pred = fwd(xa).argmax(dim=1)
                hit: torch.Tensor = pred == tgt if user_targeted and tgt is not None else pred != y
                if bool(hit.any()):
                    dist = norm_of(xa - x0, norm)
                    better = hit & (dist < state.norm[idx])
                    if bool(better.any()):
                        # several rows of one point (FAB-T with batched targets): the closest of them wins
                        low = torch.full_like(state.norm, math.inf).scatter_reduce(
                            0, idx[better], dist[better], reduce="amin")
                        better &= dist <= low[idx]
                        where = idx[better]
                        state.x[where], state.norm[where], state.pred[where] = xa[better], dist[better], pred[better]
                    xa = torch.where(_col(hit, xa), x0 + beta * (xa - x0), xa)
                if self.early_stop:
                    keep = state.norm[idx] > eps
                    if not bool(keep.all()):
                        idx, xa, x0, y = idx[keep], xa[keep], x0[keep], y[keep]
                        tgt = None if tgt is None else tgt[keep]
                        n = idx.numel()
                        if n == 0:
                            return


class _Best:
    """The closest adversarial found so far per point (norm ``inf`` where none; 0 where the input already errs)."""

    def __init__(self, x0: torch.Tensor, clean_pred: torch.Tensor, already: torch.Tensor) -> None:
        self.x0 = x0
        self.x = x0.clone()
        self.pred = clean_pred.clone()
        self.norm = torch.full((x0.shape[0],), math.inf, device=x0.device, dtype=x0.dtype)
        self.norm[already] = 0.0


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def _number_in(value: object, low: float, high: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(float(value)) and low <= float(value) <= high


def _dual_norm(g: torch.Tensor, norm: Norm) -> torch.Tensor:
    """``||g||_q`` per row, ``q`` the dual of ``norm`` (L1 for L∞, L2 for L2)."""
    return g.abs().sum(dim=1) if norm is Norm.LINF else torch.linalg.vector_norm(g, ord=2, dim=1)


def _closest_boundary(
    logits: torch.Tensor, xa: torch.Tensor, y: torch.Tensor, norm: Norm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Untargeted FAB: over classes ``l != y``, the logit difference ``f_l − f_y`` and its input gradient for the
    class whose linearised boundary is nearest (eq. 6). One backward pass per class, keeping only the running best,
    so memory stays ``O(N·D)`` whatever the number of classes."""
    n, k = logits.shape
    rows = torch.arange(n, device=logits.device)
    flat = logits.detach()
    best_dist = torch.full((n,), math.inf, device=flat.device, dtype=flat.dtype)
    best_df = torch.zeros(n, device=flat.device, dtype=flat.dtype)
    best_g = torch.zeros(n, xa[0].numel(), device=flat.device, dtype=flat.dtype)
    for j in range(k - 1):
        other = j + (j >= y).long()  # the j-th class other than y, per example
        seed = torch.zeros_like(flat)
        seed[rows, other] = 1.0
        seed[rows, y] = -1.0
        (g,) = torch.autograd.grad(logits, xa, grad_outputs=seed, retain_graph=j < k - 2)
        g = g.reshape(n, -1)
        df = flat[rows, other] - flat[rows, y]
        dist = df.abs() / (_dual_norm(g, norm) + _TINY)
        closer = dist < best_dist
        best_dist = torch.where(closer, dist, best_dist)
        best_df = torch.where(closer, df, best_df)
        best_g = torch.where(closer[:, None], g, best_g)
    return best_df, best_g


def _pair_boundary(
    logits: torch.Tensor, xa: torch.Tensor, tgt: torch.Tensor, rival: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """FAB-T: ``f_t − f_r`` and its input gradient (one backward pass for the whole batch)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    diff = logits[rows, tgt] - logits[rows, rival]
    (g,) = torch.autograd.grad(diff.sum(), xa)
    return diff.detach(), g.reshape(g.shape[0], -1)


def _min_norm_step(
    t: torch.Tensor, w: torch.Tensor, c: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, norm: Norm
) -> torch.Tensor:
    """Smallest ``δ`` (rows ``(M, D)``) with ``⟨w, δ⟩ + c = 0`` and ``lower <= t + δ <= upper``, ``c`` the value of
    the affine function at ``t``. Exact, batched, ``O(D log D)`` per row.

    Flip ``w`` so that ``⟨w, δ⟩`` must rise by ``s = |c|``. By the KKT conditions the optimum is ``δ(τ) =
    clip(τ v, l, u)`` for some ``τ >= 0``, with ``v = w`` (L2) or ``v = sign(w)`` (L∞) and ``l, u`` the distances to
    the bounds. ``φ(τ) = ⟨w, δ(τ)⟩`` is piecewise linear and non-decreasing, with a kink where each coordinate
    reaches its bound; sorting the kinks gives ``φ`` at every kink by cumulative sums, and ``φ(τ) = s`` is solved
    exactly on the segment that contains ``s``. If even the best corner of the box falls short of the hyperplane,
    that corner (the box point nearest to it along ``w``) is returned.
    """
    w = torch.where((c > 0)[:, None], -w, w)
    s = c.abs()
    l_ = (lower - t).clamp(max=0.0)
    u_ = (upper - t).clamp(min=0.0)
    v = w.sign() if norm is Norm.LINF else w
    end = torch.where(v > 0, u_, torch.where(v < 0, l_, torch.zeros_like(v)))  # where each coordinate saturates
    kink = torch.where(v != 0, end / torch.where(v != 0, v, torch.ones_like(v)), torch.full_like(v, math.inf))
    kink, order = kink.sort(dim=1)
    gain = (w * end).gather(1, order)  # contribution of a saturated coordinate (>= 0)
    slope = (w * v).gather(1, order)  # d⟨w, δ⟩/dτ of an unsaturated coordinate (>= 0)
    gained = gain.cumsum(dim=1)
    tail = slope.flip(1).cumsum(dim=1).flip(1)  # slope of the coordinates from this kink on
    rest = torch.cat((tail[:, 1:], torch.zeros_like(tail[:, :1])), dim=1)
    phi = gained + torch.where(torch.isfinite(kink), kink, torch.zeros_like(kink)) * rest
    k = (phi < s[:, None]).sum(dim=1)  # the root lies between kink k-1 and kink k
    feasible = k < w.shape[1]
    kc = k.clamp(max=w.shape[1] - 1)[:, None]
    before = (gained.gather(1, kc) - gain.gather(1, kc)).squeeze(1)
    tau = ((s - before) / tail.gather(1, kc).squeeze(1).clamp_min(_TINY)).clamp_min(0.0)
    step = torch.minimum(torch.maximum(tau[:, None] * v, l_), u_)
    return torch.where(feasible[:, None], step, end)


def project_hyperplane_box(
    points: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    lower: torch.Tensor | float,
    upper: torch.Tensor | float,
    norm: str | Norm,
) -> torch.Tensor:
    """Project each point onto ``{z : ⟨w, z⟩ + b = 0} ∩ [lower, upper]`` in the L∞ or L2 norm (the projection
    step of FAB, Croce & Hein 2020, sec. 3.1 and appendix). Exact and batched.

    Args:
        points: ``(N, D)`` points inside the box.
        w: ``(N, D)`` hyperplane normals; b: ``(N,)`` offsets.
        lower, upper: box bounds, numbers or tensors broadcastable to ``(N, D)``.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``(N, D)`` projected points. Where the hyperplane does not meet the box, the box corner closest to it.

    Example:
        >>> import torch
        >>> p = project_hyperplane_box(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([-1.0]), 0.0, 1.0, "l2")
        >>> p.tolist()
        [[0.5, 0.5]]
    """
    nrm = Norm.parse(norm)
    if points.ndim != 2 or w.shape != points.shape or b.shape != points.shape[:1]:
        raise ParameterError(
            f"points and w must be (N, D) and b (N,); got {tuple(points.shape)}, {tuple(w.shape)}, {tuple(b.shape)}."
        )
    lo = torch.as_tensor(lower, dtype=points.dtype, device=points.device).expand_as(points)
    hi = torch.as_tensor(upper, dtype=points.dtype, device=points.device).expand_as(points)
    c = (w * points).sum(dim=1) + b
    return points + _min_norm_step(points, w, c, lo, hi, nrm)
