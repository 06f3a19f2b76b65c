"""Robust training: adversarial (PGD-AT, TRADES, fast FGSM), Gaussian noise augmentation, certified (IBP/CROWN-IBP),
constrained adversarial training for tabular models, robust text training with attack-generated augmentations, and
differentially private training (DP-SGD via Opacus)."""

from sparring.defenses.training.adversarial import EpochStats, TrainHistory, adversarial_train
from sparring.defenses.training.certified import train_certified
from sparring.defenses.training.constrained import CostReport, constrained_adversarial_train, cost_to_evade
from sparring.defenses.training.dp import BoundCheck, DPTrainingResult, check_dp_bound, dp_trainer, train_dp
from sparring.defenses.training.noise import train_with_noise
from sparring.defenses.training.text import RobustTextResult, TextRound, augment_with_attacks, train_robust_text

__all__ = [
    "BoundCheck",
    "CostReport",
    "DPTrainingResult",
    "EpochStats",
    "RobustTextResult",
    "TextRound",
    "TrainHistory",
    "adversarial_train",
    "augment_with_attacks",
    "check_dp_bound",
    "constrained_adversarial_train",
    "cost_to_evade",
    "dp_trainer",
    "train_certified",
    "train_dp",
    "train_robust_text",
    "train_with_noise",
]
