"""Architectures of the zoo models. Each builder is also a ``module:callable`` entry point for loading weights."""

from __future__ import annotations

from torch import nn

__all__ = ["digits_cnn", "digits_mlp", "signs_cnn", "tabular_mlp"]


def digits_cnn(n_classes: int = 10) -> nn.Sequential:
    """A small CNN for 1×28×28 greyscale digits (two conv blocks, two dense layers; ~220k parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, n_classes),
    )


def signs_cnn(n_classes: int = 8) -> nn.Sequential:
    """A small all-convolutional CNN for 3×32×32 colour images: four conv blocks, then global average pooling and a
    linear layer, as in ResNet-style classifiers (~120k parameters)."""
    return nn.Sequential(
        nn.Conv2d(3, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(24, 48, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(48, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 96, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, n_classes),
    )


def digits_mlp(n_classes: int = 10, side: int = 28) -> nn.Sequential:
    """A two-hidden-layer MLP for 1×side×side digits."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(side * side, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
        nn.Linear(128, n_classes),
    )


def tabular_mlp(n_features: int = 30, n_classes: int = 2, hidden: int = 64) -> nn.Sequential:
    """A two-hidden-layer MLP for standardised tabular features."""
    return nn.Sequential(
        nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
    )
