"""Output-perturbation defences against model extraction, as Target wrappers a server can serve.

A prediction API leaks through its outputs: full-precision probabilities let equation solving recover a linear
model exactly (Tramèr et al. 2016) and give a surrogate soft labels (Orekondy et al. 2019). The wrappers here serve
an inner target through less revealing outputs, reusing the :class:`~sparring.targets.Target` output views:

* rounding to ``decimals`` (Tramèr et al. 2016, §8 "rounding confidences");
* top-k probabilities only (the others read 0);
* labels only (``labels_only=True``: decision-based access);
* reverse sigmoid (Lee, Lee, Kim, Lee, "Defending Against NN Model Stealing Attacks Using Deceptive
  Perturbations", IEEE S&P Workshops 2019): ``ŷ = α·(y − β·(σ(γ·σ⁻¹(y)) − ½))``, normalised to sum 1; it changes
  the probabilities, never which class ranks first in practice for ``β ≤ 1``, and makes the log-ratios an attacker
  linearises meaningless.

>>> from sparring import zoo
>>> served = OutputDefense(zoo.load("breast-cancer-logreg"), perturbation=ReverseSigmoid(beta=0.7, gamma=0.4))
>>> served.view_output
'probabilities'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from sparring.errors import AccessError, ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access

__all__ = ["OutputDefense", "ReverseSigmoid"]

Perturbation = Callable[[torch.Tensor], torch.Tensor]


class ReverseSigmoid:
    """The reverse-sigmoid perturbation of Lee et al. 2019 (eq. 3), applied to a batch of probability vectors.

    ``r = β·(σ(γ·logit(y)) − ½)``, ``ŷ = (y − r) / Σ(y − r)``. For ``β ≤ 1`` every output stays positive.

    Args:
        beta: perturbation magnitude, in ``(0, 1]``.
        gamma: convergence of the sigmoid, ``> 0`` (smaller: flatter ``σ(γ·logit)``, stronger deception).
    """

    def __init__(self, *, beta: float = 0.7, gamma: float = 0.4) -> None:
        self.beta = beta
        self.gamma = gamma

    def get_params(self) -> dict[str, Any]:
        return {"beta": self.beta, "gamma": self.gamma}

    def check(self) -> None:
        if not (isinstance(self.beta, int | float) and 0 < self.beta <= 1):
            raise ParameterError(f"reverse sigmoid beta must be in (0, 1] (outputs stay positive); got {self.beta!r}.")
        if not (isinstance(self.gamma, int | float) and self.gamma > 0 and math.isfinite(self.gamma)):
            raise ParameterError(f"reverse sigmoid gamma must be a finite number > 0, e.g. 0.4; got {self.gamma!r}.")

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        p = probs.double().clamp(1e-12, 1 - 1e-12)
        r = self.beta * (torch.sigmoid(self.gamma * torch.logit(p)) - 0.5)
        out = (p - r).clamp_min(0)
        return (out / out.sum(dim=1, keepdim=True)).to(probs.dtype)


class OutputDefense(Target):
    """Serve ``inner`` through a defended output: perturbed, rounded, top-k, or labels only.

    The inner target is queried (and its own counter charged) for every example; this wrapper has its own counter
    and budget too. Labels are the inner model's labels (a perturbation never changes what :meth:`predict` says).

    Args:
        inner: the model to protect (scores access, or labels access with ``labels_only=True``).
        perturbation: applied to the probability vectors, e.g. :class:`ReverseSigmoid`; ``None`` for none.
        decimals: round the probabilities to this many decimals.
        top_k: reveal only the ``top_k`` highest probabilities.
        labels_only: answer labels only (:meth:`query` then raises :class:`~sparring.errors.AccessError`).
        batch_size, query_budget: see :class:`~sparring.targets.Target`.
    """

    native_access = Access.SCORES

    def __init__(
        self, inner: Target, *, perturbation: Perturbation | None = None, decimals: int | None = None,
        top_k: int | None = None, labels_only: bool = False, batch_size: int = 256, query_budget: int | None = None,
    ) -> None:
        if not isinstance(inner, Target):
            raise ParameterError(f"OutputDefense wraps a sparring Target; got {type(inner).__name__}.")
        if not labels_only and inner.access < Access.SCORES:
            raise AccessError(
                f"the inner {type(inner).__name__} gives {inner.access.describe()}; an output defence on scores needs "
                "scores. Use labels_only=True, or wrap a target with scores access."
            )
        check = getattr(perturbation, "check", None)
        if callable(check):
            check()
        elif perturbation is not None and not callable(perturbation):
            raise ParameterError(f"perturbation must be callable on a probability batch; got {perturbation!r}.")
        super().__init__(
            inner.spec, access=Access.LABELS if labels_only else Access.SCORES, output="probabilities",
            batch_size=batch_size, query_budget=query_budget, top_k=top_k, decimals=decimals,
        )
        self.inner = inner
        self.perturbation = perturbation

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.inner.query(x)
        probs = scores.softmax(dim=1) if self.inner.view_output == "logits" else scores
        return probs if self.perturbation is None else self.perturbation(probs)

    def _labels_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.query_labels(x)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["inner"] = self.inner.describe()
        get = getattr(self.perturbation, "get_params", None)
        d["perturbation"] = (
            None if self.perturbation is None
            else {"kind": type(self.perturbation).__name__, **(get() if callable(get) else {})}
        )
        return d
