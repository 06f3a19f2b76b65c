"""Detection, one module per family: adversarial inputs (:mod:`.squeezing`, :mod:`.features`), poisoned training
data (:mod:`.poison`), backdoor triggers at run time (:mod:`.strip`), extraction query patterns
(:mod:`.extraction`); :mod:`.evaluate` and :mod:`.metrics` evaluate any of them.
"""

from sparring.defenses.detect.evaluate import (
    Detector,
    DifferentiableDetector,
    calibrate,
    detector_aware_pgd,
    evaluate,
    scores_of,
)
from sparring.defenses.detect.extraction import PradaDetector
from sparring.defenses.detect.features import (
    EnergyDetector,
    MahalanobisDetector,
    MaxSoftmaxDetector,
    default_feature_layers,
)
from sparring.defenses.detect.metrics import roc_auc, tpr_at_fpr
from sparring.defenses.detect.poison import (
    ActivationClustering,
    DataScanResult,
    ShiftResult,
    SpectralSignatures,
    representations,
    shift_test,
)
from sparring.defenses.detect.squeezing import FeatureSqueezingDetector
from sparring.defenses.detect.strip import STRIP

__all__ = [
    "STRIP",
    "ActivationClustering",
    "DataScanResult",
    "Detector",
    "DifferentiableDetector",
    "EnergyDetector",
    "FeatureSqueezingDetector",
    "MahalanobisDetector",
    "MaxSoftmaxDetector",
    "PradaDetector",
    "ShiftResult",
    "SpectralSignatures",
    "calibrate",
    "default_feature_layers",
    "detector_aware_pgd",
    "evaluate",
    "representations",
    "roc_auc",
    "scores_of",
    "shift_test",
    "tpr_at_fpr",
]
