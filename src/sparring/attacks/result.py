"""Typed results shared by every attack family."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["AttackResult", "Cost", "EvasionResult"]


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

    @property
    def n(self) -> int:
        return len(self.success)

    @property
    def clean_accuracy(self) -> float:
        return float(_np(self.clean_correct).mean())

    @property
    def robust_accuracy(self) -> float:
        """Fraction of examples still classified correctly after the attack."""
        return float((_np(self.adv_pred) == _np(self.y)).mean())

    @property
    def success_rate(self) -> float:
        """Fraction of examples where the attack reached its goal."""
        return float(_np(self.success).mean())

    @property
    def attack_success_rate(self) -> float:
        """Among examples classified correctly when clean, the fraction the attack broke (or moved to the target)."""
        cc = _np(self.clean_correct)
        return float(_np(self.success)[cc].mean()) if cc.any() else 0.0

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        norms = _np(self.norms)
        succ = _np(self.success)
        s.update(
            n=self.n,
            norm=self.norm,
            targeted=self.target_labels is not None,
            clean_accuracy=self.clean_accuracy,
            robust_accuracy=self.robust_accuracy,
            success_rate=self.success_rate,
            attack_success_rate=self.attack_success_rate,
            median_norm_of_successes=float(np.median(norms[succ])) if succ.any() else None,
            max_norm=float(norms.max()) if norms.size else 0.0,
        )
        return s


def _np(v: Any) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    return np.asarray(v)
