"""Robust training: Gaussian noise augmentation, certified (IBP/CROWN-IBP) training."""

from sparring.defenses.training.certified import train_certified
from sparring.defenses.training.noise import train_with_noise

__all__ = ["train_certified", "train_with_noise"]
