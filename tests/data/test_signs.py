"""Synthetic traffic signs: deterministic, balanced, in range, and learnable from the drawn content."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparring.data.signs import SIGN_CLASSES, load_signs, render_signs
from sparring.errors import ParameterError


def test_rendering_is_deterministic_in_range_and_seed_dependent() -> None:
    labels = np.arange(len(SIGN_CLASSES))
    a, b, c = render_signs(labels, seed=3), render_signs(labels, seed=3), render_signs(labels, seed=4)
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_dataset_is_balanced_and_splits_do_not_share_images() -> None:
    ds = load_signs(n_train=160, n_test=80)
    assert ds.spec.shape == (3, 32, 32) and ds.spec.class_names == SIGN_CLASSES
    assert torch.bincount(ds.y_train, minlength=8).tolist() == [20] * 8
    assert torch.bincount(ds.y_test, minlength=8).tolist() == [10] * 8
    flat_tr, flat_te = ds.x_train.flatten(1), ds.x_test.flatten(1)
    assert float(torch.cdist(flat_te, flat_tr).min()) > 1.0  # no test image repeats a training image


def test_classes_are_recognisable_from_pixels() -> None:
    """A linear model on 8×8 colour thumbnails tells the eight signs apart far above chance (1/8)."""
    from sklearn.linear_model import LogisticRegression

    ds = load_signs(n_train=480, n_test=160)

    def thumbs(x: torch.Tensor) -> np.ndarray:
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1).numpy()

    clf = LogisticRegression(max_iter=2000).fit(thumbs(ds.x_train), ds.y_train.numpy())
    assert clf.score(thumbs(ds.x_test), ds.y_test.numpy()) > 0.5


@pytest.mark.parametrize(("kwargs", "fragment"), [({"n_train": 3}, "n_train"), ({"n_test": 2.5}, "n_test")])
def test_bad_sizes_and_labels_are_refused(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        load_signs(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"0\.\.7"):
        render_signs([0, 8])
