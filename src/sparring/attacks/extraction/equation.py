"""Equation-solving extraction of logistic and softmax regression (Tramèr et al. 2016).

Tramèr, Zhang, Juels, Reiter, Ristenpart, "Stealing Machine Learning Models via Prediction APIs" (USENIX Security
2016), section 4.1. A model whose class scores are ``softmax(W x + b)`` reveals, with every answered query, the
log-ratios ``log p_k(x) - log p_0(x) = (w_k - w_0)·x + (b_k - b_0)``: ``c - 1`` equations that are *linear* in the
unknown parameters. ``d + 1`` queries in general position determine every log-ratio parameter exactly (binary
logistic regression: ``d + 1`` unknowns, ``d + 1`` queries); Tramèr et al. count ``c·(d + 1)`` unknowns for softmax
models because ``W`` is only defined up to a common shift of its rows; here the shift is fixed by the reference class
(``w_0 = 0``), which gives the same predictions and probabilities. More queries turn the system into least squares,
which averages out rounding in the answers.

Saturated answers are dropped, not clamped: a probability that reads 0 or 1 in float precision (or lies within a
stated ``floor`` of either) has lost its log-ratio -- a served ``1 - p`` that rounds to 0 gives ``-inf``, one that
keeps only a bit or two gives a log-ratio off by ``log 2`` -- and a clamped row pulls the least-squares fit towards
a wrong plane (Tramèr et al. 2016 solve only with the answers' exact log-ratios). Each dropped query is replaced by
one halfway towards the nearest unsaturated answer (or towards the centre of the query box while there is none),
round after round, so the queries move towards the decision boundary, where the answers carry information, until
every equation is usable or ``max_queries`` is spent.

Threat model: black-box with scores (probabilities or logits); the inputs the API takes are the model's features.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparring.attacks.result import AttackResult, Cost
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["EquationSolving", "EquationSolvingResult"]

_ROUNDS = 24  # replacement rounds at most: each halves a saturated query's distance to an unsaturated answer


@dataclass
class EquationSolvingResult(AttackResult):
    """Recovered linear parameters, relative to the reference class 0.

    Attributes:
        weights: ``(n_classes, n_features)`` float64; row 0 is zero, row ``k`` is ``w_k - w_0`` (for a binary
            logistic regression, row 1 is the model's coefficient vector).
        bias: ``(n_classes,)`` float64, entry 0 zero.
        queries: examples the victim evaluated.
        used: answers in the fit (unsaturated; ``queries - saturated``).
        residual: root-mean-square misfit of the log-ratio equations used (0 for an exact answer, larger when outputs
            were rounded or perturbed).
        saturated: answers dropped from the fit because some probability was within ``floor`` of 0 or 1 (float
            precision, rounding, top-k); each was replaced by a query nearer the boundary while budget remained.
        floor: the saturation floor that was applied.
    """

    weights: Any = None
    bias: Any = None
    queries: int = 0
    used: int = 0
    residual: float = 0.0
    saturated: int = 0
    floor: float = 0.0

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The stolen model's logits (relative to class 0) for a batch of inputs."""
        flat = x.reshape(x.shape[0], -1).to(self.weights.dtype)
        return flat @ self.weights.T + self.bias  # type: ignore[no-any-return]

    def as_target(self, like: Target) -> TorchTarget:
        """The stolen model as a white-box float64 :class:`TorchTarget` with ``like``'s input spec."""
        n_classes, n_features = self.weights.shape
        linear = nn.Linear(n_features, n_classes, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(self.weights)
            linear.bias.copy_(self.bias)
        spec = like.spec
        if spec.mean is not None:  # the recovered map takes raw inputs: drop the victim's internal normalisation
            d = spec.to_dict()
            d["mean"] = d["std"] = None
            spec = type(spec).from_dict(d)
        return TorchTarget(nn.Sequential(nn.Flatten(), linear), spec)

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        s.update(queries=self.queries, used=self.used, residual=self.residual, saturated=self.saturated,
                 floor=self.floor)
        return s


class EquationSolving:
    """Steal a logistic or softmax regression by solving the log-ratio equations (Tramèr et al. 2016, §4.1).

    Threat model: black-box, scores (probabilities or logits); ``d + 1`` unsaturated answers for ``d`` features (more
    give a least-squares fit). Query points are drawn uniformly from a box around the centre of the input bounds;
    answers with a probability within ``floor`` of 0 or 1 are dropped and their queries moved halfway towards the
    nearest unsaturated answer, round after round, within ``max_queries``.

    Args:
        n_queries: answers to fit (the first round of queries); default ``d + 1`` (the minimum that determines the
            parameters).
        max_queries: queries to spend at most, replacements of saturated answers included; default
            ``4 * n_queries``. ``max_queries=n_queries`` turns the replacement off.
        floor: an answer is saturated when some probability is ``<= floor`` or ``>= 1 - floor``; default the
            machine epsilon of the answers' dtype (1.2e-7 for float32). Raise it for rounded outputs (e.g. 0.05 for
            two decimals, whose 0.01 steps are otherwise kept with up to 50% relative error). Logit outputs never
            saturate.
        spread: size of the query box as a fraction of the input range (1: the whole range). Far-apart points
            condition the equations best; a small box around a typical input keeps the model's probabilities away
            from 0 and 1, which is what survives rounded outputs.
        center: centre of the query box, one input (e.g. the mean of data the attacker has); default the centre of
            the input bounds. Points are clipped to the bounds.
        seed: seed of the default generator drawing the query points.

    Raises:
        ParameterError: fewer than ``d + 1`` unsaturated answers (or rank-deficient ones) once the budget is spent.

    Example:
        >>> from sparring import zoo
        >>> victim = zoo.load("breast-cancer-logreg")   # scaler + logistic regression: linear in the raw features
        >>> stolen = EquationSolving()(victim)
        >>> stolen.used
        31
    """

    name = "equation-solving"
    needs = Access.SCORES

    def __init__(
        self, *, n_queries: int | None = None, max_queries: int | None = None, floor: float | None = None,
        spread: float = 1.0, center: torch.Tensor | Any = None, seed: int | None = 0,
    ) -> None:
        self.n_queries = n_queries
        self.max_queries = max_queries
        self.floor = floor
        self.spread = spread
        self.center = center
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {"n_queries": self.n_queries, "max_queries": self.max_queries, "floor": self.floor,
                "spread": self.spread, "seed": self.seed}

    def _check(self, d: int) -> tuple[int, int]:
        n = d + 1 if self.n_queries is None else self.n_queries
        if isinstance(n, bool) or not isinstance(n, int) or n < d + 1:
            raise ParameterError(
                f"n_queries must be an integer >= d + 1 = {d + 1} (one equation per unknown for {d} features); "
                f"got {self.n_queries!r}. Leave it unset for the minimum."
            )
        cap = 4 * n if self.max_queries is None else self.max_queries
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < n:
            raise ParameterError(f"max_queries must be an integer >= n_queries = {n}; got {self.max_queries!r}. "
                                 "Leave it unset for 4 * n_queries, or set it to n_queries for no replacements.")
        if not (isinstance(self.spread, int | float) and 0 < self.spread <= 1):
            raise ParameterError(f"spread must be a fraction of the input range in (0, 1]; got {self.spread!r}.")
        if self.floor is not None and not (isinstance(self.floor, int | float) and 0 <= self.floor < 0.5):
            raise ParameterError(f"floor must be a probability in [0, 0.5); got {self.floor!r}. Leave it unset for "
                                 "the answers' machine epsilon.")
        return n, cap

    def __call__(self, target: Target, *, generator: torch.Generator | None = None) -> EquationSolvingResult:
        target.require(Access.SCORES, "equation solving")
        d = target.spec.n_features
        n, cap = self._check(d)
        t0 = time.perf_counter()
        q0 = target.counter.used
        gen = generator or torch.Generator().manual_seed(0 if self.seed is None else self.seed)
        lo, hi = target.spec.bounds_tensors(dtype=torch.float64)
        u = torch.rand((n, *target.spec.shape), generator=gen, dtype=torch.float64)
        mid = (lo + hi) / 2 if self.center is None else target.spec.validate(
            torch.as_tensor(self.center).reshape(1, *target.spec.shape))[0].double().cpu()
        x = torch.max(torch.min(mid + (u - 0.5) * self.spread * (hi - lo), hi), lo).float()  # what the API gets
        logits = target.view_output == "logits"
        raw = target.query(x)
        scores = raw.double().cpu()
        floor = self.floor if self.floor is not None else float(torch.finfo(raw.dtype).eps)
        bad = torch.zeros(n, dtype=torch.bool) if logits else _saturated(scores, floor)
        xs, ss, ok = [x], [scores], [~bad]
        pending = x[bad]
        for _ in range(_ROUNDS):
            room = cap - (target.counter.used - q0)
            if target.counter.remaining is not None:
                room = min(room, target.counter.remaining)
            if len(pending) == 0 or room <= 0:
                break
            good = torch.cat([a[m] for a, m in zip(xs, ok, strict=True)])
            good_scores = torch.cat([a[m] for a, m in zip(ss, ok, strict=True)])
            fit = _fit(good, good_scores, logits) if len(good) else None
            if fit is not None:  # anchors well inside the band (every probability >= _band(floor)) when there are any
                inner = good_scores.amin(dim=1) >= _band(floor)
                good = good[inner] if bool(inner.any()) else good
            pending = _towards_boundary(pending[:room], good, (lo, hi, mid), fit, floor, gen)
            answers = target.query(pending).double().cpu()
            now_bad = _saturated(answers, floor)
            xs.append(pending)
            ss.append(answers)
            ok.append(~now_bad)
            pending = pending[now_bad]
        x_all, s_all, keep = torch.cat(xs), torch.cat(ss), torch.cat(ok)
        used = target.counter.used - q0
        rank = int(torch.linalg.matrix_rank(_design(x_all[keep]))) if bool(keep.any()) else 0
        if rank < d + 1:
            raise ParameterError(
                f"equation solving needs d + 1 = {d + 1} unsaturated answers in general position; after {used} "
                f"queries {int(keep.sum())} answers had every probability inside ({floor:g}, 1 - {floor:g}) (rank "
                f"{rank}). Centre the queries on a typical input (center=...), shrink spread, raise max_queries, or "
                "lower floor."
            )
        fitted = _fit(x_all[keep], s_all[keep], logits)
        assert fitted is not None  # rank d + 1 was checked above
        sol, resid = fitted
        zeros = torch.zeros(1, dtype=torch.float64)
        weights = torch.cat([torch.zeros(1, d, dtype=torch.float64), sol[:d].T])
        bias = torch.cat([zeros, sol[d]])
        return EquationSolvingResult(
            attack=self.name, params=self.get_params(),
            cost=Cost(queries=used, seconds=time.perf_counter() - t0),
            weights=weights, bias=bias, queries=used, used=int(keep.sum()),
            residual=resid, saturated=int((~keep).sum()), floor=floor,
        )


def _saturated(scores: torch.Tensor, floor: float) -> torch.Tensor:
    """Answers with some probability within ``floor`` of 0 or 1: their log-ratios are lost to rounding."""
    return ((scores <= floor) | (scores >= 1 - floor)).any(dim=1)


def _band(floor: float) -> float:
    """Smallest probability of a query placed well inside the unsaturated band: ``sqrt(floor)`` (1e-6 at least)."""
    return math.sqrt(max(floor, 1e-12))


def _design(x: torch.Tensor) -> torch.Tensor:
    """``[x, 1]`` rows of the log-ratio equations, float64."""
    flat = x.double().reshape(len(x), -1)
    return torch.cat([flat, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)


def _fit(x: torch.Tensor, scores: torch.Tensor, logits: bool) -> tuple[torch.Tensor, float] | None:
    """Least-squares ``(d + 1, c - 1)`` solution and its RMS misfit; None while the rows do not determine it."""
    design = _design(x)
    if len(design) < design.shape[1] or int(torch.linalg.matrix_rank(design)) < design.shape[1]:
        return None
    ratios = _log_ratios(scores, logits)
    sol = torch.linalg.lstsq(design, ratios, driver="gelsd").solution
    return sol, float((design @ sol - ratios).pow(2).mean().sqrt())


def _towards_boundary(
    x: torch.Tensor, good: torch.Tensor, box: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    fit: tuple[torch.Tensor, float] | None, floor: float, gen: torch.Generator,
) -> torch.Tensor:
    """Saturated queries moved towards the region where every probability is at least ``_band(floor)``.

    ``box`` is ``(lo, hi, mid)``. Without a fit yet: halfway towards the nearest unsaturated answer in ``good`` (the
    box centre while there is none), i.e. bisection. With a fit of a binary model: projected along the fitted
    weight vector onto a random log-odds in ``±log(1/band)/2``, which keeps the points' spread across the boundary
    (good conditioning). With a fit of a softmax model: along the segment to the nearest answer in ``good``, to the
    farthest of the points ``2^-k`` of the way (``k = 1 .. 24``) whose predicted smallest probability is inside the
    band (halfway if none is). Points are clipped to the input bounds.
    """
    lo, hi, mid = (t.reshape(1, -1).float() for t in box)
    flat = x.reshape(len(x), -1)
    if fit is not None and fit[0].shape[1] == 1:
        w, b = fit[0][:-1, 0].float(), float(fit[0][-1, 0])
        half = 0.5 * math.log(1 / _band(floor))
        want = (torch.rand(len(x), generator=gen, dtype=torch.float64).float() * 2 - 1) * half
        moved = flat + ((want - (flat @ w + b)) / w.pow(2).sum().clamp_min(1e-30))[:, None] * w
        return torch.max(torch.min(moved, hi), lo).reshape(x.shape)
    if len(good) == 0:
        anchor = mid.expand_as(flat)
    else:
        scale = (hi - lo).clamp_min(1e-12)  # distances in units of the input range
        pool = good.reshape(len(good), -1)
        anchor = pool[torch.cdist(flat / scale, pool / scale).argmin(dim=1)]
    frac = torch.full((len(x), 1), 0.5)
    if fit is not None:
        steps = 0.5 ** torch.arange(1, _ROUNDS + 1, dtype=torch.float64)  # (k,)
        za, zx = (_design(t) @ fit[0] for t in (anchor, flat))  # (m, c - 1) log-ratios against class 0
        z = za[:, None] + steps[None, :, None] * (zx - za)[:, None]  # (m, k, c - 1)
        z = torch.cat([torch.zeros_like(z[..., :1]), z], dim=-1)
        safe = (z - z.logsumexp(dim=-1, keepdim=True)).amin(dim=-1) >= math.log(_band(floor))
        first = torch.where(safe.any(dim=1), safe.double().argmax(dim=1), torch.zeros(len(x), dtype=torch.long))
        frac = steps[first].float().reshape(-1, 1)
    return (anchor + frac * (flat - anchor)).reshape(x.shape)


def _log_ratios(scores: torch.Tensor, logits: bool) -> torch.Tensor:
    """``(n, c - 1)`` log-ratios against class 0 (logits, or the log of unsaturated probabilities)."""
    if logits:
        return scores[:, 1:] - scores[:, :1]
    logp = scores.log()
    return logp[:, 1:] - logp[:, :1]
