"""Detector metrics shared by every detector: ROC AUC (Mann–Whitney) and the true-positive rate at a fixed
false-positive rate."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from sparring.errors import ParameterError

__all__ = ["roc_auc", "tpr_at_fpr"]


def _as_scores(s: torch.Tensor | np.ndarray | Sequence[float], name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(s, dtype=np.float64) if not isinstance(s, torch.Tensor) else s)
    t = t.detach().to("cpu", torch.float64).reshape(-1)
    if t.numel() == 0:
        raise ParameterError(f"{name} is empty; give at least one score.")
    if not bool(torch.isfinite(t).all()):
        raise ParameterError(f"{name} contains NaN or inf.")
    return t


def roc_auc(
    negatives: torch.Tensor | np.ndarray | Sequence[float], positives: torch.Tensor | np.ndarray | Sequence[float]
) -> float:
    """Area under the ROC curve for scores where higher means positive: ``P(s⁺ > s⁻) + ½ P(s⁺ = s⁻)``.

    Computed from average ranks (the Mann–Whitney U statistic), ties counted half, in ``O(n log n)``.

    Example:
        >>> from sparring.defenses.detect import roc_auc
        >>> roc_auc([0.1, 0.2, 0.3], [0.25, 0.4])
        0.8333333333333334
    """
    neg, pos = _as_scores(negatives, "negatives"), _as_scores(positives, "positives")
    both = torch.cat([neg, pos])
    _, inverse, counts = torch.unique(both, sorted=True, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # 0-based rank of each distinct value's first occurrence
    avg_rank = first.double() + (counts.double() + 1) / 2  # 1-based average rank of the ties
    rank_pos = avg_rank[inverse[neg.numel() :]].sum()
    n_pos, n_neg = pos.numel(), neg.numel()
    return float((rank_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tpr_at_fpr(
    negatives: torch.Tensor | np.ndarray | Sequence[float],
    positives: torch.Tensor | np.ndarray | Sequence[float],
    fpr: float = 0.05,
) -> tuple[float, float]:
    """The true-positive rate at a false-positive rate of at most ``fpr``, and the threshold that gives it.

    The threshold is the ``⌊fpr·n⁻⌋+1``-th largest negative score; positives strictly above it count as detected,
    so at most ``⌊fpr·n⁻⌋`` negatives do (the ROC point with the largest TPR at FPR ≤ ``fpr``).

    Returns:
        ``(tpr, threshold)``.
    """
    if isinstance(fpr, bool) or not isinstance(fpr, int | float) or not 0 <= fpr < 1:
        raise ParameterError(f"fpr must be a number in [0, 1), e.g. 0.05; got {fpr!r}.")
    neg, pos = _as_scores(negatives, "negatives"), _as_scores(positives, "positives")
    allowed = math.floor(fpr * neg.numel())
    threshold = float(neg.sort(descending=True).values[allowed])
    return float((pos > threshold).double().mean()), threshold
