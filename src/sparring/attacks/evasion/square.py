"""Square Attack (Andriushchenko, Croce, Flammarion, Hein 2020): score-based random search, L∞ and L2."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import ClassVar

import torch

from sparring.attacks.base import BatchContext, EvasionAttack
from sparring.attacks.evasion._checks import check_eps, check_positive_int
from sparring.attacks.losses import get_loss, margin
from sparring.attacks.norms import Norm
from sparring.errors import ParameterError, QueryBudgetExceeded
from sparring.targets.base import Target
from sparring.targets.spec import Access, InputSpec

__all__ = ["Square", "p_schedule"]

_LOG_FLOOR = 1e-12  # probabilities read as 0 (top-k, rounding) become log(1e-12) instead of -inf
_MAX_RESAMPLE = 10  # L∞: redraws of a window's signs when the candidate would not change the image
_TINY = 1e-12
# The reference's piecewise-constant schedule: (iteration on a 10 000-query scale, divisor of p_init).
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """Fraction of the image changed at iteration ``it`` (Andriushchenko et al. 2020, sec. 3; the reference's
    ``p_selection``): ``p_init`` halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a
    10 000-query run, those breakpoints rescaled to ``n_queries``."""
    k = int(it / n_queries * 10000)
    for bound, div in _SCHEDULE:
        if k <= bound:
            return p_init / div
    return p_init / 512


class Square(EvasionAttack):
    r"""Square Attack, L∞ or L2 (Andriushchenko, Croce, Flammarion, Hein 2020, "Square Attack: a query-efficient
    black-box adversarial attack via random search", Algorithms 1–3).

    Threat model: score-based black box (``Access.SCORES``; never gradients), untargeted or targeted, L∞ or L2
    budget ``eps`` in raw input space.

    Random search on the margin loss: each iteration proposes one change inside a random square window of side
    ``s`` (``s² ≈ p·H·W``, ``p`` from :func:`p_schedule`) and keeps it unless the loss gets worse. (The reference
    keeps strict improvements only; keeping ties too changes nothing on exact scores, but lets the search drift
    across the flat regions of rounded or top-k scores instead of stalling there.)

    * L∞: start from vertical stripes of ±eps (one sign per channel and column); a proposal sets a window to
      ±eps, one random sign per channel (redrawn if it would leave the image unchanged).
    * L2: start from a grid of ±"meta-pixels" (two opposite pseudo-Gaussian bumps per square) scaled to norm eps; a
      proposal puts a fresh meta-pixel in window 1, zeroes window 2, and rebalances the norm so the whole
      perturbation keeps norm eps (Algorithm 3).

    Loss: ``loss="margin"`` (default) is the margin ``max_{j≠y} z_j − z_y`` (targeted: ``z_t − max_{j≠t} z_j``) and
    ``"ce"`` the cross-entropy, where ``z`` are the scores if the target returns logits and the
    log-probabilities if it returns probabilities (``target.view_output``; zeros from a top-k or rounded view read
    as ``log 1e-12``). An example counts as broken only when its margin is strictly positive, so ties in rounded
    scores never count as success; it then leaves the batch (early stop).

    Inputs that are not images with both sides ≥ 5 (flat tabular features, tiny images) have no squares: there a
    "window" is a random subset of ``round(p·d)`` coordinates, with one random sign per coordinate (L∞) or random
    signs scaled to unit norm in place of the meta-pixel (L2). Per-feature bounds are always respected.

    Cost: one query per example for the clean prediction, one for the initial point, then at most
    ``n_queries − 1`` iterations of one query per example still unbroken (so at most ``n_queries + 1`` per example).
    When the target's query budget would be crossed, the attack stops before sending (nothing is overspent),
    returns what it found so far, and sets ``result.extras["budget_exhausted"] = True`` (and ``"unattacked"``:
    examples that never got a clean prediction). Every example not broken by then is ``result.unknown``: not
    robust, since the search did not finish with it. On a randomized model (``ctx.randomized``) no example stops
    at a positive margin on one draw; all search for ``n_queries`` and the base re-scores the best points.

    Args:
        eps: budget (radius of the norm ball), e.g. ``0.2`` for L∞ on 0-1 digits.
        norm: ``"linf"`` or ``"l2"``.
        n_queries: queries per example after the clean one (the paper's query limit; sets the p schedule).
        p_init: initial fraction of the image changed per step (paper: 0.8 on MNIST, 0.05 L∞ / 0.1 L2 on
            ImageNet).
        loss: ``"margin"`` or ``"ce"``.
        seed: seed of the default generator; pass ``generator=`` at call time to override.

    Shape:
        x: ``(N, *spec.shape)``, y: ``(N,)``; ``result.x_adv`` as x (the best point found: adversarial where
        ``success``, else the lowest-loss point within ``eps``).

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.evasion.square import Square
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> result = Square(eps=0.2, n_queries=1000)(target, data.x_test[:32], data.y_test[:32])
        >>> result.robust_accuracy < 0.2
        True
    """

    name: ClassVar[str] = "square"
    needs: ClassVar[Access] = Access.SCORES
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)

    def __init__(
        self,
        *,
        eps: float,
        norm: str | Norm = "linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        loss: str = "margin",
        seed: int | None = 0,
    ) -> None:
        self.eps = eps
        self.norm = norm
        self.n_queries = n_queries
        self.p_init = p_init
        self.loss = loss
        self.seed = seed

    def _check_params(self, target: Target) -> None:
        check_eps(self.eps, Norm.parse(self.norm), target.spec)
        check_positive_int(self.n_queries, "n_queries")
        p = self.p_init
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1:
            raise ParameterError(f"p_init (fraction of the image changed per step) must be in (0, 1]; got {p!r}.")
        get_loss(self.loss)

    # ------------------------------------------------------------------ the search
    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        norm, eps = Norm.parse(self.norm), float(self.eps)
        loss_fn = get_loss(self.loss)
        targeted = target_labels is not None
        goal = target_labels if target_labels is not None else y
        view = _View(ctx.target.spec)
        xc = view.to(x)
        lo, hi = view.to(ctx.lower.expand(1, *x.shape[1:])), view.to(ctx.upper.expand(1, *x.shape[1:]))
        if norm is Norm.LINF:  # the ball and the bounds intersect to one box
            lo, hi = torch.maximum(xc - eps, lo), torch.minimum(xc + eps, hi)
        x_best = xc.clone()
        clean_pred, adv_pred = y.clone(), y.clone()
        try:
            z = _log_scores(ctx, x)
        except QueryBudgetExceeded:
            _note_exhausted(ctx, unattacked=x.shape[0])
            ctx.mark_unknown(torch.ones(x.shape[0], dtype=torch.bool, device=x.device))
            return x.clone(), clean_pred, adv_pred
        clean_pred = z.argmax(dim=1)
        done = margin(z, goal, targeted) > 0
        # a randomized model: one draw's positive margin proves nothing, so every example searches to the end
        # (the base re-scores the best point over fresh draws)
        stop = done.clone() if not ctx.randomized else torch.zeros_like(done)
        adv_pred = _pred(z, goal, targeted, done)
        best_loss = torch.full((x.shape[0],), -math.inf, device=x.device)

        def evaluate(idx: torch.Tensor, cand: torch.Tensor, always: bool) -> None:
            zs = _log_scores(ctx, view.back(cand))
            g = goal[idx]
            loss, hit = loss_fn(zs, g, targeted), margin(zs, g, targeted) > 0
            better = hit | (loss >= best_loss[idx]) | always
            x_best[idx[better]] = cand[better]
            best_loss[idx[better]] = loss[better]
            done[idx[hit]] = True
            if not ctx.randomized:
                stop[idx[hit]] = True
            adv_pred[idx] = torch.where(better, _pred(zs, g, targeted, hit), adv_pred[idx])

        try:
            idx = (~stop).nonzero().squeeze(1)
            if idx.numel():
                evaluate(idx, self._init(view, xc[idx], _rows(lo, idx), _rows(hi, idx), norm, eps, ctx), True)
            for it in range(self.n_queries - 1):
                idx = (~stop).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                p = p_schedule(float(self.p_init), it, self.n_queries)
                args = (view, xc[idx], x_best[idx], _rows(lo, idx), _rows(hi, idx), p, eps, ctx.generator)
                cand = _linf_step(*args) if norm is Norm.LINF else _l2_step(*args)
                evaluate(idx, cand, False)
        except QueryBudgetExceeded:
            _note_exhausted(ctx, unattacked=0)
            ctx.mark_unknown(~done)  # the search stopped before these were done with: not robust, unknown
        return view.back(x_best), clean_pred, adv_pred

    def _init(
        self, view: _View, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, norm: Norm, eps: float,
        ctx: BatchContext,
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        gen = ctx.generator
        if norm is Norm.LINF:
            shape = (n, c, 1, w) if view.square else x.shape
            return torch.clamp(x + eps * _signs(shape, x, gen), lo, hi)
        if not view.square:
            delta = _signs(x.shape, x, gen)
        else:
            s = min(h, w) // 5
            delta = torch.zeros_like(x)
            off_h, off_w = (h - (h // s) * s) // 2, (w - (w // s) * s) // 2
            for top in range(off_h, off_h + (h // s) * s, s):
                for left in range(off_w, off_w + (w // s) * s, s):
                    bump = _meta_pixel(s, x)[int(torch.randint(0, 2, (1,), generator=gen, device=x.device))]
                    delta[:, :, top : top + s, left : left + s] += bump * _signs((n, c, 1, 1), x, gen)
        return torch.clamp(x + delta * (eps / _l2(delta).clamp_min(_TINY)), lo, hi)


# ---------------------------------------------------------------------------------------------- one proposal
def _linf_step(
    view: _View, x: torch.Tensor, x_best: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, p: float, eps: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Set one random window to ±eps (one sign per channel; per coordinate without squares), within the box."""
    n, c, h, w = x.shape
    if view.square:
        s = min(max(round(math.sqrt(p * h * w)), 1), min(h, w) - 1)
        mask, _, _ = _square_mask(n, s, h, w, gen, x.device)
        sign_shape: tuple[int, ...] = (n, c, 1, 1)
    else:
        mask = _subset_mask(n, w, max(1, round(p * w)), gen, x.device)
        sign_shape = tuple(x.shape)
    signs = _signs(sign_shape, x, gen)
    cand = x_best
    for _ in range(_MAX_RESAMPLE):  # the reference redraws until the window really changes
        cand = torch.where(mask, torch.clamp(x + eps * signs, lo, hi), x_best)
        same = (cand == x_best).flatten(1).all(dim=1)
        if not bool(same.any()):
            break
        signs = torch.where(same.view(-1, 1, 1, 1), _signs(sign_shape, x, gen), signs)
    return cand


def _l2_step(
    view: _View, x: torch.Tensor, x_best: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, p: float, eps: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Algorithm 3: a new meta-pixel in window 1, window 2 zeroed, per-channel norms rebalanced to keep ``eps``."""
    n, c, h, w = x.shape
    delta = x_best - x
    if view.square:
        s = max(round(math.sqrt(p * h * w)), 3)
        s = min(s + 1 if s % 2 == 0 else s, min(h, w) - 1)
        m1, vh, vw = _square_mask(n, s, h, w, gen, x.device)
        m2, _, _ = _square_mask(n, s, h, w, gen, x.device)
        pats = _meta_pixel(s, x)[torch.randint(0, 2, (n,), generator=gen, device=x.device)]  # random transpose
        ih = (torch.arange(h, device=x.device) - vh[:, None]).clamp(0, s - 1)
        iw = (torch.arange(w, device=x.device) - vw[:, None]).clamp(0, s - 1)
        pattern = pats[torch.arange(n, device=x.device)[:, None, None], ih[:, :, None], iw[:, None, :]][:, None]
        pattern = pattern * m1 * _signs((n, c, 1, 1), x, gen)
    else:
        k = max(1, round(p * w))
        m1, m2 = _subset_mask(n, w, k, gen, x.device), _subset_mask(n, w, k, gen, x.device)
        pattern = _signs(tuple(x.shape), x, gen) * m1 / math.sqrt(k)
    win_norm = _channel_norm(delta * m1)
    image_norm = _l2(delta)
    both_norm = _channel_norm(delta * (m1 | m2))
    new = pattern + delta * m1 / (win_norm + 1e-10)
    budget = ((eps**2 - image_norm**2).clamp_min(0) / c + both_norm**2).sqrt()
    new = new / _channel_norm(new).clamp_min(_TINY) * budget
    delta = torch.where(m1, new, torch.where(m2, torch.zeros_like(delta), delta))
    return torch.clamp(x + delta * (eps / _l2(delta).clamp_min(_TINY)), lo, hi)


# ---------------------------------------------------------------------------------------------- helpers
class _View:
    """Maps a batch to ``(N, C, H, W)``: chw as is, hwc permuted; anything else (flat features, images with a side
    below 5) becomes ``(N, 1, 1, d)``, where windows are random subsets of coordinates (``square`` is False)."""

    def __init__(self, spec: InputSpec) -> None:
        self.shape = spec.shape
        self.layout = spec.layout
        sides = spec.shape[1:] if spec.layout == "chw" else spec.shape[:2]
        self.square = spec.layout in ("chw", "hwc") and min(sides) >= 5

    def to(self, t: torch.Tensor) -> torch.Tensor:
        if self.square:
            return t.permute(0, 3, 1, 2) if self.layout == "hwc" else t
        return t.reshape(t.shape[0], 1, 1, -1)

    def back(self, t: torch.Tensor) -> torch.Tensor:
        if self.square:
            return t.permute(0, 2, 3, 1) if self.layout == "hwc" else t
        return t.reshape(t.shape[0], *self.shape)


def _log_scores(ctx: BatchContext, x: torch.Tensor) -> torch.Tensor:
    """Scores from the target (counted), as logits or log-probabilities, on ``x``'s device. Never overspends."""
    remaining = ctx.target.counter.remaining
    if remaining is not None and remaining < x.shape[0]:
        c = ctx.target.counter
        raise QueryBudgetExceeded(
            f"query budget exhausted: {c.used} of {c.budget} used, Square needs {x.shape[0]} more.",
            used=c.used, budget=c.budget or 0, requested=x.shape[0],
        )
    s = ctx.target.query(x).to(x.device, torch.float32)
    return s.clamp_min(_LOG_FLOOR).log() if ctx.target.view_output == "probabilities" else s


def _pred(z: torch.Tensor, goal: torch.Tensor, targeted: bool, hit: torch.Tensor) -> torch.Tensor:
    """The predicted class, resolving ties against the attacker: an unbroken example keeps a class that does not
    meet the goal (its own label untargeted; the best non-target class targeted)."""
    if targeted:
        other = z.scatter(1, goal[:, None], -math.inf).argmax(dim=1)
        return torch.where(hit, goal, other)
    return torch.where(hit, z.argmax(dim=1), goal)


def _note_exhausted(ctx: BatchContext, unattacked: int) -> None:
    notes = getattr(ctx, "notes", None)
    if notes is not None:
        notes["budget_exhausted"] = True
        notes["unattacked"] = int(notes.get("unattacked", 0)) + unattacked


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return t[idx] if t.shape[0] > 1 else t


def _signs(shape: tuple[int, ...] | torch.Size, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    bits = torch.randint(0, 2, tuple(shape), generator=gen, device=like.device)
    return bits.to(like.dtype) * 2 - 1


def _l2(t: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = torch.linalg.vector_norm(t.flatten(1), dim=1)
    return out.view(-1, 1, 1, 1)


def _channel_norm(t: torch.Tensor) -> torch.Tensor:
    return t.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()


def _square_mask(
    n: int, s: int, h: int, w: int, gen: torch.Generator, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random ``s×s`` window per example: a mask ``(n, 1, h, w)`` and the top-left corners."""
    vh = torch.randint(0, h - s, (n,), generator=gen, device=dev)
    vw = torch.randint(0, w - s, (n,), generator=gen, device=dev)
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = (ar_h >= vh[:, None]) & (ar_h < vh[:, None] + s)
    cols = (ar_w >= vw[:, None]) & (ar_w < vw[:, None] + s)
    return (rows[:, :, None] & cols[:, None, :])[:, None], vh, vw


def _subset_mask(n: int, d: int, k: int, gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    """``k`` random coordinates out of ``d`` per example, as a mask ``(n, 1, 1, d)``."""
    idx = torch.rand(n, d, generator=gen, device=dev).topk(k, dim=1).indices
    return torch.zeros(n, d, dtype=torch.bool, device=dev).scatter(1, idx, True)[:, None, None]


def _meta_pixel(s: int, like: torch.Tensor) -> torch.Tensor:
    """The meta-pixel and its transpose, ``(2, s, s)``: two pseudo-Gaussian bumps of opposite sign, unit norm."""
    return _meta_pixel_cpu(s).to(like.device, like.dtype)


@lru_cache(maxsize=64)
def _meta_pixel_cpu(s: int) -> torch.Tensor:
    m = torch.zeros(s, s, dtype=torch.float64)
    m[: s // 2] = _bump(s // 2, s)
    m[s // 2 :] = -_bump(s - s // 2, s)
    m /= torch.linalg.vector_norm(m)
    return torch.stack([m, m.T.contiguous()])


def _bump(a: int, b: int) -> torch.Tensor:
    """The reference's ``pseudo_gaussian_pert_rectangles``: nested rectangles weighted ``1/(k+1)²``, unit norm."""
    out = torch.zeros(a, b, dtype=torch.float64)
    if a == 0:
        return out
    ca, cb = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        out[max(ca, 0) : min(ca + 2 * k + 1, a), max(cb, 0) : min(cb + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
        ca, cb = ca - 1, cb - 1
    unit: torch.Tensor = out / torch.linalg.vector_norm(out)
    return unit
