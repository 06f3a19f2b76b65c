"""HopSkipJump (Chen, Jordan, Wainwright 2020): decision-based attack from predicted labels only, L2 and L∞."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from sparring.attacks.base import BatchContext, EvasionAttack
from sparring.attacks.evasion._checks import check_eps, check_positive_int
from sparring.attacks.norms import Norm, norm_of
from sparring.errors import ParameterError, QueryBudgetExceeded
from sparring.targets.base import Target
from sparring.targets.spec import Access

__all__ = ["HopSkipJump"]

_INIT_TRIES = 25  # rounds of uniform-noise draws when looking for a starting point
_BLEND_STEPS = 10  # binary search of the noise blend to 2**-10 (the reference stops below 0.001)
_MAX_HALVINGS = 20  # geometric step-size search: at most this many halvings, then the example skips the step
_MC_ELEMENTS = 2**24  # floats per Monte Carlo chunk (examples are grouped to stay under it)
_TINY = 1e-12


class HopSkipJump(EvasionAttack):
    r"""HopSkipJumpAttack, L2 or L∞ (Chen, Jordan, Wainwright 2020, "HopSkipJumpAttack: a query-efficient
    decision-based attack", Algorithm 2; the authors' reference ``hsja.py``).

    Threat model: decision-based black box (``Access.LABELS``: only ``target.query_labels``), untargeted or
    targeted, minimising the L2 or L∞ distance to the input.

    Per example, batched: find an adversarial starting point, binary-search to the decision boundary, then
    ``max_iter`` times: estimate the boundary's normal at the current point by Monte Carlo (``init_evals·√j``
    random directions at iteration ``j``, capped at ``max_evals``, radius ``δ`` as in the paper: ``0.1·range`` at
    the first step, then ``√d·θ·dist`` for L2 and ``d·θ·dist`` for L∞ with ``θ = γ/d^{3/2}`` resp. ``γ/d²``,
    baseline-subtracted, eq. 16), step along it (its sign for L∞) with a geometric step search starting at
    ``dist/√j``, and binary-search back to the boundary (Algorithm 1's projection: blend for L2, clip for L∞).
    The closest adversarial point found so far is kept, so the norm never grows.

    Starting points (a documented departure from the reference, which draws uniform noise): the nearest other
    input of the same batch (in the attack's norm) whose clean prediction already meets the goal — another class
    untargeted, the target class targeted; known from the clean query, so free. On the digits CNN this halves the
    starting distance (median L2 ≈ 3.2 against ≈ 9.6 from noise) and so the queries to reach a given ``eps``.
    Where the batch has no such input, up to 25 rounds of uniform noise within the bounds (the reference). The
    start is then blended towards the input by binary search, as in the reference. An example with no start is a
    failure (``result.extras["no_start"]`` counts them): for targeted runs, include inputs of each target class.

    Success: with ``eps=None``, reaching the goal (``x_adv`` is then the closest adversarial point found, ``norms``
    its distance). With ``eps``, an adversarial point with norm ≤ ``eps`` (robust accuracy at that budget):
    examples stop as soon as they get there, and where they do not ``x_adv`` is the input itself.
    ``result.extras["best_norms"]`` lists, per example, the smallest adversarial distance found (``inf``: none,
    ``0``: already misclassified), and ``"start_norms"`` the distance of the first boundary point (after the
    start-up binary searches), so the progress the iterations made can be read off.

    Cost, per example: 1 query for the clean label, up to 25 noise tries, ``10 + ⌈log2(1/θ)⌉`` for the first
    binary searches, then per iteration ``num_evals`` + the step search (≤ 20) + the binary search. ``max_queries``
    bounds that per example: an example stops before an iteration that could take it past ``max_queries``.
    When the target's query budget would be crossed the attack stops before sending, returns the best points found
    so far, and sets ``result.extras["budget_exhausted"] = True`` (and ``"unattacked"``, examples that never got a
    clean label). Every example not broken and not yet done with (by ``eps``, ``max_queries`` or ``max_iter``) is
    then ``result.unknown``: not robust, since the search was cut short.

    Args:
        norm: ``"l2"`` or ``"linf"``.
        max_queries: per-example query cap for the iterations, or ``None`` for only ``max_iter``.
        max_iter: iterations (gradient estimate + step + binary search), the reference's ``num_iterations``.
        init_evals: Monte Carlo directions at the first iteration.
        max_evals: cap on Monte Carlo directions per iteration.
        gamma: sets the binary-search precision θ (larger is coarser and cheaper).
        eps: if given, success means an adversarial point within ``eps`` (see above).
        seed: seed of the default generator; pass ``generator=`` at call time to override.

    Shape:
        x: ``(N, *spec.shape)``, y: ``(N,)``; ``result.x_adv`` as x.

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.evasion.hopskipjump import HopSkipJump
        >>> from sparring.targets import Access
        >>> target, data = zoo.load("digits-cnn", access=Access.LABELS), zoo.data("digits-cnn")
        >>> result = HopSkipJump(eps=3.5, max_queries=2500)(target, data.x_test[:16], data.y_test[:16])
        >>> result.robust_accuracy <= 0.1
        True
    """

    name: ClassVar[str] = "hopskipjump"
    needs: ClassVar[Access] = Access.LABELS
    norms: ClassVar[tuple[Norm, ...]] = (Norm.L2, Norm.LINF)

    def __init__(
        self,
        *,
        norm: str | Norm = "l2",
        max_queries: int | None = None,
        max_iter: int = 40,
        init_evals: int = 100,
        max_evals: int = 10000,
        gamma: float = 1.0,
        eps: float | None = None,
        seed: int | None = 0,
    ) -> None:
        self.norm = norm
        self.max_queries = max_queries
        self.max_iter = max_iter
        self.init_evals = init_evals
        self.max_evals = max_evals
        self.gamma = gamma
        self.eps = eps
        self.seed = seed

    def _check_params(self, target: Target) -> None:
        norm = Norm.parse(self.norm)
        if self.max_queries is not None:
            check_positive_int(self.max_queries, "max_queries")
        check_positive_int(self.max_iter, "max_iter")
        check_positive_int(self.init_evals, "init_evals")
        check_positive_int(self.max_evals, "max_evals")
        g = self.gamma
        if isinstance(g, bool) or not isinstance(g, int | float) or not math.isfinite(g) or g <= 0:
            raise ParameterError(f"gamma must be a finite number > 0 (the reference uses 1.0); got {g!r}.")
        if self.eps is not None:
            check_eps(self.eps, norm, target.spec)

    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        search = _Search(self, ctx, x, y, target_labels)
        try:
            search.run()
            search.finished[:] = True
        except QueryBudgetExceeded:
            notes = getattr(ctx, "notes", None)
            if notes is not None:
                notes["budget_exhausted"] = True
        out = search.result()
        if not bool(search.finished.all()):  # the budget stopped the search: unbroken unfinished points are unknown
            ctx.mark_unknown(~search.finished & ~search.succeeded())
        return out


class _Search:
    """The state of one batch: the closest adversarial point per example, and the current boundary point."""

    def __init__(
        self, attack: HopSkipJump, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, tl: torch.Tensor | None
    ) -> None:
        self.a, self.ctx, self.x, self.y = attack, ctx, x, y
        self.norm = Norm.parse(attack.norm)
        self.targeted = tl is not None
        self.goal = tl if tl is not None else y
        n, d = x.shape[0], x[0].numel()
        self.d = d
        self.theta = attack.gamma / (d * math.sqrt(d)) if self.norm is Norm.L2 else attack.gamma / d**2
        self.width = float((ctx.upper - ctx.lower).max())
        self.bsearch_steps = math.ceil(math.log2(1 / self.theta)) + 1
        self.spent = torch.zeros(n, dtype=torch.long, device=x.device)
        self.clean: torch.Tensor | None = None
        self.best, self.best_lab = x.clone(), y.clone()
        self.best_norm = torch.full((n,), math.inf, device=x.device)
        self.cur, self.cur_lab = x.clone(), y.clone()
        self.dist = torch.full((n,), math.inf, device=x.device)
        self.dist_post = torch.zeros(n, device=x.device)
        self.alive = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.start_norm = torch.full((n,), math.inf, device=x.device)
        self.finished = torch.zeros(n, dtype=torch.bool, device=x.device)  # done with: broken, capped, or no start

    # ------------------------------------------------------------------ queries
    def labels(self, xs: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Labels from the target (counted to it and, per example, to ``owners``). Never overspends."""
        counter = self.ctx.target.counter
        if counter.remaining is not None and counter.remaining < xs.shape[0]:
            raise QueryBudgetExceeded(
                f"query budget exhausted: {counter.used} of {counter.budget} used, HopSkipJump needs "
                f"{xs.shape[0]} more.", used=counter.used, budget=counter.budget or 0, requested=xs.shape[0],
            )
        out = self.ctx.target.query_labels(xs).to(self.x.device)
        self.spent.index_add_(0, owners, torch.ones_like(owners))
        return out

    def is_adv(self, labels: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return labels == goal if self.targeted else labels != goal

    # ------------------------------------------------------------------ the attack
    def run(self) -> None:
        a, x = self.a, self.x
        all_idx = torch.arange(x.shape[0], device=x.device)
        self.clean = self.labels(x, all_idx)
        done0 = self.is_adv(self.clean, self.goal)
        self.finished |= done0
        self.best_norm[done0] = 0.0
        self.start_norm[done0] = 0.0
        self.best_lab = self.clean.clone()
        idx = all_idx[~done0]
        if idx.numel() == 0:
            return
        start, lab, found = self.starts(idx)
        notes = getattr(self.ctx, "notes", None)
        if notes is not None and not bool(found.all()):
            notes["no_start"] = int(notes.get("no_start", 0)) + int((~found).sum())
        self.finished[idx[~found]] = True  # no starting point: a failure, but a finished one
        idx, start, lab = idx[found], start[found], lab[found]
        if idx.numel() == 0:
            return
        start, lab = self.blend(idx, start, lab)
        self.land(idx, *self.boundary(idx, start, lab))
        self.start_norm[idx] = self.dist[idx]
        self.alive[idx] = True
        for j in range(1, a.max_iter + 1):
            n_evals = min(int(a.init_evals * math.sqrt(j)), a.max_evals)
            alive = self.alive.clone()
            if a.eps is not None:
                alive &= self.best_norm > float(a.eps)
            if a.max_queries is not None:
                alive &= self.spent + n_evals + _MAX_HALVINGS + self.bsearch_steps <= a.max_queries
            self.finished |= self.alive & ~alive  # reached eps or its own per-example cap
            idx = all_idx[alive]
            if idx.numel() == 0:
                break
            if j == 1:
                delta = torch.full((idx.numel(),), 0.1 * self.width, device=x.device)
            else:
                scale = math.sqrt(self.d) if self.norm is Norm.L2 else self.d
                delta = scale * self.theta * self.dist_post[idx]
            grad = self.gradient(idx, delta, n_evals)
            update = grad.sign() if self.norm is Norm.LINF else grad
            ok, pert, plab = self.step(idx, update, j)
            if bool(ok.any()):
                self.land(idx[ok], *self.boundary(idx[ok], pert[ok], plab[ok]))

    def starts(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A point meeting the goal for each example in ``idx`` (where one is found): batch inputs or noise."""
        x, g, clean = self.x, self.goal[idx], self.clean
        assert clean is not None
        start, lab = x[idx].clone(), g.clone()
        # the nearest input of the batch whose clean prediction already meets the goal (no query needed)
        cand = self.is_adv(clean[None, :], g[:, None])  # (examples, batch members)
        dist = torch.cdist(x[idx].flatten(1), x.flatten(1), p=2.0 if self.norm is Norm.L2 else math.inf)
        pick = torch.where(cand, dist, torch.full_like(dist, math.inf)).argmin(dim=1)
        found = cand.any(dim=1)
        start[found], lab[found] = x[pick[found]], clean[pick[found]]
        # else uniform noise within the bounds, as the reference does
        lo, hi = self.ctx.lower, self.ctx.upper
        for _ in range(_INIT_TRIES):
            pend = (~found).nonzero().squeeze(1)
            if pend.numel() == 0:
                break
            u = torch.rand((pend.numel(), *x.shape[1:]), generator=self.ctx.generator, device=x.device, dtype=x.dtype)
            noise = lo + (hi - lo) * u
            lb = self.labels(noise, idx[pend])
            hit = self.is_adv(lb, g[pend])
            start[pend[hit]], lab[pend[hit]], found[pend[hit]] = noise[hit], lb[hit], True
        return start, lab, found

    def blend(self, idx: torch.Tensor, start: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's initial binary search on ``(1 − α)·x + α·start``, α to within 2**-10."""
        x0, g = self.x[idx], self.goal[idx]
        lows = torch.zeros(idx.numel(), device=x0.device)
        highs = torch.ones_like(lows)
        for _ in range(_BLEND_STEPS):
            mids = (lows + highs) / 2
            lb = self.labels(x0 + _col(mids, x0) * (start - x0), idx)
            hit = self.is_adv(lb, g)
            highs, lows = torch.where(hit, mids, highs), torch.where(hit, lows, mids)
            lab = torch.where(hit, lb, lab)
        return x0 + _col(highs, x0) * (start - x0), lab

    def project(self, x0: torch.Tensor, xp: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Algorithm 1's projection: the blend ``x0 + α(xp − x0)`` for L2, ``xp`` clipped to ``x0 ± α`` for L∞."""
        a = _col(alpha, x0)
        if self.norm is Norm.L2:
            return x0 + a * (xp - x0)
        return torch.minimum(torch.maximum(xp, x0 - a), x0 + a)

    def boundary(
        self, idx: torch.Tensor, xp: torch.Tensor, lab: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Binary search between the inputs and the adversarial points ``xp`` (reference ``binary_search_batch``);
        returns the points on the adversarial side, their labels, and the distances of ``xp``."""
        x0, g = self.x[idx], self.goal[idx]
        dist_post = norm_of(xp - x0, self.norm)
        lows = torch.zeros_like(dist_post)
        if self.norm is Norm.L2:
            highs, thr = torch.ones_like(dist_post), torch.full_like(dist_post, self.theta)
        else:
            highs = dist_post.clone()
            thr = torch.minimum(dist_post * self.theta, torch.full_like(dist_post, self.theta * self.width))
        thr = thr.clamp_min(_TINY)
        lab = lab.clone()
        for _ in range(self.bsearch_steps + 8):
            act = ((highs - lows) / thr > 1).nonzero().squeeze(1)
            if act.numel() == 0:
                break
            mids = (highs[act] + lows[act]) / 2
            lb = self.labels(self.project(x0[act], xp[act], mids), idx[act])
            hit = self.is_adv(lb, g[act])
            highs[act] = torch.where(hit, mids, highs[act])
            lows[act] = torch.where(hit, lows[act], mids)
            lab[act] = torch.where(hit, lb, lab[act])
        return self.project(x0, xp, highs), lab, dist_post

    def land(self, idx: torch.Tensor, cur: torch.Tensor, lab: torch.Tensor, dist_post: torch.Tensor) -> None:
        """Make boundary points current, and keep them where they beat the closest adversarial point so far."""
        dist = norm_of(cur - self.x[idx], self.norm)
        self.cur[idx], self.cur_lab[idx], self.dist[idx], self.dist_post[idx] = cur, lab, dist, dist_post
        better = dist < self.best_norm[idx]
        b = idx[better]
        self.best[b], self.best_lab[b], self.best_norm[b] = cur[better], lab[better], dist[better]

    def gradient(self, idx: torch.Tensor, delta: torch.Tensor, n_evals: int) -> torch.Tensor:
        """Monte Carlo estimate of the boundary normal at the current points (eq. 16, baseline-subtracted)."""
        shape, gen = self.x.shape[1:], self.ctx.generator
        out = torch.empty_like(self.cur[idx])
        group = max(1, _MC_ELEMENTS // (n_evals * self.d))
        for s in range(0, idx.numel(), group):
            sub, dl = idx[s : s + group], delta[s : s + group].view(-1, 1, *[1] * len(shape))
            k, c = sub.numel(), self.cur[sub].unsqueeze(1)
            if self.norm is Norm.L2:
                rv = torch.randn((k, n_evals, *shape), generator=gen, device=c.device, dtype=c.dtype)
            else:
                rv = torch.rand((k, n_evals, *shape), generator=gen, device=c.device, dtype=c.dtype) * 2 - 1
            rv = rv / rv.flatten(2).norm(dim=2).clamp_min(_TINY).view(k, n_evals, *[1] * len(shape))
            pert = torch.clamp((c + dl * rv).reshape(k * n_evals, *shape), self.ctx.lower, self.ctx.upper)
            rv = (pert.view(k, n_evals, *shape) - c) / dl
            lb = self.labels(pert, sub.repeat_interleave(n_evals))
            fval = self.is_adv(lb, self.goal[sub].repeat_interleave(n_evals)).view(k, n_evals).float() * 2 - 1
            mean = fval.mean(dim=1, keepdim=True)
            w = torch.where(mean.abs() == 1, fval, fval - mean)
            grad = (w.view(k, n_evals, *[1] * len(shape)) * rv).mean(dim=1)
            out[s : s + group] = grad / _col(grad.flatten(1).norm(dim=1).clamp_min(_TINY), grad)
        return out

    def step(self, idx: torch.Tensor, update: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Geometric step search from ``dist/√j``, halving until the step stays adversarial."""
        c, g = self.cur[idx], self.goal[idx]
        size = self.dist[idx] / math.sqrt(j)
        pert, lab = c.clone(), self.cur_lab[idx].clone()
        ok = torch.zeros(idx.numel(), dtype=torch.bool, device=c.device)
        for _ in range(_MAX_HALVINGS):
            pend = (~ok).nonzero().squeeze(1)
            if pend.numel() == 0:
                break
            cand = torch.clamp(c[pend] + _col(size[pend], c) * update[pend], self.ctx.lower, self.ctx.upper)
            lb = self.labels(cand, idx[pend])
            hit = self.is_adv(lb, g[pend])
            pert[pend[hit]], lab[pend[hit]], ok[pend[hit]] = cand[hit], lb[hit], True
            size[pend[~hit]] /= 2
        return ok, pert, lab

    def succeeded(self) -> torch.Tensor:
        """Per example: an adversarial point was found (within ``eps`` if one is set)."""
        ok = torch.isfinite(self.best_norm)
        if self.a.eps is not None:
            ok &= self.best_norm <= float(self.a.eps)
        return ok

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        notes = getattr(self.ctx, "notes", None)
        clean = self.clean
        if clean is None:  # the budget ran out before the first query
            clean = self.y.clone()
            if notes is not None:
                notes["unattacked"] = int(notes.get("unattacked", 0)) + self.x.shape[0]
        ok = self.succeeded()
        if notes is not None:
            notes.setdefault("best_norms", []).extend(self.best_norm.tolist())
            notes.setdefault("start_norms", []).extend(self.start_norm.tolist())
        x_adv = torch.where(_col(ok, self.x), self.best, self.x)
        adv_pred = torch.where(ok, self.best_lab, clean)
        return x_adv, clean, adv_pred


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example vector shaped to broadcast against a batch like ``like``."""
    return v.view(-1, *[1] * (like.ndim - 1))
