"""Evasion attacks: perturb inputs at inference time so the model errs."""

from sparring.attacks.evasion.apgd import APGD, APGDT
from sparring.attacks.evasion.autoattack import AutoAttack
from sparring.attacks.evasion.cw import CarliniWagnerL2
from sparring.attacks.evasion.deepfool import DeepFool
from sparring.attacks.evasion.fab import FAB
from sparring.attacks.evasion.fgsm import FGSM
from sparring.attacks.evasion.hopskipjump import HopSkipJump
from sparring.attacks.evasion.nes import NES
from sparring.attacks.evasion.pgd import PGD
from sparring.attacks.evasion.spsa import SPSA
from sparring.attacks.evasion.square import Square

__all__ = [
    "APGD", "APGDT", "FAB", "FGSM", "NES", "PGD", "SPSA", "AutoAttack", "CarliniWagnerL2", "DeepFool", "HopSkipJump",
    "Square",
]
