"""Shared, cached fixtures of the poisoning and backdoor tests: 16×16 digits, a small CNN, clean and BadNets models.

Models are trained once per test session (functools.cache) and reused by every poisoning/backdoor test module.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from sparring.attacks.poisoning import BadNets, PoisonResult
from sparring.data.datasets import Dataset, load_digits
from sparring.data.zoo import train_torch_classifier
from sparring.targets.torch import TorchTarget

SIDE = 16
TARGET_CLASS = 0
EPOCHS = 15


def small_cnn() -> nn.Sequential:
    """A small CNN for 1×16×16 digits (~40k parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )


@cache
def digits() -> Dataset:
    return load_digits(SIDE)


def train(ds: Dataset, seed: int = 0) -> TorchTarget:
    torch.set_num_threads(1)
    model = train_torch_classifier(small_cnn(), ds, ds.spec, epochs=EPOCHS, seed=seed)
    return TorchTarget(model, ds.spec)


@cache
def clean_model(seed: int = 0) -> TorchTarget:
    return train(digits(), seed)


@cache
def badnets(share: float = 0.05, seed: int = 0) -> PoisonResult:
    ds = digits()
    return BadNets(poison_share=share, target_class=TARGET_CLASS, size=3, seed=seed)(
        ds.x_train, ds.y_train, spec=ds.spec)


@cache
def badnets_model(share: float = 0.05, seed: int = 0) -> TorchTarget:
    return train(badnets(share, seed).dataset(digits()), seed)
