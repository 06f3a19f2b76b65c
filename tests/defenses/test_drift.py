"""Offline drift tests: exact p-values, one result type, real shifts detected, calibrated false-positive rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

from sparring.data import Dataset, load_breast_cancer, load_digits
from sparring.defenses.detect.drift import (
    DriftResult,
    bbsd_test,
    classifier_test,
    label_shift_test,
    lsdd_test,
    mmd_test,
    univariate_test,
)
from sparring.defenses.detect.drift.mmd import rbf
from sparring.defenses.detect.drift.result import correct, permutation_p
from sparring.errors import InputSpecError, LabelError, ParameterError
from sparring.targets import TorchTarget

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits8() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 UCI digits as 64 features in [0, 1], and their labels."""
    ds = load_digits(size=8)
    return torch.cat([ds.x_train, ds.x_test]).reshape(-1, 64), torch.cat([ds.y_train, ds.y_test])


def _split(x: torch.Tensor, seed: int, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[p[:n]], x[p[n : n + m]]


DETECTORS = {
    "ks": lambda a, b: univariate_test(a, b),
    "cvm-fdr": lambda a, b: univariate_test(a, b, test="cvm", correction="fdr"),
    "mmd": lambda a, b: mmd_test(a, b, n_permutations=100),
    "mmd-block": lambda a, b: mmd_test(a, b, estimator="block"),
    "lsdd": lambda a, b: lsdd_test(a, b, n_permutations=100),
    "classifier": lambda a, b: classifier_test(a, b),
}


# ----------------------------------------------------------------------------------------------- exactness
def test_permutation_p_value_counts_the_observed_statistic() -> None:
    p, thr = permutation_p(10.0, torch.arange(39.0) / 100, alpha=0.05)
    assert p == 1 / 40  # never 0: the observed split is one of the 1 + P equally likely splits
    assert thr == pytest.approx(0.38)  # the largest permuted value: obs > 0.38 gives p = 1/40 < 0.05
    assert permutation_p(0.375, torch.arange(39.0) / 100, alpha=0.05) == (2 / 40, pytest.approx(0.38))
    g = torch.Generator().manual_seed(0)
    r = mmd_test(torch.randn(40, 3, generator=g), torch.randn(40, 3, generator=g) + 3, n_permutations=19)
    assert r.p_value == 1 / 20 and r.drift is False  # 19 permutations can never reach p < 0.05
    assert r.threshold == math.inf


@pytest.mark.parametrize("chunk", [16, 37, 4096])
def test_mmd_statistic_is_the_unbiased_estimate_in_any_chunking(chunk: int) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(70, 4, generator=g).double(), torch.randn(50, 4, generator=g).double() + 0.2
    r = mmd_test(x, y, n_permutations=20, chunk=chunk)
    s = r.details["sigma"]
    n, m = 70, 50
    u = ((rbf(x, x, s).sum() - n) / (n * (n - 1)) + (rbf(y, y, s).sum() - m) / (m * (m - 1))
         - 2 * rbf(x, y, s).mean())
    assert r.statistic == pytest.approx(float(u), rel=1e-9)
    assert r.p_value == mmd_test(x, y, n_permutations=20, chunk=4096).p_value  # same permutations, same answer


@pytest.mark.parametrize("name", ["mmd", "lsdd", "classifier"])
def test_threshold_agrees_with_p_value(digits8: tuple[torch.Tensor, torch.Tensor], name: str) -> None:
    x, _ = digits8
    for seed, noise in [(0, 0.0), (1, 0.15), (2, 0.05)]:
        a, b = _split(x, seed, 120, 80)
        r: DriftResult = DETECTORS[name](a, b + noise * torch.randn(b.shape, generator=torch.Generator()
                                                                         .manual_seed(seed)))
        assert r.threshold is not None
        assert r.drift == (r.statistic > r.threshold), (seed, r)


def test_benjamini_hochberg_and_bonferroni_adjustments() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.5])
    assert correct(p, "bonferroni").tolist() == pytest.approx([0.04, 0.16, 0.12, 1.0])
    # BH: sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.053.., 0.053.., 0.5 (step-up minimum)
    assert correct(p, "fdr").tolist() == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])


def test_cramer_von_mises_on_an_identical_constant_feature_is_no_drift() -> None:
    a, b = np.zeros((30, 1)), np.zeros((20, 1))
    r = univariate_test(a, b, test="cvm")
    assert r.p_value == 1.0 and not r.drift  # scipy alone reports p ≈ 0.013 here


def test_chi2_on_categorical_codes_and_per_feature_detail(digits8: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits8
    table = torch.cat([x[:, :3], y[:, None].double()], 1)  # three pixels and the digit class as a category
    keep = table[:, 3] != 7
    r = univariate_test(table[:600], table[600:][keep[600:]][:400], categorical=[3])
    assert r.method == "univariate-ks+chi2" and r.drift
    assert [f.test for f in r.features] == ["ks", "ks", "ks", "chi2"]
    assert r.features[3].drift and r.features[3].p_adjusted < 1e-4
    assert r.to_dict()["features"][3]["test"] == "chi2"


# ----------------------------------------------------------------------------------------------- real shifts
@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_fires_on_noise_and_knockout_and_stays_quiet_without(
        digits8: tuple[torch.Tensor, torch.Tensor], name: str) -> None:
    x, y = digits8
    det = DETECTORS[name]
    a, b = _split(x, 0, 300, 200)
    assert not det(a, b).drift
    noisy = (b + 0.2 * torch.randn(b.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert det(a, noisy).drift
    p = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))
    ref, rest = p[:300], p[300:]
    knocked = rest[y[rest] >= 4][:200]  # classes 0-3 knocked out of the current data
    assert det(x[ref], x[knocked]).drift


@pytest.mark.parametrize("name", list(DETECTORS))
def test_false_positive_rate_with_no_shift_is_within_the_binomial_interval(
        digits8: tuple[torch.Tensor, torch.Tensor], name: str) -> None:
    x, _ = digits8
    trials, alpha = 100, 0.05
    det = DETECTORS[name]
    if name == "cvm-fdr":  # 8 central pixels and 400 permutations (>= 8 / alpha) keep the 100 trials fast
        x = x[:, 18:26]
        det = lambda a, b: univariate_test(a, b, test="cvm", correction="fdr", n_permutations=400)  # noqa: E731
    if name == "ks":
        x = x[:, 16:48]  # 32 pixels: scipy's exact KS per feature is the slow part
    hits = sum(det(*_split(x, 100 + s, 60, 60)).drift for s in range(trials))
    lo, hi = binom.ppf(0.025, trials, alpha), binom.ppf(0.975, trials, alpha)
    assert hits <= hi, hits
    if name in ("mmd", "mmd-block", "lsdd", "cvm-fdr"):
        assert hits >= lo, hits  # single-statistic tests hit alpha; KS-Bonferroni and the exact C2ST are conservative


def test_bbsd_on_softmax_outputs_fires_on_noise_not_on_clean(digits_cnn: TorchTarget, digits: Dataset) -> None:
    """No shift: over 20 random 200/200 splits of the held-out digits the test fires at most 4 times (at α = 0.05
    Bonferroni-corrected, P(≥ 5 of 20) < 0.003 under the null; one fixed split is a 5% coin on every retrained
    model). Gaussian noise on the second half: it fires."""
    x = digits.x_test
    fired = 0
    for seed in range(20):
        p = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        clean = bbsd_test(digits_cnn, x[p[:200]], x[p[200:400]])
        assert clean.method == "bbsd-ks" and len(clean.features) == 10
        fired += clean.drift
    assert fired <= 4, fired
    a, b = x[:200], x[200:400]
    noisy = (b + 0.3 * torch.randn(b.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert bbsd_test(digits_cnn, a, noisy).drift
    assert not bbsd_test(digits_cnn, a, noisy, test="mmd", n_permutations=100).drift  # KS is the stronger one
    noisier = (b + 0.5 * torch.randn(b.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert bbsd_test(digits_cnn, a, noisier, test="mmd", n_permutations=100).drift


def test_label_shift_detected_and_estimated_by_bbse(digits_cnn: TorchTarget, digits: Dataset) -> None:
    x, y = digits.x_test, digits.y_test
    a, ya = x[:220], y[:220]
    rest_x, rest_y = x[220:], y[220:]
    assert not label_shift_test(digits_cnn, a, ya, rest_x).drift
    keep = rest_y != 4
    r = label_shift_test(digits_cnn, a, ya, rest_x[keep])
    assert r.drift
    q = np.array(r.details["q_estimate"])
    assert q[4] < 0.03 and abs(q.sum() - 1) < 1e-9  # the knocked-out class has (almost) no estimated mass
    with pytest.raises(LabelError, match="one per example"):
        label_shift_test(digits_cnn, a, ya[:10], rest_x)


def test_large_sets_use_the_block_estimator_without_a_quadratic_matrix() -> None:
    bc = load_breast_cancer()
    g = torch.Generator().manual_seed(0)
    base = torch.cat([bc.x_train, bc.x_test]).double()
    big_a = base[torch.randint(len(base), (10_000,), generator=g)] + 0.01 * torch.randn(10_000, 30, generator=g)
    big_b = base[torch.randint(len(base), (10_000,), generator=g)] + 0.01 * torch.randn(10_000, 30, generator=g)
    r = mmd_test(big_a, big_b)
    assert r.details["estimator"] == "block" and r.details["block_size"] == 100
    assert mmd_test(big_a, big_b * 1.05).drift


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", list(DETECTORS))
def test_bad_input_raises_typed_errors(name: str) -> None:
    det = DETECTORS[name]
    g = torch.Generator().manual_seed(0)
    a = torch.rand(40, 5, generator=g)
    with pytest.raises(InputSpecError, match="5 features per example and current 4"):
        det(a, torch.rand(40, 4, generator=g))
    bad = torch.rand(40, 5, generator=g)
    bad[3, 2] = float("nan")
    with pytest.raises(InputSpecError, match="NaN or inf in 1 examples"):
        det(a, bad)
    with pytest.raises(InputSpecError, match="0 examples"):
        det(a, torch.rand(0, 5))


def test_constant_data_and_too_small_references_are_refused() -> None:
    with pytest.raises(InputSpecError, match="same point"):
        mmd_test(np.ones((20, 3)), np.ones((10, 3)))
    with pytest.raises(InputSpecError, match="at least 2 blocks"):
        mmd_test(np.random.default_rng(0).random((3, 2)), np.random.default_rng(1).random((3, 2)), estimator="block")
    with pytest.raises(InputSpecError, match="non-integer"):
        univariate_test(np.c_[np.arange(10) + 0.5], np.c_[np.arange(10.0)], categorical=[0])
    with pytest.raises(ParameterError, match="alpha"):
        lsdd_test(np.zeros((5, 2)), np.zeros((5, 2)), alpha=1.5)
    with pytest.raises(ParameterError, match="categorical"):
        univariate_test(np.zeros((5, 2)), np.zeros((5, 2)), categorical=[2])
