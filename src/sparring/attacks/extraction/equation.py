"""Equation-solving extraction of logistic and softmax regression (Tramèr et al. 2016).

Tramèr, Zhang, Juels, Reiter, Ristenpart, "Stealing Machine Learning Models via Prediction APIs" (USENIX Security
2016), section 4.1. A model whose class scores are ``softmax(W x + b)`` reveals, with every answered query, the
log-ratios ``log p_k(x) - log p_0(x) = (w_k - w_0)·x + (b_k - b_0)``: ``c - 1`` equations that are *linear* in the
unknown parameters. ``d + 1`` queries in general position determine every log-ratio parameter exactly (binary
logistic regression: ``d + 1`` unknowns, ``d + 1`` queries); Tramèr et al. count ``c·(d + 1)`` unknowns for softmax
models because ``W`` is only defined up to a common shift of its rows; here the shift is fixed by the reference class
(``w_0 = 0``), which gives the same predictions and probabilities. More queries turn the system into least squares,
which averages out rounding in the answers.

Threat model: black-box with scores (probabilities or logits); the inputs the API takes are the model's features.
"""

from __future__ import annotations

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

_TINY = 1e-30  # floor for probabilities that read 0 (rounded or top-k outputs): their log-ratios are unusable


@dataclass
class EquationSolvingResult(AttackResult):
    """Recovered linear parameters, relative to the reference class 0.

    Attributes:
        weights: ``(n_classes, n_features)`` float64; row 0 is zero, row ``k`` is ``w_k - w_0`` (for a binary
            logistic regression, row 1 is the model's coefficient vector).
        bias: ``(n_classes,)`` float64, entry 0 zero.
        queries: examples the victim evaluated.
        residual: root-mean-square misfit of the log-ratio equations (0 for an exact answer, large when outputs were
            rounded or clipped).
        saturated: answers where some probability read 0 or 1 (rounding, top-k), whose log-ratios were clipped.
    """

    weights: Any = None
    bias: Any = None
    queries: int = 0
    residual: float = 0.0
    saturated: int = 0

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
        s.update(queries=self.queries, residual=self.residual, saturated=self.saturated)
        return s


class EquationSolving:
    """Steal a logistic or softmax regression by solving the log-ratio equations (Tramèr et al. 2016, §4.1).

    Threat model: black-box, scores (probabilities or logits); ``d + 1`` queries for ``d`` features (more give a
    least-squares fit). Query points are drawn uniformly from a box around the centre of the input bounds.

    Args:
        n_queries: queries to spend; default ``d + 1`` (the minimum that determines the parameters).
        spread: size of the query box as a fraction of the input range (1: the whole range). Far-apart points
            condition the equations best; a small box around a typical input keeps the model's probabilities away
            from 0 and 1, which is what survives rounded outputs.
        center: centre of the query box, one input (e.g. the mean of data the attacker has); default the centre of
            the input bounds. Points are clipped to the bounds.
        seed: seed of the default generator drawing the query points.

    Example:
        >>> from sparring import zoo
        >>> victim = zoo.load("breast-cancer-logreg")   # scaler + logistic regression: linear in the raw features
        >>> stolen = EquationSolving()(victim)
        >>> stolen.queries
        31
    """

    name = "equation-solving"
    needs = Access.SCORES

    def __init__(
        self, *, n_queries: int | None = None, spread: float = 1.0, center: torch.Tensor | Any = None,
        seed: int | None = 0,
    ) -> None:
        self.n_queries = n_queries
        self.spread = spread
        self.center = center
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {"n_queries": self.n_queries, "spread": self.spread, "seed": self.seed}

    def __call__(self, target: Target, *, generator: torch.Generator | None = None) -> EquationSolvingResult:
        target.require(Access.SCORES, "equation solving")
        d = target.spec.n_features
        n = d + 1 if self.n_queries is None else self.n_queries
        if isinstance(n, bool) or not isinstance(n, int) or n < d + 1:
            raise ParameterError(
                f"n_queries must be an integer >= d + 1 = {d + 1} (one equation per unknown for {d} features); "
                f"got {self.n_queries!r}. Leave it unset for the minimum."
            )
        if not (isinstance(self.spread, int | float) and 0 < self.spread <= 1):
            raise ParameterError(f"spread must be a fraction of the input range in (0, 1]; got {self.spread!r}.")
        t0 = time.perf_counter()
        q0 = target.counter.used
        gen = generator or torch.Generator().manual_seed(0 if self.seed is None else self.seed)
        lo, hi = target.spec.bounds_tensors(dtype=torch.float64)
        u = torch.rand((n, *target.spec.shape), generator=gen, dtype=torch.float64)
        mid = (lo + hi) / 2 if self.center is None else target.spec.validate(
            torch.as_tensor(self.center).reshape(1, *target.spec.shape))[0].double().cpu()
        x = torch.max(torch.min(mid + (u - 0.5) * self.spread * (hi - lo), hi), lo).float()  # what the API gets
        scores = target.query(x).double().cpu()
        ratios, saturated = _log_ratios(scores, target.view_output == "logits")
        design = torch.cat([x.double().reshape(n, -1), torch.ones(n, 1, dtype=torch.float64)], dim=1)
        sol = torch.linalg.lstsq(design, ratios, driver="gelsd").solution  # (d + 1, c - 1)
        resid = design @ sol - ratios
        zeros = torch.zeros(1, dtype=torch.float64)
        weights = torch.cat([torch.zeros(1, d, dtype=torch.float64), sol[:d].T])
        bias = torch.cat([zeros, sol[d]])
        used = target.counter.used - q0
        return EquationSolvingResult(
            attack=self.name, params=self.get_params(),
            cost=Cost(queries=used, seconds=time.perf_counter() - t0),
            weights=weights, bias=bias, queries=used, residual=float(resid.pow(2).mean().sqrt()),
            saturated=saturated,
        )


def _log_ratios(scores: torch.Tensor, logits: bool) -> tuple[torch.Tensor, int]:
    """``(n, c - 1)`` log-ratios against class 0, and how many answers had a probability that read 0."""
    if logits:
        return scores[:, 1:] - scores[:, :1], 0
    zero = scores <= 0
    logp = scores.clamp_min(_TINY).log()
    return logp[:, 1:] - logp[:, :1], int(zero.any(dim=1).sum())
