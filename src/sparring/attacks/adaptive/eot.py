"""Expectation over Transformation (Athalye, Engstrom, Ilyas, Kwok 2018) as a target wrapper, and the randomness
probe that decides when it is needed."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch

from sparring.attacks.adaptive._common import check_target, probe
from sparring.attacks.evasion._checks import check_positive_int
from sparring.errors import ParameterError
from sparring.targets.base import QueryCounter
from sparring.targets.spec import Access
from sparring.targets.torch import Forward, TorchTarget

__all__ = ["is_randomized", "with_eot"]

Reduce = Literal["logits", "probs"]


class _DrawCounter(QueryCounter):
    """A view of another counter that charges ``draws`` queries per example (each example runs ``draws`` times)."""

    def __init__(self, inner: QueryCounter, draws: int) -> None:  # all state lives in ``inner``
        self._inner, self._draws = inner, draws

    @property
    def budget(self) -> int | None:
        return self._inner.budget

    @budget.setter
    def budget(self, value: int | None) -> None:
        self._inner.budget = value

    @property
    def used(self) -> int:
        return self._inner.used

    @used.setter
    def used(self, value: int) -> None:
        self._inner.used = value

    @property
    def calls(self) -> int:
        return self._inner.calls

    @calls.setter
    def calls(self, value: int) -> None:
        self._inner.calls = value

    def charge(self, n: int) -> None:
        self._inner.charge(n * self._draws)

    def reset(self) -> None:
        self._inner.reset()


class _EOTTarget(TorchTarget):
    """A target that evaluates every example on ``draws`` random draws and returns the mean (see :func:`with_eot`)."""

    def __init__(self, base: TorchTarget, draws: int, reduce: Reduce, batch_size: int) -> None:
        self._base, self.draws, self.reduce = base, draws, reduce
        super().__init__(
            base.model, base.spec, access=base.access, output=base.output, batch_size=batch_size,
            top_k=base.top_k, decimals=base.decimals,
        )
        self.counter = _DrawCounter(base.counter, draws)

    def _expected(self, fwd: Forward) -> Forward:
        draws, log_probs = self.draws, self.reduce == "probs" and self.output == "logits"

        def forward(x: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]
            many = x.unsqueeze(0).expand(draws, *x.shape).reshape(draws * n, *x.shape[1:])
            out = fwd(many).reshape(draws, n, -1)
            if log_probs:  # log of the mean probability: valid logits whose softmax is the expected prediction
                return torch.logsumexp(out.log_softmax(dim=2), dim=0) - math.log(draws)
            return out.mean(dim=0)

        return forward

    def _raw_forward(self) -> Forward:
        return self._expected(self._base._raw_forward())

    def differentiable(self, attack: str = "this attack") -> Forward:
        self.require(Access.GRADIENTS, attack)
        return self._expected(self._base.differentiable(attack))  # the base charges draws × n

    @contextmanager
    def frozen(self) -> Iterator[TorchTarget]:
        with self._base.frozen():
            yield self

    def describe(self) -> dict[str, Any]:
        d = self._base.describe()
        d["adaptive"] = [*d.get("adaptive", []), f"eot: mean {self.reduce} over {self.draws} draws"]
        return d


def with_eot(
    target: TorchTarget, draws: int = 20, *, reduce: Reduce = "logits", batch_size: int | None = None
) -> TorchTarget:
    r"""Expectation over Transformation for randomized models (Athalye, Engstrom, Ilyas, Kwok 2018, "Synthesizing
    Robust Adversarial Examples", eq. 1; used against randomized defences in Athalye, Carlini, Wagner 2018,
    section 4.2).

    Threat model: white-box against a model with internal randomness (noise injection, random resizing/padding,
    stochastic activations). Instead of one random draw, the attack optimises the expectation
    :math:`\mathbb{E}_{r}[f_r(x)]`: every example is repeated ``draws`` times, the whole batch goes through the
    model in one forward pass, and the ``draws`` outputs are averaged.

    ``reduce="logits"`` averages logits; ``reduce="probs"`` averages softmax probabilities and returns their log
    (valid logits whose softmax is the expected probability). The gradient of the mean is the mean of the
    gradients, so for a loss linear in the logits (e.g. a logit margin with a fixed other class) this equals
    averaging loss gradients over the draws. AutoAttack's ``rand`` version (Croce & Hein 2020) instead averages the
    gradient of the *loss* over 20 draws (EOT inside APGD); here the expectation is taken on the model's output so
    that every attack works unchanged, which differs only through the loss's curvature (and not at all for
    sign-based L∞ steps on a linear loss). The predictions that decide success (``query``, ``query_labels``, and
    the ``argmax`` of the differentiable forward) are the expected prediction as well, so an example counts as
    broken only if it is broken on average, not on one lucky draw.

    Queries: one example evaluated on ``draws`` draws costs ``draws`` queries of the shared counter (the model
    really runs that often); the wrapper's own ``counter`` is a view of the original one. The wrapper's
    ``batch_size`` is the original's divided by ``draws`` (at least 1), so one model call holds about as many
    examples as before. On a deterministic model the output equals the original's up to float rounding of the
    mean (exactly, with ``draws=1``).

    Args:
        target: the white-box target (may itself be a BPDA wrapper).
        draws: random draws per example (>= 1); the paper and AutoAttack use 20 or more.
        reduce: ``"logits"`` or ``"probs"``; a model whose output is already probabilities is averaged as is.
        batch_size: examples per call of the wrapper; default ``max(1, target.batch_size // draws)``.

    Example:
        >>> from sparring import PGD, zoo
        >>> from sparring.attacks.adaptive import with_eot
        >>> noisy = zoo.load("digits-cnn")  # a randomized model in practice
        >>> eot = with_eot(noisy, draws=4)
        >>> data = zoo.data("digits-cnn")
        >>> PGD(eps=0.1, steps=10)(eot, data.x_test[:16], data.y_test[:16]).cost.queries >= 4 * 16
        True
    """
    t = check_target(target, "with_eot")
    check_positive_int(draws, "draws")
    if reduce not in ("logits", "probs"):
        raise ParameterError(f"reduce must be 'logits' or 'probs'; got {reduce!r}.")
    bs = max(1, t.batch_size // draws) if batch_size is None else check_positive_int(batch_size, "batch_size")
    return _EOTTarget(t, draws, reduce, bs)


def is_randomized(target: TorchTarget, x: torch.Tensor | np.ndarray, tries: int = 2) -> bool:
    """Whether the same input gives different scores on repeated forward passes (a randomized model).

    The batch ``x`` is evaluated ``tries`` times in eval mode (as attacks see the model, inside ``frozen()``);
    scores count as different when any differs by more than ``1e-5 × (1 + max |score|)``, so the last-bit
    nondeterminism of some GPU kernels is not mistaken for a randomized defence. Costs ``tries × len(x)`` queries.

    Args:
        target: the white-box target.
        x: a small batch of valid inputs (tensor or numpy).
        tries: forward passes to compare (>= 2).

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.adaptive import is_randomized
        >>> is_randomized(zoo.load("digits-cnn"), zoo.data("digits-cnn").x_test[:8])
        False
    """
    t = check_target(target, "is_randomized")
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 2:
        raise ParameterError(f"tries must be an integer >= 2 (two passes to compare); got {tries!r}.")
    xt = probe(t, x)
    ask = t.query if t.access >= Access.SCORES else t.query_labels
    with t.frozen():
        first = ask(xt).float()
        tol = 1e-5 * (1.0 + float(first.abs().max()))
        return any(float((ask(xt).float() - first).abs().max()) > tol for _ in range(tries - 1))
