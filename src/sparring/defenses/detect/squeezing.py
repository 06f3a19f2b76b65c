r"""Adversarial-input detection: feature squeezing (Xu, Evans, Qi 2018) and its evaluation.

A detector flags inputs whose prediction changes too much under a squeezing transform. Like every detector, it is
only as good as the attack it was evaluated against: an attacker who knows the detector optimises against it too
(Carlini, Wagner 2017, "Adversarial Examples Are Not Easily Detected"; He, Wei, Chen, Carlini, Song 2017,
"Adversarial Example Defenses: Ensembles of Weak Defenses are not Strong", which breaks feature squeezing). Report
the ROC AUC of :func:`evaluate` against an adaptive attack built on
:meth:`FeatureSqueezingDetector.differentiable_score`, not only against a non-adaptive one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from sparring.defenses.detect.evaluate import evaluate
from sparring.defenses.preprocess.image import (
    BitDepth,
    MedianSmoothing,
    Preprocessor,
    check_transforms,
    image_bounds,
)
from sparring.errors import ParameterError
from sparring.targets.base import Target, _like
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["FeatureSqueezingDetector", "evaluate"]

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


class FeatureSqueezingDetector:
    r"""Feature squeezing detection (Xu, Evans, Qi 2018, "Feature Squeezing: Detecting Adversarial Examples in Deep
    Neural Networks", NDSS; the joint detection with several squeezers).

    Threat model: the detector sees the model's class probabilities (score access is enough); it flags an input
    whose prediction moves when the input is squeezed. The score of ``x`` is the paper's joint score

    .. math:: s(x) = \max_{k} \lVert \mathrm{softmax}(f(x)) - \mathrm{softmax}(f(q_k(x))) \rVert_1

    over the squeezers :math:`q_k`; :meth:`fit` sets the threshold at the ``1 - fpr`` quantile of the scores of
    clean inputs (the paper: 5% false positives on legitimate examples), and :meth:`detect` flags scores above it.
    Each scored example costs ``1 + len(squeezers)`` queries of the target.

    Feature squeezing is not robust to an adaptive attacker (He et al. 2017). On the zoo digits CNN with
    ``(BitDepth(2), MedianSmoothing(2))``, the ROC AUC is 0.97 against non-adaptive C&W L2 and L∞ PGD (eps 0.2)
    examples, but 0.39 (below chance; 2% detected at 5% false positives) against L∞ PGD with the same budget that
    fools the model and both squeezed models at once, their gradients taken through BPDA. An attacker can also
    minimise :meth:`differentiable_score` directly. (On these upsampled digits 1-bit squeezing, the paper's MNIST
    setting, flags many clean digits: its 5% threshold is high; 2 bits separate better.)

    Args:
        target: the classifier to protect (any :class:`~sparring.targets.Target` with score access; a
            :class:`~sparring.targets.TorchTarget` for :meth:`differentiable_score`).
        squeezers: transforms on raw ``(N, C, H, W)`` batches that keep the shape; default ``(BitDepth(1),
            MedianSmoothing(2))``, the paper's MNIST configuration (bounds from the target's spec). Channels-last
            inputs are permuted for them.
        threshold: a known threshold; otherwise set by :meth:`fit`.

    Example:
        >>> from sparring import zoo
        >>> from sparring.defenses.detect import FeatureSqueezingDetector
        >>> from sparring.defenses.preprocess import BitDepth, MedianSmoothing
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> det = FeatureSqueezingDetector(target, (BitDepth(1), MedianSmoothing(2))).fit(data.x_test[:200])
        >>> float(det.detect(data.x_test[200:400]).float().mean()) < 0.15
        True
    """

    def __init__(
        self, target: Target, squeezers: Sequence[nn.Module] | None = None, *, threshold: float | None = None
    ) -> None:
        if not isinstance(target, Target):
            raise ParameterError(f"target must be a sparring Target (e.g. TorchTarget); got {type(target).__name__}.")
        target.require(Access.SCORES, "FeatureSqueezingDetector")
        spec = target.spec
        bounds = image_bounds(spec, "feature squeezing", "feature squeezing")
        squeeze = (BitDepth(1, bounds=bounds), MedianSmoothing(2)) if squeezers is None else tuple(squeezers)
        if not squeeze:
            raise ParameterError("squeezers must hold at least one transform, e.g. (BitDepth(1), MedianSmoothing(2)).")
        check_transforms(squeeze, bounds, target.device, noun="squeezer", example="BitDepth(1)")
        if threshold is not None and not (isinstance(threshold, int | float) and math.isfinite(threshold)):
            raise ParameterError(f"threshold must be a finite number or None (then call fit); got {threshold!r}.")
        self.target = target
        self.squeezers = squeeze
        self.threshold = None if threshold is None else float(threshold)

    # ------------------------------------------------------------------ squeezing
    def _squeeze(self, squeezer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``squeezer`` on ``x`` in the ``(N, C, H, W)`` layout it expects."""
        if self.target.spec.layout == "hwc":
            return squeezer(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return squeezer(x)

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        out = self.target.query(x).float()
        return out.softmax(dim=1) if self.target.view_output == "logits" else out

    def _score_valid(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of a validated batch, ``(N,)`` on the target's device."""
        t = self.target
        x = x.to(t.device)
        parts = []
        with torch.no_grad():
            for start in range(0, x.shape[0], t.batch_size):
                chunk = x[start : start + t.batch_size]
                p0 = self._probs(chunk)
                dist = [(p0 - self._probs(self._squeeze(s, chunk).to(chunk.dtype))).abs().sum(dim=1)
                        for s in self.squeezers]
                parts.append(torch.stack(dist).amax(dim=0))
        return torch.cat(parts)

    # ------------------------------------------------------------------ public API
    def score(self, x: ArrayT) -> ArrayT:
        """The joint L1 score of each example (higher: more likely adversarial), as the same kind as ``x``."""
        return _like(self._score_any(x), x)  # type: ignore[no-any-return]

    def _score_any(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        xt, _ = self.target.spec.validate(x)
        return self._score_valid(xt)

    def fit(self, x_clean: torch.Tensor | np.ndarray, fpr: float = 0.05) -> FeatureSqueezingDetector:
        """Set :attr:`threshold` to the ``1 - fpr`` quantile of the scores of clean inputs ``x_clean``.

        Args:
            x_clean: legitimate inputs (not those the detector will be evaluated on, for an unbiased false-positive
                rate).
            fpr: the false-positive rate to allow on clean inputs, in (0, 1); the paper uses 0.05.

        Returns:
            The detector itself.
        """
        if isinstance(fpr, bool) or not isinstance(fpr, int | float) or not 0 < fpr < 1:
            raise ParameterError(f"fpr must be a number in (0, 1), e.g. 0.05 for 5% false positives; got {fpr!r}.")
        xt, _ = self.target.spec.validate(x_clean)
        scores = self._score_valid(xt).double()
        self.threshold = float(torch.quantile(scores, 1.0 - float(fpr)))
        return self

    def detect(self, x: ArrayT) -> ArrayT:
        """``True`` where the score exceeds :attr:`threshold` (flagged as adversarial); same kind as ``x``."""
        if self.threshold is None:
            raise ParameterError("the detector has no threshold yet: call fit(x_clean) first, or pass threshold=.")
        return _like(self._score_any(x) > self.threshold, x)  # type: ignore[no-any-return]

    def differentiable_score(self, x: torch.Tensor) -> torch.Tensor:
        """The score with autograd, for adaptive attacks on the detector (a valid batch on the target's device).

        The forward value equals :meth:`score`; each squeezer's gradient is its BPDA approximation
        (:meth:`~sparring.defenses.preprocess.Preprocessor.bpda_approx`; the identity for other modules), as in
        Athalye, Carlini, Wagner (2018). Needs a :class:`~sparring.targets.TorchTarget` with gradient access;
        counts ``1 + len(squeezers)`` queries per example. Call it inside ``target.frozen()``.

        Example:
            >>> import torch
            >>> from sparring import zoo
            >>> from sparring.defenses.detect import FeatureSqueezingDetector
            >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
            >>> det = FeatureSqueezingDetector(target)
            >>> x = data.x_test[:8].clone().requires_grad_(True)
            >>> with target.frozen():
            ...     g, = torch.autograd.grad(det.differentiable_score(x).sum(), x)
            >>> bool(g.abs().sum() > 0)
            True
        """
        t = self.target
        if not isinstance(t, TorchTarget):
            raise ParameterError(
                f"differentiable_score needs a TorchTarget (white-box); the detector wraps {type(t).__name__}."
            )
        fwd = t.differentiable("FeatureSqueezingDetector.differentiable_score")
        p0 = fwd(x).softmax(dim=1) if t.output == "logits" else fwd(x)
        dist = []
        for s in self.squeezers:
            approx = s.bpda_approx() if isinstance(s, Preprocessor) else None
            with torch.no_grad():
                exact = self._squeeze(s, x)
            sur = x if approx is None else self._squeeze(approx, x)
            xs = exact.detach() + (sur - sur.detach())
            ps = fwd(xs).softmax(dim=1) if t.output == "logits" else fwd(xs)
            dist.append((p0 - ps).abs().sum(dim=1))
        return torch.stack(dist).amax(dim=0)

    def get_params(self) -> dict[str, Any]:
        """The configuration as given (for reports)."""
        return {"squeezers": [repr(s) for s in self.squeezers], "threshold": self.threshold}

