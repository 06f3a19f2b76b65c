r"""Layered defence ("defence in depth"): a (robust) model, input preprocessing and a detector as one system, and
its honest evaluation layer by layer.

Each input gets one of three outcomes: **correct** (accepted and classified right), **wrong** (accepted and
classified wrong: the attacker's win) or **rejected** (flagged by the detector). :func:`evaluate_layers` attacks
every sub-system adaptively — BPDA through the preprocessing (Athalye, Carlini, Wagner 2018) and a detector-aware
loss against the detector (Carlini & Wagner 2017) — and reports the outcome table of: the model alone, model +
preprocessing, model + detector, and all layers (plus an optional undefended baseline, to show what robust training
added). Per point, the worst case over the attacks run on that configuration counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sparring.attacks.evasion.pgd import PGD
from sparring.defenses.detect.evaluate import Detector, detector_aware_pgd, scores_of
from sparring.defenses.preprocess.image import bpda, defend
from sparring.errors import ParameterError
from sparring.targets.base import _like
from sparring.targets.torch import TorchTarget

__all__ = ["CORRECT", "REJECTED", "WRONG", "LayerRow", "LayeredDefence", "LayeredEvaluation", "evaluate_layers"]

CORRECT, WRONG, REJECTED = 0, 1, 2
OUTCOMES = ("correct", "wrong", "rejected")


class LayeredDefence:
    """A classifier behind optional preprocessing and an optional detector.

    Args:
        target: the (ideally adversarially trained) classifier, a :class:`~sparring.targets.TorchTarget`.
        preprocess: input transforms applied before the classifier (e.g. ``BitDepth(3)``), as in
            :func:`~sparring.defenses.preprocess.defend`.
        detector: a calibrated detector (``threshold`` set) on the raw input; inputs scoring above its threshold
            are rejected. It may watch another model than ``target``.

    Example:
        >>> from sparring import zoo
        >>> from sparring.defenses.detect.features import MaxSoftmaxDetector
        >>> from sparring.defenses.layered import LayeredDefence
        >>> from sparring.defenses.preprocess import BitDepth
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> det = MaxSoftmaxDetector(target).calibrate(data.x_test[200:400])
        >>> system = LayeredDefence(target, [BitDepth(3)], det)
        >>> sorted(system.outcome_rates(data.x_test[:100], data.y_test[:100]))
        ['correct', 'rejected', 'wrong']
    """

    def __init__(
        self, target: TorchTarget, preprocess: Sequence[nn.Module] = (), detector: Detector | None = None
    ) -> None:
        if not isinstance(target, TorchTarget):
            raise ParameterError(f"LayeredDefence needs a TorchTarget (white-box model); got {type(target).__name__}.")
        pre = tuple(preprocess)
        if detector is not None:
            if not callable(getattr(detector, "score", None)):
                raise ParameterError(f"detector must have a score(x) method; got {type(detector).__name__}.")
            if getattr(detector, "threshold", None) is None:
                raise ParameterError("the detector has no threshold: calibrate it on clean inputs first "
                                     "(detector.calibrate(x_clean) or fit(x_clean)).")
        self.target = target
        self.preprocess = pre
        self.detector = detector
        self.defended = defend(target, *pre) if pre else target

    def outcomes(self, x: torch.Tensor | np.ndarray, y: Any) -> Any:
        """Per input: ``CORRECT`` (0), ``WRONG`` (1) or ``REJECTED`` (2); same kind as ``x``."""
        xt, yt = self.target.spec.validate(x, y)
        assert yt is not None
        pred = torch.as_tensor(self.defended.predict(xt)).cpu()
        out = torch.where(pred == yt.cpu(), CORRECT, WRONG)
        if self.detector is not None:
            threshold = self.detector.threshold
            assert threshold is not None  # checked in __init__
            out = torch.where(scores_of(self.detector, xt) > threshold, REJECTED, out)
        return _like(out, x)

    def outcome_rates(self, x: torch.Tensor | np.ndarray, y: Any) -> dict[str, float]:
        """Fractions of ``correct``, ``wrong`` and ``rejected`` outcomes on ``(x, y)``."""
        return _rates(torch.as_tensor(self.outcomes(torch.as_tensor(x), y)))

    def attack(self, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 40, weight: float = 1.0,
               seed: int = 0) -> torch.Tensor:
        """Per input, the worst outcome over the adaptive attacks on this system (L∞, radius ``eps``).

        Two attacks run, both with BPDA through the preprocessing: PGD on the cross-entropy, and
        :func:`~sparring.defenses.detect.evaluate.detector_aware_pgd` (the margin loss, plus the detector's score
        when there is a detector) — the same pair on every configuration, so rows compare like with like. An input
        counts as ``WRONG`` if any attack got it accepted and misclassified, else ``REJECTED`` if any attack got it
        rejected, else ``CORRECT``.
        """
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or eps < 0:
            raise ParameterError(f"eps must be a finite number >= 0 (L∞ radius in raw units); got {eps!r}.")
        attacked = bpda(self.defended) if self.preprocess else self.target
        res = PGD(eps=eps, steps=steps, seed=seed)(attacked, x, y)
        aware = detector_aware_pgd(attacked, self.detector, x, y, eps=eps, steps=steps,  # type: ignore[arg-type]
                                   weight=weight)
        candidates = [torch.as_tensor(res.x_adv), aware]
        outs = torch.stack([torch.as_tensor(self.outcomes(c, y)).cpu() for c in candidates])
        worst = torch.where((outs == WRONG).any(0), WRONG, torch.where((outs == REJECTED).any(0), REJECTED, CORRECT))
        return worst


def _rates(out: torch.Tensor) -> dict[str, float]:
    return {name: float((out == code).double().mean()) for code, name in enumerate(OUTCOMES)}


@dataclass
class LayerRow:
    """One configuration of :func:`evaluate_layers`: its outcome rates on clean and on attacked inputs."""

    name: str
    clean: dict[str, float]
    attacked: dict[str, float]


@dataclass
class LayeredEvaluation:
    """The outcome table of :func:`evaluate_layers` (JSON-ready with :meth:`to_dict`)."""

    eps: float
    steps: int
    n: int
    rows: list[LayerRow] = field(default_factory=list)

    def row(self, name: str) -> LayerRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise ParameterError(f"no configuration {name!r}; have: {', '.join(r.name for r in self.rows)}.")

    def to_dict(self) -> dict[str, Any]:
        return {"eps": self.eps, "steps": self.steps, "n": self.n, "rows": [asdict(r) for r in self.rows]}

    def table(self) -> str:
        """A Markdown table: clean and attacked outcome rates per configuration."""
        lines = ["| configuration | clean correct | clean rejected | attacked correct | attacked wrong | "
                 "attacked rejected |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.name} | {r.clean['correct']:.3f} | {r.clean['rejected']:.3f} | "
                         f"{r.attacked['correct']:.3f} | {r.attacked['wrong']:.3f} | {r.attacked['rejected']:.3f} |")
        return "\n".join(lines)


def evaluate_layers(
    system: LayeredDefence,
    x: torch.Tensor | np.ndarray,
    y: Any,
    *,
    eps: float,
    steps: int = 40,
    weight: float = 1.0,
    baseline: TorchTarget | None = None,
    seed: int = 0,
) -> LayeredEvaluation:
    """Attack every sub-system of ``system`` adaptively and tabulate the outcomes (each layer's contribution).

    Configurations: ``model`` (the classifier alone), ``model + preprocessing`` (if any), ``model + detector`` (if
    any), ``all layers`` (if both), and ``undefended`` first when a ``baseline`` classifier is given (e.g. the
    model without adversarial training). Each row gives the clean outcome rates and the rates under
    :meth:`LayeredDefence.attack` at L∞ radius ``eps`` (worst case per point). A layer helps if it moves attacked
    points from ``wrong`` to ``correct`` or ``rejected`` without rejecting many clean ones.
    """
    xt, yt = system.target.spec.validate(x, y)
    assert yt is not None
    configs: list[tuple[str, LayeredDefence]] = []
    if baseline is not None:
        configs.append(("undefended", LayeredDefence(baseline)))
    configs.append(("model", LayeredDefence(system.target)))
    if system.preprocess:
        configs.append(("model + preprocessing", LayeredDefence(system.target, system.preprocess)))
    if system.detector is not None:
        configs.append(("model + detector", LayeredDefence(system.target, (), system.detector)))
    if system.preprocess and system.detector is not None:
        configs.append(("all layers", system))
    out = LayeredEvaluation(eps=float(eps), steps=steps, n=int(xt.shape[0]))
    for name, sub in configs:
        clean = _rates(torch.as_tensor(sub.outcomes(xt, yt)))
        attacked = _rates(sub.attack(xt, yt, eps=eps, steps=steps, weight=weight, seed=seed))
        out.rows.append(LayerRow(name, clean, attacked))
    return out
