"""Feature and output detectors (Mahalanobis, Lee et al. 2018; energy, Liu et al. 2020; max softmax, Hendrycks &
Gimpel 2017) on the zoo digits CNN: each separates FGSM, PGD and C&W examples from clean digits, and the adaptive
attack that also minimises the detector's score defeats each of them (the number the docs report)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparring import FGSM, PGD, CarliniWagnerL2
from sparring.data import Dataset
from sparring.defenses.detect.evaluate import calibrate, detector_aware_pgd, evaluate
from sparring.defenses.detect.features import (
    EnergyDetector,
    MahalanobisDetector,
    MaxSoftmaxDetector,
    default_feature_layers,
)
from sparring.defenses.detect.squeezing import FeatureSqueezingDetector
from sparring.errors import ParameterError
from sparring.targets import TorchTarget

N = 64
EPS = 0.2


@pytest.fixture(scope="module")
def maha(digits_cnn: TorchTarget, digits: Dataset) -> MahalanobisDetector:
    """Layers combined by logistic regression fitted on FGSM examples of a separate validation slice (the paper)."""
    det = MahalanobisDetector(digits_cnn).fit(digits.x_train, digits.y_train)
    xv, yv = digits.x_test[384:448], digits.y_test[384:448]
    fgsm = FGSM(eps=EPS)(digits_cnn, xv, yv)
    return det.fit_combiner(xv, fgsm.x_adv[fgsm.success]).calibrate(digits.x_test[128:384])


@pytest.fixture(scope="module")
def adversarial(digits_cnn: TorchTarget, digits: Dataset) -> dict[str, torch.Tensor]:
    """Successful non-adaptive examples of the three attacks on the first N test digits."""
    x, y = digits.x_test[:N], digits.y_test[:N]
    out = {}
    for name, attack in (("fgsm", FGSM(eps=EPS)), ("pgd", PGD(eps=EPS, steps=20)),
                         ("cw", CarliniWagnerL2(binary_steps=3, steps=30, lr=0.05, c_init=0.1))):
        res = attack(digits_cnn, x, y)
        assert res.success.float().mean() > 0.9
        out[name] = res.x_adv[res.success]
    return out


def _detectors(maha: MahalanobisDetector, target: TorchTarget, x_cal: torch.Tensor) -> dict[str, object]:
    return {"mahalanobis": maha, "energy": EnergyDetector(target).calibrate(x_cal),
            "max-softmax": MaxSoftmaxDetector(target).calibrate(x_cal)}


# ---------------------------------------------------------------------------------------------------- Mahalanobis
def test_default_layers_are_the_block_outputs_and_the_penultimate_features(digits_cnn: TorchTarget) -> None:
    assert default_feature_layers(digits_cnn.model) == ["2", "5", "8"]  # pool, pool, last hidden ReLU


def test_mahalanobis_fits_class_means_and_tied_covariance(digits_cnn: TorchTarget, digits: Dataset) -> None:
    det = MahalanobisDetector(digits_cnn, layers=["8"]).fit(digits.x_train, digits.y_train)
    model = digits_cnn.model
    with torch.no_grad():
        f = model[:9]((digits.x_train - 0.2) / 0.3).double().numpy()  # the penultimate features, by hand
    y = digits.y_train.numpy()
    mu = np.stack([f[y == c].mean(0) for c in range(10)])
    np.testing.assert_allclose(det.means[0].numpy(), mu, atol=1e-5)
    c = f - mu[y]
    cov = c.T @ c / len(f)
    x = digits.x_test[:5]
    with torch.no_grad():
        g = model[:9]((x - 0.2) / 0.3).double().numpy()
    prec = np.linalg.pinv(cov + 1e-6 * np.diag(cov).mean() * np.eye(len(cov)), hermitian=True)
    d = np.stack([np.einsum("nd,de,ne->n", g - m, prec, g - m) for m in mu], 1).min(1)
    np.testing.assert_allclose(det.score(x).numpy(), d, rtol=1e-4)


def test_input_preprocessing_lowers_clean_distances(digits_cnn: TorchTarget, digits: Dataset) -> None:
    x = digits.x_test[:32]
    plain = MahalanobisDetector(digits_cnn, layers=["8"]).fit(digits.x_train, digits.y_train)
    noisy = MahalanobisDetector(digits_cnn, layers=["8"], noise=0.01)
    noisy.means, noisy.precisions = plain.means, plain.precisions
    assert bool((noisy.score(x) < plain.score(x)).all())  # x̂ = x - ε·sign ∇d lowers d (Lee et al. eq. 4)
    with digits_cnn.frozen():
        assert torch.allclose(noisy.differentiable_score(x), noisy.score(x), rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- output scores
def test_energy_and_max_softmax_follow_their_formulas(digits_cnn: TorchTarget, digits: Dataset) -> None:
    x = digits.x_test[:16]
    z = digits_cnn.scores(x).double()
    energy = EnergyDetector(digits_cnn, temperature=2.0)
    assert torch.allclose(energy.score(x), -2.0 * torch.logsumexp(z / 2.0, dim=1))
    assert torch.allclose(MaxSoftmaxDetector(digits_cnn).score(x), -z.softmax(1).amax(1))
    scores = energy.score(x.numpy())
    assert isinstance(scores, np.ndarray) and scores.shape == (16,)


def test_calibrate_sets_the_false_positive_rate_on_clean_inputs(digits_cnn: TorchTarget, digits: Dataset) -> None:
    det = EnergyDetector(digits_cnn)
    with pytest.raises(ParameterError, match="calibrate"):
        det.detect(digits.x_test[:4])
    det.calibrate(digits.x_test[:400], fpr=0.1)
    assert abs(float(det.detect(digits.x_test[:400]).double().mean()) - 0.1) < 0.01
    assert calibrate(det, digits.x_test[:400], 0.2) == det.threshold


# ---------------------------------------------------------------------------------------------------- detection
def test_each_detector_separates_non_adaptive_attacks(
    maha: MahalanobisDetector, digits_cnn: TorchTarget, digits: Dataset, adversarial: dict[str, torch.Tensor]
) -> None:
    clean = digits.x_test[:N]
    auc = {(d, a): evaluate(det, clean, xa)["roc_auc"]
           for d, det in _detectors(maha, digits_cnn, digits.x_test[128:384]).items()
           for a, xa in adversarial.items()}
    # measured: Mahalanobis (3 layers, LR on FGSM) 0.99 / 0.99 / 0.90; energy 0.60 / 0.82 / 0.80;
    # max softmax 0.63 / 0.95 / 0.98 (FGSM / PGD / C&W)
    assert all(auc["mahalanobis", a] >= 0.85 for a in adversarial), auc
    assert all(auc[d, a] >= 0.7 for d in ("energy", "max-softmax") for a in ("pgd", "cw")), auc


def test_adaptive_attack_that_minimises_the_score_defeats_each_detector(
    maha: MahalanobisDetector, digits_cnn: TorchTarget, digits: Dataset
) -> None:
    x, y = digits.x_test[:48], digits.y_test[:48]
    for name, det in _detectors(maha, digits_cnn, digits.x_test[128:384]).items():
        xa = detector_aware_pgd(digits_cnn, det, x, y, eps=EPS, steps=30)  # type: ignore[arg-type]
        assert float((xa - x).abs().max()) <= EPS + 1e-6 and float(xa.min()) >= 0 and float(xa.max()) <= 1
        fooled = digits_cnn.predict(xa) != y
        out = evaluate(det, x, xa[fooled])  # type: ignore[arg-type]
        assert fooled.float().mean() > 0.9, name
        assert out["roc_auc"] < 0.6 and out["detection_rate"] < 0.1, (name, out)  # measured: ≤ 0.45 and ≤ 0.02


def test_evaluate_accepts_any_detector_with_score(digits_cnn: TorchTarget, digits: Dataset) -> None:
    sq = FeatureSqueezingDetector(digits_cnn).fit(digits.x_test[:100])
    out = evaluate(sq, digits.x_test[:32], digits.x_test[32:64])
    assert 0.2 < out["roc_auc"] < 0.8  # clean against clean: chance level
    assert out["n_clean"] == out["n_adv"] == 32


# ---------------------------------------------------------------------------------------------------- errors
def test_bad_parameters_raise_typed_errors(digits_cnn: TorchTarget, digits: Dataset) -> None:
    x, y = digits.x_test[:8], digits.y_test[:8]
    with pytest.raises(ParameterError, match="available"):
        MahalanobisDetector(digits_cnn, layers=["nope"])
    with pytest.raises(ParameterError, match="noise"):
        MahalanobisDetector(digits_cnn, noise=-1)
    with pytest.raises(ParameterError, match="fit"):
        MahalanobisDetector(digits_cnn).score(x)
    with pytest.raises(ParameterError, match="classes"):
        MahalanobisDetector(digits_cnn).fit(x[y == y[0]], y[y == y[0]])
    with pytest.raises(ParameterError, match="temperature"):
        EnergyDetector(digits_cnn, temperature=0)
    probs = TorchTarget(digits_cnn.model, digits_cnn.spec, output="probabilities")
    with pytest.raises(ParameterError, match="MaxSoftmaxDetector"):
        EnergyDetector(probs)
    with pytest.raises(ParameterError, match="fpr"):
        MaxSoftmaxDetector(digits_cnn).calibrate(x, fpr=1.5)
    with pytest.raises(ParameterError, match="score"):
        evaluate("detector", x, x)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="differentiable_score"):
        detector_aware_pgd(digits_cnn, object(), x, y, eps=0.1)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="steps"):
        detector_aware_pgd(digits_cnn, EnergyDetector(digits_cnn), x, y, eps=0.1, steps=0)
