"""Robust training: adversarial (PGD-AT, TRADES, fast FGSM), Gaussian noise augmentation, certified (IBP/CROWN-IBP)."""

from sparring.defenses.training.adversarial import EpochStats, TrainHistory, adversarial_train
from sparring.defenses.training.certified import train_certified
from sparring.defenses.training.noise import train_with_noise

__all__ = ["EpochStats", "TrainHistory", "adversarial_train", "train_certified", "train_with_noise"]
