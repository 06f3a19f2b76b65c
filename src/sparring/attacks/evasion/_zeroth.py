"""Zeroth-order (gradient-free) search shared by SPSA and NES: antithetic finite-difference gradient estimates from
scores only, a per-attack update, projection onto the budget, early stop on broken points, counted queries.

Scores are logits, or log-probabilities when the target returns probabilities, so a hard non-differentiable step
inside the model (quantisation, thresholds) or a zero gradient never stalls the estimate: only the change in the
loss between two queries matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from sparring.attacks.base import BatchContext
from sparring.attacks.evasion._checks import check_eps, check_fraction, check_positive_int
from sparring.attacks.losses import AttackLoss, get_loss, margin
from sparring.attacks.norms import Norm, project
from sparring.errors import ParameterError, QueryBudgetExceeded
from sparring.targets.spec import InputSpec

__all__ = ["Search", "check_search_params", "estimate_gradient", "run_search"]

_LOG_FLOOR = 1e-12
_ROWS = 8192  # most perturbed inputs built at once (memory: rows × input size)

Update = Callable[[torch.Tensor, torch.Tensor, "Search", torch.Tensor], torch.Tensor]
"""``(delta, grad_estimate, search, idx) -> new delta`` (before projection); per-example optimiser state is in
``search.state`` (``m``, ``v``: zeros like the batch; ``t``: zeros per example), indexed by ``idx``, the positions
of the examples still attacked."""


@dataclass
class Search:
    """One batch's search configuration and per-example optimiser state."""

    name: str
    norm: Norm
    eps: float
    n_queries: int
    samples: int
    radius: float
    directions: Literal["rademacher", "gaussian"]
    loss: AttackLoss
    state: dict[str, torch.Tensor] = field(default_factory=dict)


def check_search_params(spec: InputSpec, *, eps: float, norm: str | Norm, n_queries: object, samples: object,
                        loss: str, fractions: dict[str, object]) -> None:
    """The checks every zeroth-order search makes before it runs: the budget against the spec, ``n_queries``,
    ``samples`` (at least one antithetic pair), each fraction of eps in (0, 1] and the loss name."""
    check_eps(eps, Norm.parse(norm), spec)
    check_positive_int(n_queries, "n_queries")
    check_positive_int(samples, "samples")
    if samples < 2:  # type: ignore[operator]
        raise ParameterError(f"samples must be >= 2 (one antithetic pair); got {samples!r}.")
    for name, value in fractions.items():
        check_fraction(value, name)
    get_loss(loss)


def _scores(ctx: BatchContext, x: torch.Tensor, name: str) -> torch.Tensor:
    remaining = ctx.target.counter.remaining
    if remaining is not None and remaining < x.shape[0]:
        c = ctx.target.counter
        raise QueryBudgetExceeded(
            f"query budget exhausted: {c.used} of {c.budget} used, {name} needs {x.shape[0]} more.",
            used=c.used, budget=c.budget or 0, requested=x.shape[0],
        )
    s = ctx.target.query(x).to(x.device, torch.float32)
    return s.clamp_min(_LOG_FLOOR).log() if ctx.target.view_output == "probabilities" else s


def estimate_gradient(
    ctx: BatchContext, s: Search, x: torch.Tensor, goal: torch.Tensor, targeted: bool,
) -> torch.Tensor:
    """Antithetic finite-difference estimate of the loss gradient at ``x`` (Spall 1992; Uesato et al. 2018 eq. 3,
    Rademacher directions; Ilyas et al. 2018 eq. 2, Gaussian directions):
    ``g = 1/(2·r·p) Σ_i (L(x + r·u_i) − L(x − r·u_i)) u_i`` over ``p = samples / 2`` directions. Costs ``samples``
    queries per example. Probe points are clipped to the input bounds (the model is only queried on valid inputs)."""
    n, pairs = x.shape[0], max(1, s.samples // 2)
    grad = torch.zeros_like(x)
    chunk = max(1, _ROWS // max(1, 2 * n))
    done = 0
    while done < pairs:
        k = min(chunk, pairs - done)
        shape = (k, *x.shape)
        if s.directions == "rademacher":
            u = torch.randint(0, 2, shape, generator=ctx.generator, device=x.device).to(x.dtype) * 2 - 1
        else:
            u = torch.randn(shape, generator=ctx.generator, device=x.device, dtype=x.dtype)
        probes = torch.cat([x + s.radius * u, x - s.radius * u]).clamp(ctx.lower, ctx.upper)
        z = _scores(ctx, probes.reshape(2 * k * n, *x.shape[1:]), s.name)
        g2 = goal.repeat(2 * k)
        f = s.loss(z, g2, targeted).reshape(2, k, n)
        diff = (f[0] - f[1]).reshape(k, n, *[1] * (x.ndim - 1))
        grad += (diff * u).sum(dim=0)
        done += k
    return grad / (2 * s.radius * pairs)


def run_search(
    ctx: BatchContext, s: Search, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None,
    update: Update,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the search on one batch: ``(x_adv, clean_pred, adv_pred)``.

    Per iteration and still-unbroken example: ``samples`` queries for the estimate and one for the new point. The
    clean prediction costs one query. An example is broken when its margin is strictly positive, and then leaves
    the batch; on a randomized model (``ctx.randomized``) nothing leaves early and the final iterate is returned
    (the base re-scores it on fresh draws). When the query budget would be crossed the search stops before sending,
    marks the examples it had not broken as unfinished, and returns what it has.
    """
    targeted = target_labels is not None
    goal = target_labels if target_labels is not None else y
    randomized = bool(getattr(ctx, "randomized", False))
    n = x.shape[0]
    clean_pred, adv_pred = y.clone(), y.clone()
    x_best = x.clone()
    unfinished = torch.ones(n, dtype=torch.bool, device=x.device)
    try:
        z = _scores(ctx, x, s.name)
    except QueryBudgetExceeded:
        _unfinished(ctx, unfinished)
        return x_best, clean_pred, adv_pred
    clean_pred = z.argmax(dim=1)
    done = margin(z, goal, targeted) > 0
    adv_pred = _pred(z, goal, targeted, done)
    delta = torch.zeros_like(x)
    s.state = {"m": torch.zeros_like(x), "v": torch.zeros_like(x), "t": torch.zeros(n, device=x.device, dtype=x.dtype)}
    iters = max(1, (s.n_queries - 1) // (s.samples + 1))
    try:
        for _ in range(iters):
            idx = torch.arange(n, device=x.device) if randomized else (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xi = (x[idx] + delta[idx]).clamp(ctx.lower, ctx.upper)
            g = estimate_gradient(ctx, s, xi, goal[idx], targeted)
            new = project(update(delta[idx], g, s, idx), s.norm, s.eps)
            new = (x[idx] + new).clamp(ctx.lower, ctx.upper) - x[idx]
            zi = _scores(ctx, x[idx] + new, s.name)
            delta[idx] = new
            hit = margin(zi, goal[idx], targeted) > 0
            x_best[idx] = x[idx] + new
            adv_pred[idx] = _pred(zi, goal[idx], targeted, hit)
            done[idx] = hit
        unfinished[:] = False
    except QueryBudgetExceeded:
        unfinished = ~done
        _unfinished(ctx, unfinished)
    return x_best, clean_pred, adv_pred


def adam(lr: float, beta1: float = 0.9, beta2: float = 0.999, tiny: float = 1e-8) -> Update:
    """Adam ascent (Kingma & Ba 2015) on the perturbation, with per-example moments (SPSA's optimiser)."""

    def update(delta: torch.Tensor, g: torch.Tensor, s: Search, idx: torch.Tensor) -> torch.Tensor:
        m, v, t = s.state["m"], s.state["v"], s.state["t"]
        t[idx] += 1
        m[idx] = beta1 * m[idx] + (1 - beta1) * g
        v[idx] = beta2 * v[idx] + (1 - beta2) * g * g
        ti = t[idx].view(-1, *[1] * (g.ndim - 1))
        m_hat = m[idx] / (1 - beta1**ti)
        v_hat = v[idx] / (1 - beta2**ti)
        return delta + lr * m_hat / (v_hat.sqrt() + tiny)

    return update


def signed_step(lr: float) -> Update:
    """Projected steepest ascent on the estimate: ``lr·sign(g)`` for L∞, ``lr·g/‖g‖₂`` for L2 (NES's update)."""

    def update(delta: torch.Tensor, g: torch.Tensor, s: Search, idx: torch.Tensor) -> torch.Tensor:
        if s.norm is Norm.LINF:
            return delta + lr * g.sign()
        flat: torch.Tensor = torch.linalg.vector_norm(g.flatten(1), dim=1).clamp_min(1e-12)
        return delta + lr * g / flat.view(-1, *[1] * (g.ndim - 1))

    return update


def default_radius(norm: Norm, eps: float, d: int, fraction: float) -> float:
    """A per-coordinate probe size ``fraction`` of the budget: ``fraction·eps`` (L∞), ``fraction·eps/√d`` (L2)."""
    return fraction * eps if norm is Norm.LINF else fraction * eps / math.sqrt(d)


def _pred(z: torch.Tensor, goal: torch.Tensor, targeted: bool, hit: torch.Tensor) -> torch.Tensor:
    """Predicted class, ties resolved against the attacker (an unbroken example keeps a class missing the goal)."""
    if targeted:
        other = z.scatter(1, goal[:, None], -math.inf).argmax(dim=1)
        return torch.where(hit, goal, other)
    return torch.where(hit, z.argmax(dim=1), goal)


def _unfinished(ctx: BatchContext, mask: torch.Tensor) -> None:
    mark = getattr(ctx, "mark_unknown", None)
    if mark is not None:
        mark(mask)
    else:
        ctx.notes["budget_exhausted"] = True
    ctx.notes["unfinished"] = int(ctx.notes.get("unfinished", 0)) + int(mask.sum())
