"""The bundled datasets: digits and breast cancer, with fixed stratified splits and matching input specs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparring.data.datasets import Dataset, _split, load_breast_cancer, load_digits
from sparring.errors import ParameterError


@pytest.fixture(scope="module")
def digits8() -> Dataset:
    return load_digits(8)


def test_load_digits_native_size_has_all_1797_images_in_unit_range(digits8: Dataset) -> None:
    d = digits8
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_test.shape[1:] == (1, 8, 8)
    assert len(d.x_train) + len(d.x_test) == 1797 and len(d.y_train) == len(d.x_train)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    both = torch.cat([d.x_train, d.x_test])
    assert float(both.min()) == 0.0 and float(both.max()) == 1.0
    assert d.spec.shape == (1, 8, 8) and d.spec.n_classes == 10 and d.name == "digits-8"
    d.spec.validate(d.x_test, d.y_test)  # raises if data and spec disagree


def test_load_digits_28_upsamples_within_bounds(digits8: Dataset) -> None:
    d = load_digits(28)
    assert d.x_train.shape[1:] == (1, 28, 28) and len(d.x_test) == len(digits8.x_test)
    assert float(d.x_train.min()) >= 0.0 and float(d.x_train.max()) <= 1.0
    assert torch.equal(d.y_test, digits8.y_test)  # same split whatever the size
    d.spec.validate(d.x_train, d.y_train)


def test_load_digits_split_is_deterministic_and_follows_the_seed(digits8: Dataset) -> None:
    again = load_digits(8)
    assert torch.equal(again.x_test, digits8.x_test) and torch.equal(again.y_train, digits8.y_train)
    other = load_digits(8, seed=1)
    assert not torch.equal(other.x_test, digits8.x_test)


def test_load_digits_split_is_stratified(digits8: Dataset) -> None:
    all_y = torch.cat([digits8.y_train, digits8.y_test])
    per_class = torch.bincount(all_y, minlength=10)
    in_test = torch.bincount(digits8.y_test, minlength=10)
    expected = torch.tensor([round(int(n) * 0.25) for n in per_class])
    assert torch.equal(in_test, expected)
    small = load_digits(8, test_fraction=0.1)
    assert torch.equal(torch.bincount(small.y_test, minlength=10), torch.tensor([round(int(n) * 0.1)
                                                                               for n in per_class]))


def test_split_indices_are_disjoint_and_cover_everything() -> None:
    y = np.repeat(np.arange(3), [5, 7, 9])
    train, test = _split(len(y), y, 0.3, seed=4)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
    assert np.bincount(y[test]).tolist() == [2, 2, 3]


@pytest.mark.parametrize("size", [7, 8.0, "28", True])
def test_load_digits_rejects_bad_sizes(size: object) -> None:
    with pytest.raises(ParameterError, match="size must be an integer >= 8"):
        load_digits(size)  # type: ignore[arg-type]


@pytest.mark.parametrize("fraction", [0, 1, -0.25, 1.5, "0.25", True])
def test_loaders_reject_test_fractions_outside_zero_one(fraction: object) -> None:
    with pytest.raises(ParameterError, match=r"test_fraction must be a number in \(0, 1\)"):
        load_digits(8, test_fraction=fraction)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="test_fraction"):
        load_breast_cancer(test_fraction=fraction)  # type: ignore[arg-type]


def test_load_breast_cancer_bounds_contain_all_data_tightly() -> None:
    d = load_breast_cancer()
    assert d.spec.shape == (30,) and d.spec.layout == "features" and d.spec.n_classes == 2
    assert d.spec.class_names == ("malignant", "benign")
    assert len(d.x_train) + len(d.x_test) == 569 and d.x_train.dtype == torch.float32
    lo, hi = d.spec.bounds_tensors()
    both = torch.cat([d.x_train, d.x_test])
    assert bool((both >= lo).all()) and bool((both <= hi).all())
    assert torch.equal(both.min(0).values, lo[0]) and torch.equal(both.max(0).values, hi[0])
    d.spec.validate(d.x_train, d.y_train)
    d.spec.validate(d.x_test, d.y_test)
    assert torch.bincount(d.y_test).tolist() == [round(212 * 0.25), round(357 * 0.25)]


def test_dataset_repr_and_comparison_by_identity(digits8: Dataset) -> None:
    assert repr(digits8).startswith("Dataset('digits-8', train=(") and "classes=10" in repr(digits8)
    assert digits8 == digits8 and digits8 != load_digits(8)  # no ambiguous tensor comparison
