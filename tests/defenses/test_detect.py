"""Feature squeezing detection (Xu, Evans, Qi 2018) on the zoo digits CNN: it separates non-adaptive C&W examples
from clean digits, and an adaptive attack that also fools the squeezed models (through BPDA) defeats it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from sparring import PGD, CarliniWagnerL2
from sparring.data import Dataset
from sparring.defenses.detect import FeatureSqueezingDetector, evaluate, roc_auc, tpr_at_fpr
from sparring.defenses.preprocess import BitDepth, MedianSmoothing, bpda, defend
from sparring.errors import ParameterError
from sparring.targets import InputSpec, TorchTarget

N = 64
EPS_LINF = 0.2


def _squeezers() -> tuple[BitDepth, MedianSmoothing]:
    return BitDepth(2), MedianSmoothing(2)


@pytest.fixture(scope="module")
def detector(digits_cnn: TorchTarget, digits: Dataset) -> FeatureSqueezingDetector:
    return FeatureSqueezingDetector(digits_cnn, _squeezers()).fit(digits.x_test[128:384], fpr=0.05)


@pytest.fixture(scope="module")
def clean(digits: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.x_test[:N], digits.y_test[:N]


@pytest.fixture(scope="module")
def cw_evaluation(detector: FeatureSqueezingDetector, digits_cnn: TorchTarget, clean: tuple) -> dict:
    """The detector against non-adaptive C&W L2 examples (successful ones only), with the attack's success rate."""
    x, y = clean
    cw = CarliniWagnerL2(binary_steps=3, steps=30, lr=0.05, c_init=0.1)(digits_cnn, x, y)  # short, still 100%
    return {**evaluate(detector, x, cw.x_adv[cw.success]), "success": float(cw.success.float().mean())}


def _adaptive_pgd(target: TorchTarget, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """L∞ PGD that fools the model *and* every squeezed model at once (their gradients through BPDA), so the
    prediction no longer moves under squeezing: the adaptive attack of He et al. (2017) on feature squeezing."""
    models = [target, *(bpda(defend(target, s)) for s in _squeezers())]
    alpha = 2.5 * eps / steps
    xa = x.clone()
    with target.frozen():
        fwds = [m.differentiable("adaptive PGD") for m in models]
        for _ in range(steps):
            xa.requires_grad_(True)
            loss = sum(nn.functional.cross_entropy(f(xa), y, reduction="sum") for f in fwds)
            (g,) = torch.autograd.grad(loss, xa)
            xa = torch.minimum(torch.maximum(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0.0, 1.0)
    return xa


# ---------------------------------------------------------------------------------------------------- scores
def test_score_is_the_largest_l1_distance_between_softmax_outputs(
    detector: FeatureSqueezingDetector, digits_cnn: TorchTarget, clean: tuple
) -> None:
    x = clean[0][:8]
    p = digits_cnn.scores(x).softmax(1)
    by_squeezer = [(p - digits_cnn.scores(s(x)).softmax(1)).abs().sum(1) for s in _squeezers()]
    expected = torch.stack(by_squeezer).amax(0)
    assert torch.allclose(detector.score(x), expected, atol=1e-6)
    used = digits_cnn.counter.used
    detector.score(x)
    assert digits_cnn.counter.used - used == 3 * len(x)  # the input and its two squeezed versions


def test_fit_sets_the_threshold_at_the_clean_quantile_and_numpy_stays_numpy(
    digits_cnn: TorchTarget, digits: Dataset
) -> None:
    x_fit = digits.x_test[128:384]
    det = FeatureSqueezingDetector(digits_cnn, _squeezers())
    with pytest.raises(ParameterError, match="fit"):
        det.detect(x_fit[:4])
    det.fit(x_fit, fpr=0.1)
    flagged = det.detect(x_fit)
    assert flagged.dtype == torch.bool and flagged.shape == (len(x_fit),)
    assert abs(float(flagged.float().mean()) - 0.1) <= 0.02
    as_numpy = det.score(x_fit[:4].numpy())
    assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == (4,)
    assert isinstance(det.detect(x_fit[:4].numpy()), np.ndarray)


def test_roc_auc_and_tpr_at_fpr_match_their_definitions() -> None:
    gen = np.random.default_rng(0)
    neg, pos = gen.normal(0, 1, 300).round(1), gen.normal(1, 1, 200).round(1)  # rounded: many ties
    labels = np.r_[np.zeros(300), np.ones(200)]
    assert roc_auc(neg, pos) == pytest.approx(roc_auc_score(labels, np.r_[neg, pos]), abs=1e-12)
    assert roc_auc([0.0, 1.0], [2.0, 3.0]) == 1.0 and roc_auc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert roc_auc([1.0, 1.0], [1.0]) == 0.5
    tpr, thr = tpr_at_fpr(np.arange(100.0), np.array([94.5, 95.5, 99.5, 10.0]), fpr=0.05)
    assert thr == 94.0 and tpr == 0.75  # 5 negatives (95..99) lie above: 5% false positives
    for bad in ([], [np.nan]):
        with pytest.raises(ParameterError):
            roc_auc(bad, [1.0])


def test_differentiable_score_equals_the_score_and_has_a_gradient(
    detector: FeatureSqueezingDetector, digits_cnn: TorchTarget, clean: tuple
) -> None:
    x = clean[0][:8].clone().requires_grad_(True)
    with digits_cnn.frozen():
        s = detector.differentiable_score(x)
        (g,) = torch.autograd.grad(s.sum(), x)
    assert torch.allclose(s.detach(), detector.score(clean[0][:8]), atol=1e-5)
    assert float(g.abs().sum()) > 0  # BitDepth alone has a zero gradient: BPDA gives it one


def test_bad_detector_parameters_raise_parameter_errors(digits_cnn: TorchTarget) -> None:
    tabular = TorchTarget(nn.Linear(4, 2), InputSpec(shape=(4,), n_classes=2, layout="features"))
    bad = [
        lambda: FeatureSqueezingDetector(tabular),
        lambda: FeatureSqueezingDetector(digits_cnn, ()),
        lambda: FeatureSqueezingDetector(digits_cnn, ("bits",)),
        lambda: FeatureSqueezingDetector(digits_cnn, (BitDepth(1, bounds=(-1.0, 1.0)),)),
        lambda: FeatureSqueezingDetector(digits_cnn).fit(torch.zeros(4, 1, 28, 28), fpr=1.5),
        lambda: evaluate("detector", torch.zeros(2, 1, 28, 28), torch.zeros(2, 1, 28, 28)),  # type: ignore[arg-type]
    ]
    for make in bad:
        with pytest.raises(ParameterError):
            make()


# ---------------------------------------------------------------------------------------------------- attacks
def test_detects_non_adaptive_carlini_wagner_examples(cw_evaluation: dict) -> None:
    out = cw_evaluation
    assert out["success"] >= 0.9
    assert out["n_adv"] == round(out["success"] * N) and out["n_clean"] == N
    assert out["roc_auc"] >= 0.9  # measured ≈0.97
    assert out["tpr_at_fpr"] >= 0.7  # measured ≈0.88
    assert out["detection_rate"] >= 0.7 and out["false_positive_rate"] <= 0.15


def test_an_adaptive_attack_defeats_feature_squeezing(
    detector: FeatureSqueezingDetector, digits_cnn: TorchTarget, clean: tuple, cw_evaluation: dict
) -> None:
    x, y = clean
    naive = PGD(eps=EPS_LINF, steps=20)(digits_cnn, x, y)
    x_adaptive = _adaptive_pgd(digits_cnn, x, y, EPS_LINF, steps=20)
    fooled = digits_cnn.predict(x_adaptive) != y
    assert float((x_adaptive - x).abs().max()) <= EPS_LINF + 1e-6
    assert float(fooled.float().mean()) >= 0.9  # as successful as the non-adaptive attack...
    auc_naive = evaluate(detector, x, naive.x_adv[naive.success])["roc_auc"]
    adaptive = evaluate(detector, x, x_adaptive[fooled])
    assert auc_naive >= 0.9  # the same budget without adaptation is detected (measured ≈0.97)...
    assert adaptive["roc_auc"] <= auc_naive - 0.3  # ...adapted, it is not (measured ≈0.39, below chance)
    assert adaptive["roc_auc"] <= cw_evaluation["roc_auc"] - 0.3  # and far below the non-adaptive C&W AUC
    assert adaptive["detection_rate"] <= 0.3
