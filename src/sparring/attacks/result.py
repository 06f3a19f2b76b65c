"""Typed results shared by every attack family."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["AttackResult", "Cost", "EvasionResult", "clopper_pearson"]

CONFIDENCE = 0.95
"""Confidence of the two-sided Clopper–Pearson intervals reported with robust accuracies."""


@dataclass
class Cost:
    """What an attack spent. Counts are per example: a batch of 256 through the model costs 256.

    Attributes:
        queries: examples evaluated by the target (forward passes, including those that also gave gradients).
        gradients: examples for which an input gradient was computed (backward passes).
        seconds: wall-clock time of the whole call.
    """

    queries: int = 0
    gradients: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"queries": self.queries, "gradients": self.gradients, "seconds": round(self.seconds, 4)}


@dataclass
class AttackResult:
    """Base of every attack result: which attack, with which parameters, at what cost."""

    attack: str
    params: dict[str, Any]
    cost: Cost

    def summary(self) -> dict[str, Any]:
        return {"attack": self.attack, "params": self.params, "cost": self.cost.to_dict()}


@dataclass
class EvasionResult(AttackResult):
    """The outcome of an evasion attack on a batch.

    Attributes:
        x_adv: adversarial inputs, same kind (tensor/numpy), device and shape as the inputs given. Where the attack
            failed, the input itself (or the attack's last iterate if ``keep_failed`` was asked for).
        y: the true labels.
        success: per example, True where the attack achieved its goal (untargeted: prediction != y;
            targeted: prediction == target label). Examples already misclassified count as successes (with zero
            perturbation) in untargeted mode.
        clean_correct: per example, True where the clean input was classified correctly.
        adv_pred: the target's prediction on ``x_adv``.
        norms: per-example perturbation size ``||x_adv - x||`` in the attack's norm.
        target_labels: the target classes of a targeted attack, else None.
        norm: the norm name (``"linf"`` or ``"l2"``).
        unknown: per example, True where the attack did not finish (the target's query budget ran out before the
            attack was done with it) and had not broken it: neither robust nor broken. ``success`` is False there
            and :attr:`robust_accuracy` does not count it; :attr:`unknown_rate` does. None (read as all False) in
            results built before this field existed.
        draws: random draws of the model behind every prediction that decides ``success``, ``clean_correct`` and
            ``adv_pred``: 1 for a deterministic model (one query); for a randomized model (declared with
            ``draws=`` or detected by querying the same inputs twice) the final candidates and the clean inputs are
            re-scored with ``draws`` fresh draws and each prediction is the *majority* class over them (ties go to
            the true class, against the attacker).
        goal_fraction: per example, the fraction of the re-scoring draws on ``x_adv`` that met the goal: the
            chance that one query of it fools the model (None when ``draws == 1``). Its mean is
            :attr:`single_query_fooling_rate`, reported beside (never instead of) the majority verdict.
        extras: attack-specific facts, e.g. ``"budget_exhausted"`` (the target's query budget stopped the attack),
            ``"randomized"`` (how randomness was established: ``"declared"`` or ``"detected"``), and
            ``"single_draw_success"`` (the fraction the attack itself judged broken, on single draws).

    All summaries are plain JSON (numbers, strings, lists): :meth:`summary` gives ``n_unknown``, ``unknown_rate``,
    ``draws``, ``robust_interval`` (Clopper–Pearson, :data:`CONFIDENCE`) and ``single_query_fooling_rate``.
    """

    x_adv: Any = None
    y: Any = None
    success: Any = None
    clean_correct: Any = None
    adv_pred: Any = None
    norms: Any = None
    target_labels: Any = None
    norm: str = "linf"
    extras: dict[str, Any] = field(default_factory=dict)
    unknown: Any = None
    draws: int = 1
    goal_fraction: Any = None

    @property
    def n(self) -> int:
        return len(self.success)

    @property
    def clean_accuracy(self) -> float:
        return float(_np(self.clean_correct).mean())

    @property
    def unknown_mask(self) -> np.ndarray:
        """Per example (numpy bool): the attack did not finish with it and had not broken it."""
        if self.unknown is None:
            return np.zeros(self.n, dtype=bool)
        return _np(self.unknown).astype(bool)

    @property
    def n_unknown(self) -> int:
        return int(self.unknown_mask.sum())

    @property
    def unknown_rate(self) -> float:
        """Fraction of examples the attack left unfinished (budget exhausted): neither robust nor broken."""
        return float(self.unknown_mask.mean()) if self.n else 0.0

    @property
    def robust_mask(self) -> np.ndarray:
        """Per example (numpy bool): finished and still classified correctly (the examples robust accuracy counts)."""
        correct = np.asarray(_np(self.adv_pred) == _np(self.y), dtype=bool)
        out: np.ndarray = correct & ~self.unknown_mask
        return out

    @property
    def robust_accuracy(self) -> float:
        """Fraction of examples the attack finished and that are still classified correctly. Unfinished examples
        (:attr:`unknown`) are not robust: they count in :attr:`unknown_rate` instead."""
        return float(self.robust_mask.mean()) if self.n else 0.0

    @property
    def robust_interval(self) -> tuple[float, float]:
        """Two-sided Clopper–Pearson interval (:data:`CONFIDENCE`) on :attr:`robust_accuracy` over the ``n``
        examples (Clopper & Pearson 1934)."""
        return clopper_pearson(int(self.robust_mask.sum()), self.n)

    @property
    def success_rate(self) -> float:
        """Fraction of examples where the attack reached its goal."""
        return float(_np(self.success).mean())

    @property
    def attack_success_rate(self) -> float:
        """Among examples classified correctly when clean, the fraction the attack broke (or moved to the target)."""
        cc = _np(self.clean_correct)
        return float(_np(self.success)[cc].mean()) if cc.any() else 0.0

    @property
    def single_query_fooling_rate(self) -> float | None:
        """Mean over examples of :attr:`goal_fraction`: how often one query of ``x_adv`` meets the goal on a
        randomized model (None for a deterministic one, where it equals :attr:`success_rate`)."""
        if self.goal_fraction is None:
            return None
        return float(_np(self.goal_fraction).mean()) if self.n else 0.0

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        norms = _np(self.norms)
        # perturbation sizes of real successes only: points already misclassified (norm 0) say nothing of the attack
        moved = _np(self.success) & _np(self.clean_correct)
        lo, hi = self.robust_interval
        s.update(
            n=self.n,
            norm=self.norm,
            targeted=self.target_labels is not None,
            clean_accuracy=self.clean_accuracy,
            robust_accuracy=self.robust_accuracy,
            robust_interval=[lo, hi],
            n_unknown=self.n_unknown,
            unknown_rate=self.unknown_rate,
            budget_exhausted=bool(self.extras.get("budget_exhausted", False)),
            draws=int(self.draws),
            single_query_fooling_rate=self.single_query_fooling_rate,
            success_rate=self.success_rate,
            attack_success_rate=self.attack_success_rate,
            median_norm_of_successes=float(np.median(norms[moved])) if moved.any() else None,
            max_norm=float(norms.max()) if norms.size else 0.0,
        )
        return s


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided exact binomial interval for ``k`` successes in ``n`` trials (Clopper & Pearson 1934, "The use of
    confidence or fiducial limits illustrated in the case of the binomial"): ``(0, 1)`` when ``n == 0``."""
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import beta

    a = (1.0 - confidence) / 2
    lo = 0.0 if k <= 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def _np(v: Any) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    return np.asarray(v)
