"""Bundled real datasets that need no download: digits and breast cancer (scikit-learn ships both)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sparring.errors import ParameterError
from sparring.targets.spec import InputSpec

__all__ = ["Dataset", "load_breast_cancer", "load_digits"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled dataset with a fixed train/test split and the input spec that describes it.

    Arrays are float32 inputs and int64 labels as torch tensors (CPU). Datasets compare by identity (comparing
    tensors field by field would be ambiguous).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    spec: InputSpec

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
            f"classes={self.spec.n_classes})"
        )


def _split(n: int, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: the same indices on every machine for a given seed."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float) or not 0 < test_fraction < 1:
        raise ParameterError(f"test_fraction must be a number in (0, 1), e.g. 0.25; got {test_fraction!r}.")
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rng.shuffle(members)
        test_idx.append(members[: round(len(members) * test_fraction)])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(n), test)
    return train, test


def load_digits(size: int = 28, *, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """The UCI handwritten digits (1,797 greyscale images, 10 classes), pixels scaled to [0, 1].

    Args:
        size: side of the images: 8 (native) or larger, upsampled with bilinear interpolation (28 gives MNIST-like
            1×28×28 inputs).
        test_fraction: share of each class held out for testing.
        seed: seed of the stratified split.
    """
    from sklearn.datasets import load_digits as _sk_digits

    if not isinstance(size, int) or size < 8:
        raise ParameterError(f"size must be an integer >= 8 (native 8×8); got {size!r}.")
    bunch = _sk_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = _split(len(y), y, test_fraction, seed)
    yt = torch.from_numpy(y)
    spec = InputSpec(
        shape=(1, size, size), n_classes=10, bounds=(0.0, 1.0), layout="chw",
        class_names=tuple(str(i) for i in range(10)),
    )
    return Dataset(f"digits-{size}", x[train].contiguous(), yt[train], x[test].contiguous(), yt[test], spec)


def load_breast_cancer(*, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Wisconsin breast cancer (569 tumours, 30 real-valued features, malignant=0 / benign=1).

    Features stay in their natural units (radius in mm, area in mm², ...). The spec's per-feature bounds are the
    observed minimum and maximum of each feature over the whole dataset, so attacks stay within what is realistic.
    """
    from sklearn.datasets import load_breast_cancer as _sk_bc

    bunch = _sk_bc()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = _split(len(y), y, test_fraction, seed)
    lo, hi = x.min(axis=0), x.max(axis=0)
    spec = InputSpec(
        shape=(x.shape[1],), n_classes=2, bounds=(lo.tolist(), hi.tolist()), layout="features",
        class_names=tuple(str(c) for c in bunch.target_names),
    )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return Dataset("breast-cancer", xt[train], yt[train], xt[test], yt[test], spec)
