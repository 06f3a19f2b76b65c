"""Evasion attacks: perturb inputs at inference time so the model errs."""

from sparring.attacks.evasion.fgsm import FGSM
from sparring.attacks.evasion.pgd import PGD

__all__ = ["FGSM", "PGD"]
