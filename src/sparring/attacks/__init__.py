"""Attacks, by family. Every attack is configuration at construction and runs when called on a target."""

from sparring.attacks.base import EvasionAttack
from sparring.attacks.evasion import FGSM, PGD, HopSkipJump, Square
from sparring.attacks.norms import Norm
from sparring.attacks.result import AttackResult, Cost, EvasionResult

__all__ = ["FGSM", "PGD", "AttackResult", "Cost", "EvasionAttack", "EvasionResult", "HopSkipJump", "Norm", "Square"]
