"""sparring — attack your own models before attackers do, defend them, and prove how robust they are.

The curated public API lives here; everything else is importable from its home module.
"""

from sparring import errors
from sparring.attacks import (
    APGD,
    APGDT,
    FAB,
    FGSM,
    PGD,
    AttackResult,
    AutoAttack,
    CarliniWagnerL2,
    Cost,
    DeepFool,
    EvasionAttack,
    EvasionResult,
    HopSkipJump,
    Norm,
    Square,
)
from sparring.data import Dataset, load_breast_cancer, load_digits, zoo
from sparring.targets import (
    Access,
    HttpTarget,
    InputSpec,
    OnnxTarget,
    QueryCounter,
    SklearnTarget,
    Target,
    TorchTarget,
    load_spec,
    load_target,
)

__version__ = "0.1.0"

__all__ = [
    "APGD",
    "APGDT",
    "FAB",
    "FGSM",
    "PGD",
    "Access",
    "AttackResult",
    "AutoAttack",
    "CarliniWagnerL2",
    "Cost",
    "Dataset",
    "DeepFool",
    "EvasionAttack",
    "EvasionResult",
    "HopSkipJump",
    "HttpTarget",
    "InputSpec",
    "Norm",
    "OnnxTarget",
    "QueryCounter",
    "SklearnTarget",
    "Square",
    "Target",
    "TorchTarget",
    "__version__",
    "errors",
    "load_breast_cancer",
    "load_digits",
    "load_spec",
    "load_target",
    "zoo",
]
