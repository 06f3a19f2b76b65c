"""Judging attacks on randomized models by their expected prediction, not by one draw.

A randomized model (noise injection, random transforms, stochastic activations) answers the same input differently
from one query to the next. An attack that stops at the first iterate one draw misclassified reports a robust
accuracy that a second query would contradict (Athalye, Carlini, Wagner 2018, section 4.2, on evaluating randomized
defences by their expectation). Here the final candidates and the clean inputs are re-scored with fresh draws and
each prediction is the majority class over them; the chance that a single query of the candidate fools the model is
reported beside it.

* :func:`detect_randomized`: two queries of the same few inputs that disagree beyond float rounding.
* :func:`majority_votes`: per-example class counts over ``draws`` fresh draws, chunked to bound memory.
* :func:`vote`: the majority prediction, ties resolved against the attacker.
"""

from __future__ import annotations

from typing import Any

import torch

from sparring.targets.base import Target
from sparring.targets.spec import Access

__all__ = ["DEFAULT_DRAWS", "chunk_size", "detect_randomized", "judge_target", "majority_votes", "vote"]

DEFAULT_DRAWS = 100
"""Fresh draws per prediction when a randomized model is re-scored (declare another number with ``draws=``)."""

_PROBE = 16  # inputs queried twice to detect randomness
_ELEMENTS = 2**22  # floats per re-scoring chunk (inputs × draws × features)


def detect_randomized(target: Target, x: torch.Tensor) -> bool:
    """Whether two queries of the first (up to 16) inputs of ``x`` disagree: scores by more than
    ``1e-5 × (1 + max |score|)`` (so last-bit GPU nondeterminism is not randomness), labels at all.

    Costs ``2 × min(16, len(x))`` queries. Targets with a query budget are not probed (the budget belongs to the
    attack); declare ``draws=`` for them.
    """
    if target.counter.budget is not None or x.shape[0] == 0:
        return False
    probe = x[:_PROBE].to(target.device)
    ask = target.query if target.access >= Access.SCORES else target.query_labels
    first = ask(probe).float()
    second = ask(probe).float()
    tol = 1e-5 * (1.0 + float(first.abs().max()))
    return bool((second - first).abs().max() > tol)


def judge_target(target: Target) -> Target:
    """The target whose single draws are counted: an EOT wrapper (:func:`~sparring.attacks.adaptive.with_eot`)
    already averages draws, so its base model is re-scored instead (same counter, same forward per draw)."""
    t: Any = target
    while isinstance(getattr(t, "draws", None), int) and hasattr(t, "reduce") and isinstance(
            getattr(t, "_base", None), Target):
        t = t._base
    out: Target = t
    return out


def majority_votes(target: Target, x: torch.Tensor, draws: int) -> torch.Tensor:
    """Class counts ``(N, n_classes)`` of ``x`` over ``draws`` fresh queries each (``draws × N`` queries).

    Raises :class:`~sparring.errors.QueryBudgetExceeded` from the target if its budget runs out (callers re-score
    in chunks of :func:`chunk_size` inputs to keep what was finished).
    """
    n_classes = target.spec.n_classes
    n = x.shape[0]
    counts = torch.zeros(n, n_classes, dtype=torch.long, device=x.device)
    if n == 0:
        return counts
    many = x.unsqueeze(0).expand(draws, *x.shape).reshape(draws * n, *x.shape[1:])
    labels = target.query_labels(many).to(x.device).reshape(draws, n)
    counts.scatter_add_(1, labels.T.long(), torch.ones(n, draws, dtype=torch.long, device=x.device))
    return counts


def chunk_size(x: torch.Tensor, draws: int) -> int:
    """Inputs per re-scoring chunk so that ``inputs × draws × features`` stays under about 4 M floats."""
    per = max(1, x[0].numel() * draws) if x.shape[0] else 1
    return max(1, _ELEMENTS // per)


def vote(counts: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None) -> torch.Tensor:
    """The majority class per row of ``counts``, ties against the attacker: untargeted, the true class wins any
    tie it is part of; targeted, the target class is predicted only with strictly more votes than every other."""
    top = counts.max(dim=1).values
    if target_labels is None:
        on_y = counts.gather(1, y[:, None])[:, 0]
        return torch.where(on_y == top, y, counts.argmax(dim=1))
    t = target_labels[:, None]
    on_t = counts.gather(1, t)[:, 0]
    others = counts.scatter(1, t, -1)
    other_top = others.max(dim=1).values
    on_y = counts.gather(1, y[:, None])[:, 0]
    best_other = torch.where(on_y == other_top, y, others.argmax(dim=1))
    return torch.where(on_t > other_top, target_labels, best_other)
