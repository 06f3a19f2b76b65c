r"""What every detector shares: the :class:`Detector` protocol, threshold calibration, the ROC evaluation, and the
adaptive (detector-aware) attack that a detector must be evaluated against.

A detector is anything with ``score(x)`` (higher: more likely adversarial) and a ``threshold`` attribute (``None``
until calibrated). Detectors that also give ``differentiable_score(x)`` (autograd through the score, on a valid
batch on the target's device) can be attacked adaptively with :func:`detector_aware_pgd`: Carlini & Wagner (2017,
"Adversarial Examples Are Not Easily Detected: Bypassing Ten Detection Methods", sec. 3) show that a detector
evaluated only against attacks that ignore it says little; the number to report is the one under an attacker who
minimises the detector's score as well.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from sparring.defenses.detect.metrics import roc_auc, tpr_at_fpr
from sparring.errors import ParameterError
from sparring.targets.torch import TorchTarget

__all__ = ["Detector", "DifferentiableDetector", "calibrate", "detector_aware_pgd", "evaluate", "scores_of"]


@runtime_checkable
class Detector(Protocol):
    """An adversarial-input detector: per-example scores (higher: more suspicious) and an optional threshold."""

    threshold: float | None

    def score(self, x: Any) -> Any:
        """One score per example, as the same kind (tensor or numpy) as ``x``."""


@runtime_checkable
class DifferentiableDetector(Detector, Protocol):
    """A detector whose score can be differentiated with respect to the input (for adaptive attacks)."""

    def differentiable_score(self, x: torch.Tensor) -> torch.Tensor:
        """The score with autograd, for a valid batch on the protected target's device."""


def _check_detector(detector: object) -> Detector:
    if not callable(getattr(detector, "score", None)) or not hasattr(detector, "threshold"):
        raise ParameterError(
            f"detector must have a score(x) method and a threshold attribute (e.g. FeatureSqueezingDetector, "
            f"MahalanobisDetector, EnergyDetector); got {type(detector).__name__}."
        )
    return detector  # type: ignore[return-value]


def _check_fpr(fpr: object, *, allow_zero: bool) -> float:
    lo_ok = (fpr >= 0) if allow_zero else (fpr > 0)  # type: ignore[operator]
    if isinstance(fpr, bool) or not isinstance(fpr, int | float) or not (lo_ok and fpr < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ParameterError(f"fpr must be a number in {interval}, e.g. 0.05 for 5% false positives; got {fpr!r}.")
    return float(fpr)


def scores_of(detector: object, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``detector.score(x)`` as a flat float64 CPU tensor."""
    det = _check_detector(detector)
    s = det.score(x)
    return torch.as_tensor(np.asarray(s) if not isinstance(s, torch.Tensor) else s).detach().cpu().double().reshape(-1)


def calibrate(detector: Detector, x_clean: torch.Tensor | np.ndarray, fpr: float = 0.05) -> float:
    """Set ``detector.threshold`` to the ``1 - fpr`` quantile of its scores on clean inputs, and return it.

    Use clean inputs the detector will not be evaluated on, so the false-positive rate measured later is unbiased.
    """
    f = _check_fpr(fpr, allow_zero=False)
    s = scores_of(detector, x_clean)
    detector.threshold = float(torch.quantile(s, 1.0 - f))
    return detector.threshold


def evaluate(
    detector: Detector,
    x_clean: torch.Tensor | np.ndarray,
    x_adv: torch.Tensor | np.ndarray,
    *,
    fpr: float = 0.05,
) -> dict[str, Any]:
    """How well ``detector`` separates adversarial inputs from clean ones (any :class:`Detector`).

    Pass only *successful* adversarial examples as ``x_adv`` (Xu et al. 2018 and Lee et al. 2018 do), and clean
    inputs the detector was not fitted on as ``x_clean``. Against non-adaptive attacks this measures the detector;
    against an adaptive attack (:func:`detector_aware_pgd`) it measures the defence.

    Returns:
        A JSON-ready dict: ``roc_auc``; ``tpr_at_fpr`` (the detection rate at a false-positive rate of at most
        ``fpr`` on ``x_clean``) with ``fpr`` and ``threshold_at_fpr``; ``n_clean``, ``n_adv``, ``mean_score_clean``,
        ``mean_score_adv``; and when the detector has a threshold, its own operating point: ``threshold``,
        ``detection_rate`` (on ``x_adv``) and ``false_positive_rate`` (on ``x_clean``).

    Example:
        >>> from sparring import PGD, zoo
        >>> from sparring.defenses.detect import FeatureSqueezingDetector, evaluate
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> det = FeatureSqueezingDetector(target).fit(data.x_test[100:300])
        >>> res = PGD(eps=0.1)(target, data.x_test[:64], data.y_test[:64])
        >>> out = evaluate(det, data.x_test[:64], res.x_adv[res.success])
        >>> sorted(out)[:3]
        ['detection_rate', 'false_positive_rate', 'fpr']
    """
    det = _check_detector(detector)
    f = _check_fpr(fpr, allow_zero=True)
    s_clean, s_adv = scores_of(det, x_clean), scores_of(det, x_adv)
    tpr, thr = tpr_at_fpr(s_clean, s_adv, f)
    out: dict[str, Any] = {
        "roc_auc": roc_auc(s_clean, s_adv),
        "fpr": f,
        "tpr_at_fpr": tpr,
        "threshold_at_fpr": thr,
        "n_clean": int(s_clean.numel()),
        "n_adv": int(s_adv.numel()),
        "mean_score_clean": float(s_clean.mean()),
        "mean_score_adv": float(s_adv.mean()),
    }
    if det.threshold is not None:
        out["threshold"] = float(det.threshold)
        out["detection_rate"] = float((s_adv > det.threshold).double().mean())
        out["false_positive_rate"] = float((s_clean > det.threshold).double().mean())
    return out


def _margin(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j≠y} z_j - z_y`` per example (positive: misclassified)."""
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.masked_fill(torch.nn.functional.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(dim=1)
    return other - true


def detector_aware_pgd(
    target: TorchTarget,
    detector: DifferentiableDetector | None,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 40,
    alpha: float | None = None,
    weight: float = 1.0,
    kappa: float = 2.0,
) -> torch.Tensor:
    r"""L∞ PGD that fools the classifier *and* keeps the detector's score low (white-box, untargeted, adaptive).

    The objective maximised per example is Carlini & Wagner's (2017, sec. 3) combined loss in its PGD form:

    .. math:: J(x') = \min(\max_{j\ne y} f_j(x') - f_y(x'),\ \kappa) \;-\; w \cdot \frac{s(x') - \bar s}{\sigma}

    where :math:`s` is ``detector.differentiable_score`` and :math:`\bar s, \sigma` are the mean and spread of the
    scores of the clean batch (so ``weight`` is on the scale of one logit); the score term acts only on points
    already misclassified, so it never keeps a point from being fooled. Once misclassified by ``kappa`` the margin
    term stops pulling and only the detector's score is pushed down. Each example returns its best iterate:
    misclassified with the lowest score (below ``detector.threshold`` when it has one); the last iterate otherwise.

    With ``detector=None`` this is PGD on the clamped margin loss alone (the C&W loss of Carlini & Wagner 2017),
    the same attack without the detector term, for comparisons. ``target`` may be a defended target with BPDA
    (``bpda(defend(...))``), so the attack goes through the preprocessing too. Runs inside ``target.frozen()``;
    counts its queries on the targets.

    Returns:
        The adversarial batch (same device as ``x``), within ``eps`` of ``x`` and the spec's bounds.
    """
    if not isinstance(target, TorchTarget):
        raise ParameterError(f"detector_aware_pgd needs a TorchTarget (white-box); got {type(target).__name__}.")
    if detector is not None and not callable(getattr(detector, "differentiable_score", None)):
        raise ParameterError(
            f"detector_aware_pgd needs a detector with differentiable_score(x) (e.g. MahalanobisDetector); got "
            f"{type(detector).__name__}."
        )
    for name, v in (("eps", eps), ("weight", weight), ("kappa", kappa)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ParameterError(f"{name} must be a finite number >= 0; got {v!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ParameterError(f"steps must be a positive integer, e.g. 40; got {steps!r}.")
    step = 2.5 * eps / steps if alpha is None else float(alpha)
    xt, yt = target.spec.validate(x, y)
    assert yt is not None
    dev = target.device
    xt, yt = xt.to(dev, target.dtype), yt.to(dev)
    low, high = target.spec.bounds_tensors(dev, target.dtype)
    parts = []
    with target.frozen():
        fwd = target.differentiable("detector_aware_pgd")
        for s in range(0, xt.shape[0], target.batch_size):
            parts.append(_attack_batch(fwd, detector, xt[s : s + target.batch_size], yt[s : s + target.batch_size],
                                       eps=float(eps), alpha=step, steps=steps, weight=float(weight),
                                       kappa=float(kappa), low=low, high=high))
    return torch.cat(parts).to(x.device if isinstance(x, torch.Tensor) else "cpu")


def _attack_batch(
    fwd: Any, detector: DifferentiableDetector | None, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
    steps: int, weight: float, kappa: float, low: torch.Tensor, high: torch.Tensor,
) -> torch.Tensor:
    def score_of(z: torch.Tensor) -> torch.Tensor:
        if detector is None:
            return torch.zeros(z.shape[0], device=z.device, dtype=torch.float64)
        return detector.differentiable_score(z).double()

    with torch.no_grad():
        s0 = score_of(x)
    centre, spread = s0.mean(), s0.std().clamp_min(1e-6) if s0.numel() > 1 else s0.abs().clamp_min(1e-6)
    thr = 0.0 if detector is None else detector.threshold
    best = x.clone()
    best_score = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=torch.float64)
    xa = x.clone()
    for i in range(steps + 1):
        xa.requires_grad_(True)
        score = score_of(xa)
        margin = _margin(fwd(xa), y)
        with torch.no_grad():  # keep the best iterate so far: fooled, lowest detector score
            fooled = margin > 0
            sd = score.detach()
            better = fooled & (sd < best_score)
            best[better], best_score[better] = xa.detach()[better], sd[better]
            if thr is not None and bool((fooled & (sd <= thr)).all()):
                break
        if i == steps:
            break
        # the detector term only on points already fooled: it cannot keep a point from being misclassified
        evade = fooled.double() * weight * (score - centre) / spread
        objective = margin.clamp_max(kappa) - evade
        (g,) = torch.autograd.grad(objective.sum(), xa)
        with torch.no_grad():
            xa = xa.detach() + alpha * g.sign()
            xa = torch.minimum(torch.maximum(xa, x - eps), x + eps)
            xa = torch.minimum(torch.maximum(xa, low), high)
    never = torch.isinf(best_score)
    best[never] = xa.detach()[never]
    return best
