"""Privacy attacks: membership inference (loss threshold, shadow models, LiRA) and model inversion (MI-Face).

Membership attacks are evaluations on examples whose membership is known; each returns a
:class:`MembershipResult` (ROC on log axes, AUC, TPR at 0.1 % and 1 % FPR). DP training, the defence, lives in
:mod:`sparring.defenses.training.dp`.
"""

from sparring.attacks.privacy.inversion import InversionResult, MIFace, plot_inversions
from sparring.attacks.privacy.lira import LiRA
from sparring.attacks.privacy.membership import (
    MEMBERSHIP_ATTACKS,
    LossThreshold,
    ShadowModelAttack,
    Trainer,
    run_membership,
    torch_trainer,
    zoo_membership_data,
    zoo_trainer,
)
from sparring.attacks.privacy.metrics import MembershipResult, membership_advantage, plot_roc, roc_curve

__all__ = [
    "MEMBERSHIP_ATTACKS",
    "InversionResult",
    "LiRA",
    "LossThreshold",
    "MIFace",
    "MembershipResult",
    "ShadowModelAttack",
    "Trainer",
    "membership_advantage",
    "plot_inversions",
    "plot_roc",
    "roc_curve",
    "run_membership",
    "torch_trainer",
    "zoo_membership_data",
    "zoo_trainer",
]
