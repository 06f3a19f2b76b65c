"""Backdoor metrics in BackdoorBench's terms (Wu et al. 2022, "BackdoorBench: A Comprehensive Benchmark of Backdoor
Learning"), and the precision/recall of a poisoned-data detector.

* clean accuracy (C-Acc): accuracy on clean test inputs;
* attack success rate (ASR): among test inputs whose true class is not the target, the share classified as the
  target once triggered;
* robust accuracy (R-Acc): among the same triggered inputs, the share still classified as their true class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from sparring.attacks.poisoning.result import PoisonResult
from sparring.attacks.poisoning.triggers import Trigger
from sparring.errors import ParameterError
from sparring.targets.base import Target

__all__ = ["BackdoorMetrics", "DetectionMetrics", "backdoor_metrics", "detection_metrics", "metrics_table"]


@dataclass(frozen=True)
class BackdoorMetrics:
    clean_accuracy: float
    attack_success_rate: float
    robust_accuracy: float
    n_clean: int
    n_triggered: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DetectionMetrics:
    precision: float
    recall: float
    n_flagged: int
    n_poisoned: int

    @property
    def f1(self) -> float:
        s = self.precision + self.recall
        return 0.0 if s == 0 else 2 * self.precision * self.recall / s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "f1": self.f1}


def backdoor_metrics(
    target: Target, x: Any, y: Any, trigger: Trigger | PoisonResult, target_class: int | None = None
) -> BackdoorMetrics:
    """Clean accuracy, ASR and robust accuracy of ``target`` on test data ``(x, y)`` for a trigger.

    ``trigger`` may be a :class:`PoisonResult` (its trigger and target class are used).
    """
    if isinstance(trigger, PoisonResult):
        target_class = trigger.target_class if target_class is None else target_class
        if trigger.trigger is None:
            raise ParameterError(f"{trigger.attack} plants no trigger; use clean accuracy alone for label flipping.")
        trigger = trigger.trigger
    if target_class is None:
        raise ParameterError("target_class is needed (the class the trigger sends inputs to).")
    xt, yt = target.spec.validate(x, y)
    assert yt is not None
    pred = target.query_labels(xt).cpu()
    yc = yt.cpu()
    keep = yc != target_class
    if not bool(keep.any()):
        raise ParameterError(f"every test label is the target class {target_class}; ASR needs other classes.")
    trig_pred = target.query_labels(trigger.apply(xt[keep.to(xt.device)])).cpu()
    return BackdoorMetrics(
        clean_accuracy=float((pred == yc).float().mean()),
        attack_success_rate=float((trig_pred == target_class).float().mean()),
        robust_accuracy=float((trig_pred == yc[keep]).float().mean()),
        n_clean=int(yc.numel()), n_triggered=int(keep.sum()),
    )


def detection_metrics(flagged: Any, poisoned: Any, n: int | None = None) -> DetectionMetrics:
    """Precision and recall of flagged indices against the truly poisoned ones (both index lists).

    Precision is 1.0 when nothing is flagged (no false alarm), recall 1.0 when nothing was poisoned.
    """
    f = torch.unique(torch.as_tensor(flagged, dtype=torch.int64).reshape(-1))
    p = torch.unique(torch.as_tensor(poisoned, dtype=torch.int64).reshape(-1))

    if n is not None and ((f.numel() and int(f.max()) >= n) or (p.numel() and int(p.max()) >= n)):
        raise ParameterError(f"indices must be below the dataset size {n}.")
    hits = int(torch.isin(f, p).sum())
    return DetectionMetrics(precision=hits / f.numel() if f.numel() else 1.0,
                            recall=hits / p.numel() if p.numel() else 1.0,
                            n_flagged=int(f.numel()), n_poisoned=int(p.numel()))


def metrics_table(rows: Mapping[str, BackdoorMetrics]) -> str:
    """A Markdown before/after table: one row per model (e.g. ``{"poisoned": m0, "fine-pruned": m1}``)."""
    lines = ["| model | clean acc | ASR | robust acc |", "|---|---:|---:|---:|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m.clean_accuracy:.3f} | {m.attack_success_rate:.3f} | {m.robust_accuracy:.3f} |")
    return "\n".join(lines)
