"""Attacks, by family. Every attack is configuration at construction and runs when called on a target.

Evasion attacks are exported here; the other families live in their own subpackages, each with its ``__all__``:
:mod:`sparring.attacks.poisoning`, :mod:`sparring.attacks.extraction`, :mod:`sparring.attacks.privacy`,
:mod:`sparring.attacks.text`, :mod:`sparring.attacks.tabular`.
"""

from sparring.attacks.adaptive import adaptive, find_gradient_blockers, is_randomized, with_bpda, with_eot
from sparring.attacks.base import EvasionAttack
from sparring.attacks.evasion import (
    APGD,
    APGDT,
    FAB,
    FGSM,
    PGD,
    AutoAttack,
    CarliniWagnerL2,
    DeepFool,
    HopSkipJump,
    Square,
)
from sparring.attacks.norms import Norm
from sparring.attacks.result import AttackResult, Cost, EvasionResult
from sparring.attacks.universal import PatchResult, PerturbationResult, UniversalPatch, UniversalPerturbation

__all__ = [
    "APGD",
    "APGDT",
    "FAB",
    "FGSM",
    "PGD",
    "AttackResult",
    "AutoAttack",
    "CarliniWagnerL2",
    "Cost",
    "DeepFool",
    "EvasionAttack",
    "EvasionResult",
    "HopSkipJump",
    "Norm",
    "PatchResult",
    "PerturbationResult",
    "Square",
    "UniversalPatch",
    "UniversalPerturbation",
    "adaptive",
    "find_gradient_blockers",
    "is_randomized",
    "with_bpda",
    "with_eot",
]
