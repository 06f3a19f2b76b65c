"""How well a stolen model matches its victim: fidelity, accuracy, queries (Jagielski et al. 2020).

Jagielski, Carlini, Berthelot, Kurakin, Papernot, "High Accuracy and High Fidelity Extraction of Neural Networks"
(USENIX Security 2020) separate two goals of an extraction attacker: *accuracy* (the stolen model is right on the
task) and *fidelity* (it agrees with the victim, mistakes included: what transfer attacks need). Both are measured
here on held-out data that the attacker never queried; the victim's labels on that data are computed by the
evaluator, not charged to the attacker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparring.attacks.result import AttackResult
from sparring.errors import InputSpecError
from sparring.targets.base import Target

__all__ = ["ExtractionResult", "accuracy", "agreement", "fidelity"]


def _labels(model: Target | torch.Tensor | np.ndarray, x: torch.Tensor | np.ndarray | None) -> torch.Tensor:
    if isinstance(model, Target):
        if x is None:
            raise InputSpecError("inputs x are needed to ask a Target for its labels; got x=None.")
        xt, _ = model.spec.validate(x)
        return model.query_labels(xt).cpu()
    return torch.as_tensor(model).cpu().long()


def agreement(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Fraction of positions where two label vectors agree."""
    at, bt = torch.as_tensor(a).cpu().long().reshape(-1), torch.as_tensor(b).cpu().long().reshape(-1)
    if at.shape != bt.shape or at.numel() == 0:
        raise InputSpecError(
            f"agreement needs two non-empty label vectors of the same length; got {tuple(at.shape)} and "
            f"{tuple(bt.shape)}. Predict both models on the same inputs."
        )
    return float((at == bt).float().mean())


def fidelity(
    surrogate: Target | torch.Tensor | np.ndarray,
    victim: Target | torch.Tensor | np.ndarray,
    x: torch.Tensor | np.ndarray | None = None,
) -> float:
    """Label agreement between ``surrogate`` and ``victim`` on ``x`` (Jagielski et al. 2020, top-1 fidelity).

    Either side may be a :class:`Target` (queried on ``x``; a victim target is charged those queries) or a label
    vector already computed on ``x`` (e.g. the victim's labels, computed once by the evaluator).
    """
    return agreement(_labels(surrogate, x), _labels(victim, x))


def accuracy(model: Target | torch.Tensor | np.ndarray, x: torch.Tensor | np.ndarray | None, y: Any) -> float:
    """Task accuracy of ``model`` (a Target, or its labels on ``x``) against true labels ``y``."""
    return agreement(_labels(model, x), torch.as_tensor(y))


@dataclass
class ExtractionResult(AttackResult):
    """The outcome of a model-extraction attack.

    Attributes:
        surrogate: the stolen model as a white-box :class:`~sparring.targets.TorchTarget` (same spec as the victim).
        queries: examples the victim evaluated for the attack (the cost the victim's owner sees).
        history: one row per training round: ``{"queries", "fidelity", "accuracy"}`` (the last two only when
            evaluation data was given; they cost the attacker nothing).
        label_mode: ``"soft"`` (probability vectors) or ``"hard"`` (labels only).
        extras: ``"queries_x"``: every input sent to the victim, in order (e.g. to replay a client's stream
            through :class:`~sparring.defenses.detect.extraction.PradaDetector`); ``"budget_exhausted"``: the
            victim's query budget stopped the attack early (its fidelity is then a lower bound, not the risk).
    """

    surrogate: Any = None
    queries: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    label_mode: str = "soft"
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def fidelity(self) -> float | None:
        """Fidelity after the last round, if evaluation data was given."""
        return self.history[-1].get("fidelity") if self.history else None

    @property
    def accuracy(self) -> float | None:
        return self.history[-1].get("accuracy") if self.history else None

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        s.update(queries=self.queries, label_mode=self.label_mode, fidelity=self.fidelity, accuracy=self.accuracy,
                 history=self.history, budget_exhausted=bool(self.extras.get("budget_exhausted", False)))
        return s
