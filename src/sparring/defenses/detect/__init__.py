"""Detection: adversarial inputs (feature squeezing), and the metrics every detector is evaluated with.

Each detector family has its own module; import from here.
"""

from sparring.defenses.detect.metrics import roc_auc, tpr_at_fpr
from sparring.defenses.detect.squeezing import FeatureSqueezingDetector, evaluate

__all__ = ["FeatureSqueezingDetector", "evaluate", "roc_auc", "tpr_at_fpr"]
