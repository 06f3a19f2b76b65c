"""The target contract every model kind fulfils, and the query counter every target shares."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from sparring.errors import AccessError, ParameterError, QueryBudgetExceeded
from sparring.targets.spec import Access, InputSpec

__all__ = ["QueryCounter", "ScoreKind", "Target"]

ScoreKind = Literal["logits", "probabilities"]
ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)

# Filled by sparring.attacks when attack classes are defined: name -> access needed. Used for AccessError hints.
_ATTACK_NEEDS: dict[str, Access] = {}


def register_attack_access(name: str, needs: Access) -> None:
    _ATTACK_NEEDS[name] = needs


def attacks_for(access: Access) -> list[str]:
    """Names of the registered attacks that work with ``access`` (or less)."""
    return sorted(n for n, need in _ATTACK_NEEDS.items() if need <= access)


class QueryCounter:
    """Counts the examples sent to a model and enforces an optional budget.

    One query is one example evaluated by the model (a batch of 256 costs 256). A batch that would cross the budget
    is refused whole, before anything is sent, with :class:`QueryBudgetExceeded`. Thread-safe.
    """

    def __init__(self, budget: int | None = None) -> None:
        if budget is not None and (not isinstance(budget, int) or budget < 0):
            raise ParameterError(f"query budget must be a non-negative integer or None; got {budget!r}.")
        self.budget = budget
        self.used = 0
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.used

    def charge(self, n: int) -> None:
        with self._lock:
            if self.budget is not None and self.used + n > self.budget:
                raise QueryBudgetExceeded(
                    f"query budget exhausted: {self.used} of {self.budget} queries used, the next batch needs {n}. "
                    "Raise the budget (--query-budget on the command line, attacker.query_budget in a threat model, "
                    "budget= in Python) or lower the attack's query count.",
                    used=self.used, budget=self.budget, requested=n,
                )
            self.used += n
            self.calls += 1

    def reset(self) -> None:
        with self._lock:
            self.used = 0
            self.calls = 0

    def __repr__(self) -> str:
        return f"QueryCounter(used={self.used}, budget={self.budget})"


class Target(ABC):
    """A model under test, seen through one :class:`InputSpec` and one :class:`Access` level.

    Subclasses implement :meth:`_scores_batch` (one batch, already validated, as a float tensor on
    :attr:`device`). The base class validates inputs, batches, counts queries, and applies the output view
    (``top_k``, ``decimals``) that a restricted API would apply.

    Args:
        spec: the input specification.
        access: what the target reveals. May be lowered (e.g. a white-box model seen as scores only).
        output: whether the raw scores are ``"logits"`` or ``"probabilities"``.
        batch_size: examples per model call.
        query_budget: maximum number of examples the target will evaluate; ``None`` for no limit.
        top_k: if set, only the k highest probabilities are revealed (others read 0).
        decimals: if set, probabilities are rounded to this many decimals.
    """

    native_access: Access = Access.SCORES

    def __init__(
        self,
        spec: InputSpec,
        *,
        access: Access | None = None,
        output: ScoreKind = "logits",
        batch_size: int = 256,
        query_budget: int | None = None,
        top_k: int | None = None,
        decimals: int | None = None,
    ) -> None:
        if not isinstance(spec, InputSpec):
            raise ParameterError(f"spec must be an InputSpec; got {type(spec).__name__}.")
        access = self.native_access if access is None else Access(access)
        if access > self.native_access:
            raise AccessError(
                f"{type(self).__name__} can give at most {self.native_access.describe()}; "
                f"{access.describe()} was asked for."
            )
        if output not in ("logits", "probabilities"):
            raise ParameterError(f"output must be 'logits' or 'probabilities'; got {output!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ParameterError(f"batch_size must be a positive integer; got {batch_size!r}.")
        if top_k is not None and not 1 <= top_k <= spec.n_classes:
            raise ParameterError(f"top_k must be in 1..{spec.n_classes}; got {top_k}.")
        if decimals is not None and decimals < 0:
            raise ParameterError(f"decimals must be >= 0; got {decimals}.")
        if (top_k is not None or decimals is not None) and access == Access.GRADIENTS:
            access = Access.SCORES  # a filtered output has no useful gradient
        self.spec = spec
        self.access = access
        self.output: ScoreKind = output
        self.batch_size = batch_size
        self.counter = QueryCounter(query_budget)
        self.top_k = top_k
        self.decimals = decimals

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores ``(n, n_classes)`` for one validated batch on :attr:`device`."""

    def _labels_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self._scores_batch(x).argmax(dim=1)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    # ------------------------------------------------------------------ access
    def require(self, needed: Access, attack: str) -> None:
        """Raise :class:`AccessError` if this target gives less than ``needed``, naming attacks that would work."""
        if self.access >= needed:
            return
        usable = attacks_for(self.access)
        alt = (
            f"Attacks that work with {self.access.describe()}: {', '.join(usable)}."
            if usable
            else f"No attack in this version of sparring works with {self.access.describe()} yet."
        )
        raise AccessError(
            f"{attack} needs {needed.describe()} but {type(self).__name__} gives only {self.access.describe()}. "
            + alt
        )

    # ------------------------------------------------------------------ queries (attack-facing, no validation)
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Scores for a batch that is already a valid float tensor; batched, counted, output view applied."""
        self.require(Access.SCORES, "querying scores")
        return self._batched(x, self._scores_batch, self._view)

    def query_labels(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted labels for a batch that is already a valid float tensor; batched and counted."""
        return self._batched(x, self._labels_batch, None)

    def _batched(
        self,
        x: torch.Tensor,
        fn: Callable[[torch.Tensor], torch.Tensor],
        post: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> torch.Tensor:
        x = x.to(self.device)
        outs = []
        with torch.no_grad():
            for start in range(0, x.shape[0], self.batch_size):
                chunk = x[start : start + self.batch_size]
                self.counter.charge(chunk.shape[0])
                out = fn(chunk)
                outs.append(post(out) if post is not None else out)
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _view(self, scores: torch.Tensor) -> torch.Tensor:
        if self.top_k is None and self.decimals is None:
            return scores
        probs = scores.softmax(dim=1) if self.output == "logits" else scores
        if self.top_k is not None and self.top_k < probs.shape[1]:
            kth = probs.topk(self.top_k, dim=1).values[:, -1:]
            probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
        if self.decimals is not None:
            probs = torch.round(probs, decimals=self.decimals)
        return probs

    @property
    def view_output(self) -> ScoreKind:
        """What :meth:`query` returns: probabilities once a ``top_k``/``decimals`` view is applied."""
        return "probabilities" if (self.top_k is not None or self.decimals is not None) else self.output

    # ------------------------------------------------------------------ user-facing (validated, same kind out)
    def scores(self, x: ArrayT) -> ArrayT:
        """Scores for ``x`` (tensor or numpy, validated against the spec), returned as the same kind."""
        xt, _ = self.spec.validate(x)
        return _like(self.query(xt), x)  # type: ignore[no-any-return]

    def predict(self, x: ArrayT) -> ArrayT:
        """Predicted labels for ``x`` (tensor or numpy, validated), returned as the same kind."""
        xt, _ = self.spec.validate(x)
        return _like(self.query_labels(xt), x)  # type: ignore[no-any-return]

    def accuracy(self, x: torch.Tensor | np.ndarray, y: Any) -> float:
        xt, yt = self.spec.validate(x, y)
        assert yt is not None
        return float((self.query_labels(xt).cpu() == yt.cpu()).float().mean())

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for reports."""
        return {
            "kind": type(self).__name__,
            "access": self.access.name.lower(),
            "output": self.view_output,
            "top_k": self.top_k,
            "decimals": self.decimals,
            "query_budget": self.counter.budget,
            "spec": self.spec.to_dict(),
        }


def _like(out: torch.Tensor, ref: Any) -> Any:
    """Return ``out`` as the same kind as ``ref``: numpy for numpy, tensor on ref's device for tensors."""
    if isinstance(ref, np.ndarray):
        return out.detach().cpu().numpy()  # type: ignore[no-any-return]
    if isinstance(ref, torch.Tensor):
        return out.to(ref.device)
    return out
