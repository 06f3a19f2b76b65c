"""Robust training: noise augmentation, certified (IBP/CROWN-IBP) training."""

from sparring.defenses.training.certified import train_certified

__all__ = ["train_certified"]
