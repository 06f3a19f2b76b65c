"""PRADA: detecting model-extraction clients from the distances between their queries (Juuti et al. 2019).

Juuti, Szyller, Marchal, Asokan, "PRADA: Protecting Against DNN Model Stealing Attacks" (EuroS&P 2019), Algorithm 1.
Natural queries of an honest client are spread like natural data: for each new query, its minimum L2 distance to
the client's earlier queries *of the same predicted class* is roughly normally distributed. Synthetic queries
(Papernot-style Jacobian augmentation, small steps from earlier queries) put many minimum distances at one small
value, and the distribution stops looking normal. PRADA keeps, per client and class, a growing set ``G_c`` (a query
joins it when its minimum distance exceeds the threshold ``T_c = max(T_c, mean(D_{G_c}) − std(D_{G_c}))``), collects
every query's minimum distance in ``D``, and once ``D`` has ``min_queries`` values flags the client as soon as the
Shapiro–Wilk statistic ``W(D')`` falls below ``delta``, where ``D'`` is ``D`` without the distances more than 3
standard deviations from its mean (the authors' reference implementation removes these outliers before the test: a
few far-off natural queries, e.g. heavy-tailed tabular features, otherwise make an honest client look non-normal).

State is bounded for long-running services: a client keeps at most ``max_samples`` queries in its growing sets
(oldest evicted first) and its last ``max_samples`` distances; at most ``max_clients`` clients are tracked, the least
recently seen evicted first (an evicted client starts afresh, flag included: act on the flag when it is returned).

Usable inside a serving stack: call :meth:`PradaDetector.observe` with the client's id, the query and the label the
model answered; it says whether the client is (now, or already) flagged. The state is plain JSON data
(:meth:`PradaDetector.state_dict`, or per client :meth:`PradaDetector.client_state`, with the stored queries
readable incrementally by sequence number through :meth:`PradaDetector.members`), so a service persists it.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparring.errors import InputSpecError, ParameterError

__all__ = ["PradaDetector"]

_STATE_VERSION = 1


@dataclass
class _Client:
    growing: dict[int, deque[torch.Tensor]] = field(default_factory=dict)  # G_c: accepted queries, per class
    order: deque[tuple[int, int]] = field(default_factory=deque)  # (class, seq) of the stored queries, oldest first
    growing_stats: dict[int, tuple[int, float, float]] = field(default_factory=dict)  # D_{G_c}: n, mean, M2
    threshold: dict[int, float] = field(default_factory=dict)  # T_c
    distances: deque[float] = field(default_factory=deque)  # D: the last max_samples minimum distances
    queries: int = 0
    statistic: float | None = None
    flagged_at: int | None = None
    stored_total: int = 0  # queries ever stored in the growing sets (the seq of the latest one)


class PradaDetector:
    """Per-client extraction detector on the normality of minimum query distances (Juuti et al. 2019).

    Args:
        delta: Shapiro–Wilk threshold: a client whose ``W`` falls below it is flagged (Juuti et al. tune it per
            dataset; 0.9 keeps natural digits clients unflagged, see docs/extraction.md).
        min_queries: minimum distances collected before the test runs.
        window: test only the last ``window`` distances (``None``: all that are kept, up to ``max_samples``).
        outlier_sd: distances farther than this many standard deviations from the mean of the tested ones are left
            out of the Shapiro–Wilk test (3 in the reference implementation; ``None`` keeps them all).
        max_samples: per client, the most queries kept in the growing sets (all classes together; when full, the
            oldest stored query is evicted, so distances are measured to the latest ``max_samples`` accepted
            queries) and the most minimum distances kept (the oldest dropped). Memory per client is about
            ``max_samples`` inputs.
        max_clients: clients tracked at once; a new client beyond this evicts the least recently seen one (LRU),
            whose state, flag included, is forgotten.

    Example:
        >>> import torch
        >>> det = PradaDetector()
        >>> det.observe("alice", torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 1]))
        False
    """

    def __init__(
        self, *, delta: float = 0.9, min_queries: int = 100, window: int | None = None,
        outlier_sd: float | None = 3.0, max_samples: int = 10_000, max_clients: int = 10_000,
    ) -> None:
        if not (isinstance(delta, int | float) and 0 < delta < 1):
            raise ParameterError(f"delta must be a Shapiro–Wilk threshold in (0, 1), e.g. 0.9; got {delta!r}.")
        if isinstance(min_queries, bool) or not isinstance(min_queries, int) or min_queries < 3:
            raise ParameterError(f"min_queries must be an integer >= 3 (Shapiro–Wilk needs 3); got {min_queries!r}.")
        if window is not None and (not isinstance(window, int) or window < min_queries):
            raise ParameterError(f"window must be None or an integer >= min_queries ({min_queries}); got {window!r}.")
        if outlier_sd is not None and not (isinstance(outlier_sd, int | float) and outlier_sd > 0):
            raise ParameterError(f"outlier_sd must be a positive number of standard deviations (3 in the paper's "
                                 f"code) or None; got {outlier_sd!r}.")
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < max(min_queries,
                                                                                                  window or 0):
            raise ParameterError(f"max_samples must be an integer >= min_queries and window "
                                 f"({max(min_queries, window or 0)}); got {max_samples!r}.")
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise ParameterError(f"max_clients must be a positive integer; got {max_clients!r}.")
        self.delta = delta
        self.min_queries = min_queries
        self.window = window
        self.outlier_sd = outlier_sd
        self.max_samples = max_samples
        self.max_clients = max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    @property
    def n_clients(self) -> int:
        """Clients tracked now (at most ``max_clients``)."""
        return len(self._clients)

    def stored(self, client_id: str) -> int:
        """Queries kept in the client's growing sets (at most ``max_samples``; 0 for an unknown client)."""
        c = self._clients.get(str(client_id))
        return 0 if c is None else len(c.order)

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
        c = self._client(str(client_id))
        for xi, yi in zip(xb.reshape(xb.shape[0], -1), lb.tolist(), strict=True):
            self._add(c, xi, int(yi))
        return c.flagged_at is not None

    def _client(self, key: str) -> _Client:
        c = self._clients.get(key)
        if c is None:
            c = self._clients[key] = _Client()
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)  # least recently seen
        else:
            self._clients.move_to_end(key)
        return c

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
            self._store(c, x, label)
            c.growing_stats.setdefault(label, (0, 0.0, 0.0))
            c.threshold.setdefault(label, 0.0)
            return
        d_min = float(torch.cdist(x[None], torch.stack(list(group))).min())
        c.distances.append(d_min)
        if len(c.distances) > self.max_samples:
            c.distances.popleft()
        if d_min > c.threshold[label]:
            self._store(c, x, label)
            n, mean, m2 = c.growing_stats[label]  # Welford: mean and std of D_{G_c} in O(1) memory
            n += 1
            delta = d_min - mean
            mean += delta / n
            m2 += delta * (d_min - mean)
            c.growing_stats[label] = (n, mean, m2)
            std = math.sqrt(m2 / n) if n > 1 else 0.0
            c.threshold[label] = max(c.threshold[label], mean - std)
        if len(c.distances) >= self.min_queries:
            tested = list(c.distances)[-self.window :] if self.window is not None else list(c.distances)
            c.statistic = _shapiro(_without_outliers(tested, self.outlier_sd))
            if c.flagged_at is None and c.statistic < self.delta:
                c.flagged_at = c.queries

    def _store(self, c: _Client, x: torch.Tensor, label: int) -> None:
        c.stored_total += 1
        c.growing.setdefault(label, deque()).append(x)
        c.order.append((label, c.stored_total))
        if len(c.order) > self.max_samples:  # evict the oldest stored query (of whichever class it was)
            c.growing[c.order.popleft()[0]].popleft()

    # ------------------------------------------------------------------ state (JSON)
    def members(self, client_id: str, since: int = 0) -> list[tuple[int, int, list[float]]]:
        """The client's stored queries with a sequence number above ``since``: ``(seq, class, flat query)``,
        oldest first. With :meth:`client_state` (``members=False``) a service persists a client incrementally."""
        c = self._clients.get(str(client_id))
        if c is None:
            return []
        pos: dict[int, int] = {}
        out = []
        for label, seq in c.order:
            i = pos.get(label, 0)
            pos[label] = i + 1
            if seq > since:
                out.append((seq, label, [float(v) for v in c.growing[label][i].tolist()]))
        return out

    def client_state(self, client_id: str, *, members: bool = True) -> dict[str, Any] | None:
        """One client's state as plain JSON data (``None`` for an unknown client). Without ``members`` the
        stored queries are left out (read them with :meth:`members`); the rest is at most ``max_samples``
        distances and a few numbers per class."""
        c = self._clients.get(str(client_id))
        if c is None:
            return None
        out: dict[str, Any] = {
            "version": _STATE_VERSION, "queries": c.queries, "statistic": c.statistic, "flagged_at": c.flagged_at,
            "stored_total": c.stored_total, "distances": list(c.distances),
            "threshold": {str(k): v for k, v in c.threshold.items()},
            "growing_stats": {str(k): list(v) for k, v in c.growing_stats.items()},
        }
        if members:
            out["members"] = [list(m) for m in self.members(client_id)]
        return out

    def load_client_state(self, client_id: str, state: dict[str, Any],
                          members: list[tuple[int, int, list[float]]] | None = None) -> None:
        """Restore a client from :meth:`client_state` (its ``members``, or those given here: ``(seq, class,
        flat query)`` with the latest ``max_samples`` kept); later queries give what the saved detector would."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ParameterError(f"not a PRADA client state of version {_STATE_VERSION}; pass what client_state() "
                                 "returned.")
        rows = members if members is not None else [tuple(m) for m in state.get("members", [])]
        rows = sorted(rows, key=lambda m: int(m[0]))[-self.max_samples :]
        c = _Client()
        self._set_scalars(c, state)
        for seq, label, flat in rows:
            c.growing.setdefault(int(label), deque()).append(torch.tensor(flat, dtype=torch.float32))
            c.order.append((int(label), int(seq)))
        self._clients[str(client_id)] = c
        self._clients.move_to_end(str(client_id))
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def advance_client_state(self, client_id: str, state: dict[str, Any],
                             new_members: list[tuple[int, int, Any]]) -> bool:
        """Bring a tracked client forward to a later :meth:`client_state` (``members=False``) written by another
        detector that shares this client (another guard replica), given the queries that one stored after this
        detector's latest (``(seq, class, flat query)``, seq above this detector's ``stored_total``): the same
        state :meth:`load_client_state` would give, without re-reading the members this detector holds.

        False (nothing changed) when the client is not tracked here or ``new_members`` do not continue its
        stored queries (some were already evicted, or the state is not later): then load it in full."""
        c = self._clients.get(str(client_id))
        if c is None or not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            return False
        total = int(state["stored_total"])
        rows = sorted(new_members, key=lambda m: int(m[0]))
        if int(state["queries"]) < c.queries or len(rows) != total - c.stored_total or any(
                int(m[0]) != c.stored_total + 1 + i for i, m in enumerate(rows)):
            return False
        for seq, label, flat in rows:
            c.growing.setdefault(int(label), deque()).append(torch.from_numpy(np.array(flat, dtype=np.float32)))
            c.order.append((int(label), int(seq)))
            if len(c.order) > self.max_samples:
                c.growing[c.order.popleft()[0]].popleft()
        self._set_scalars(c, state)
        self._clients.move_to_end(str(client_id))
        return True

    def _set_scalars(self, c: _Client, state: dict[str, Any]) -> None:
        c.queries, c.stored_total = int(state["queries"]), int(state["stored_total"])
        c.statistic = None if state["statistic"] is None else float(state["statistic"])
        c.flagged_at = None if state["flagged_at"] is None else int(state["flagged_at"])
        c.distances = deque(float(d) for d in state["distances"][-self.max_samples :])
        c.threshold = {int(k): float(v) for k, v in state["threshold"].items()}
        c.growing_stats = {int(k): (int(v[0]), float(v[1]), float(v[2])) for k, v in state["growing_stats"].items()}

    def state_dict(self) -> dict[str, Any]:
        """Every tracked client's state (with its stored queries) as plain JSON data, least recently seen first."""
        return {"version": _STATE_VERSION, "clients": {k: self.client_state(k) for k in self._clients}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (clients beyond ``max_clients`` are evicted, least recently seen first)."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ParameterError(f"not a PRADA state of version {_STATE_VERSION}; pass what state_dict() returned.")
        self._clients.clear()
        for key, st in state["clients"].items():
            self.load_client_state(key, st)


def _without_outliers(values: list[float], sd: float | None) -> list[float]:
    """``values`` without those more than ``sd`` standard deviations from their mean (``None``: all of them)."""
    if sd is None:
        return values
    arr = np.asarray(values, dtype=np.float64)
    keep = np.abs(arr - arr.mean()) <= sd * arr.std()
    return arr[keep].tolist() if int(keep.sum()) >= 3 else values


def _shapiro(values: list[float]) -> float:
    from scipy.stats import shapiro

    arr = np.asarray(values, dtype=np.float64)
    if float(np.ptp(arr)) == 0.0:  # all distances equal: as far from normal as it gets
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scipy warns about p-value accuracy for N > 5000
        w = float(shapiro(arr).statistic)
    return w if math.isfinite(w) else 0.0
