"""PRADA: detecting model-extraction clients from the distances between their queries (Juuti et al. 2019).

Juuti, Szyller, Marchal, Asokan, "PRADA: Protecting Against DNN Model Stealing Attacks" (EuroS&P 2019), Algorithm 1.
Natural queries of an honest client are spread like natural data: for each new query, its minimum L2 distance to
the client's earlier queries *of the same predicted class* is roughly normally distributed. Synthetic queries
(Papernot-style Jacobian augmentation, small steps from earlier queries) put many minimum distances at one small
value, and the distribution stops looking normal. PRADA keeps, per client and class, a growing set ``G_c`` (a query
joins it when its minimum distance exceeds the threshold ``T_c = max(T_c, mean(D_{G_c}) − std(D_{G_c}))``), collects
every query's minimum distance in ``D``, and once ``D`` has ``min_queries`` values flags the client as soon as the
Shapiro–Wilk statistic ``W(D)`` falls below ``delta``.

Usable inside a serving stack: call :meth:`PradaDetector.observe` with the client's id, the query and the label the
model answered; it says whether the client is (now, or already) flagged.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from sparring.errors import InputSpecError, ParameterError

__all__ = ["PradaDetector"]


@dataclass
class _Client:
    growing: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # G_c: accepted queries, per class
    growing_dist: dict[int, list[float]] = field(default_factory=dict)  # D_{G_c}: their minimum distances
    threshold: dict[int, float] = field(default_factory=dict)  # T_c
    distances: list[float] = field(default_factory=list)  # D: every query's minimum distance
    queries: int = 0
    statistic: float | None = None
    flagged_at: int | None = None


class PradaDetector:
    """Per-client extraction detector on the normality of minimum query distances (Juuti et al. 2019).

    Args:
        delta: Shapiro–Wilk threshold: a client whose ``W`` falls below it is flagged (Juuti et al. tune it per
            dataset; 0.9 keeps natural digits clients unflagged, see docs/extraction.md).
        min_queries: minimum distances collected before the test runs.
        window: test only the last ``window`` distances (``None``: all of them).

    Example:
        >>> import torch
        >>> det = PradaDetector()
        >>> det.observe("alice", torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 1]))
        False
    """

    def __init__(self, *, delta: float = 0.9, min_queries: int = 100, window: int | None = None) -> None:
        if not (isinstance(delta, int | float) and 0 < delta < 1):
            raise ParameterError(f"delta must be a Shapiro–Wilk threshold in (0, 1), e.g. 0.9; got {delta!r}.")
        if isinstance(min_queries, bool) or not isinstance(min_queries, int) or min_queries < 3:
            raise ParameterError(f"min_queries must be an integer >= 3 (Shapiro–Wilk needs 3); got {min_queries!r}.")
        if window is not None and (not isinstance(window, int) or window < min_queries):
            raise ParameterError(f"window must be None or an integer >= min_queries ({min_queries}); got {window!r}.")
        self.delta = delta
        self.min_queries = min_queries
        self.window = window
        self._clients: dict[str, _Client] = {}

    def observe(self, client_id: str, x: torch.Tensor, labels: torch.Tensor | int) -> bool:
        """Record queries ``x`` (a batch ``(N, ...)`` with ``N`` labels, or one example with an int label) answered
        with ``labels``; True if the client is flagged (now or earlier)."""
        xb = torch.as_tensor(x).detach().float()
        lt = torch.as_tensor(labels)
        if lt.ndim == 0:  # one query and its label
            xb = xb[None]
        lb = lt.reshape(-1).long()
        if lb.numel() != xb.shape[0]:
            raise InputSpecError(
                f"got {xb.shape[0]} queries but {lb.numel()} labels; pass one answered label per query."
            )
        c = self._clients.setdefault(str(client_id), _Client())
        for xi, yi in zip(xb.reshape(xb.shape[0], -1), lb.tolist(), strict=True):
            self._add(c, xi, int(yi))
        return c.flagged_at is not None

    def flagged(self, client_id: str) -> bool:
        c = self._clients.get(str(client_id))
        return c is not None and c.flagged_at is not None

    def flagged_at(self, client_id: str) -> int | None:
        """The number of queries after which the client was flagged (``None``: not flagged)."""
        c = self._clients.get(str(client_id))
        return None if c is None else c.flagged_at

    def statistic(self, client_id: str) -> float | None:
        """The client's last Shapiro–Wilk ``W`` (``None`` before ``min_queries`` distances)."""
        c = self._clients.get(str(client_id))
        return None if c is None else c.statistic

    def reset(self, client_id: str) -> None:
        self._clients.pop(str(client_id), None)

    def _add(self, c: _Client, x: torch.Tensor, label: int) -> None:
        c.queries += 1
        group = c.growing.get(label)
        if not group:
            c.growing[label] = [x]
            c.growing_dist[label] = []
            c.threshold[label] = 0.0
            return
        d_min = float(torch.cdist(x[None], torch.stack(group)).min())
        c.distances.append(d_min)
        if d_min > c.threshold[label]:
            group.append(x)
            gd = c.growing_dist[label]
            gd.append(d_min)
            std = float(np.std(gd)) if len(gd) > 1 else 0.0
            c.threshold[label] = max(c.threshold[label], float(np.mean(gd)) - std)
        if len(c.distances) >= self.min_queries:
            c.statistic = _shapiro(c.distances if self.window is None else c.distances[-self.window :])
            if c.flagged_at is None and c.statistic < self.delta:
                c.flagged_at = c.queries


def _shapiro(values: list[float]) -> float:
    from scipy.stats import shapiro

    arr = np.asarray(values, dtype=np.float64)
    if float(np.ptp(arr)) == 0.0:  # all distances equal: as far from normal as it gets
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scipy warns about p-value accuracy for N > 5000
        w = float(shapiro(arr).statistic)
    return w if math.isfinite(w) else 0.0
