"""Distribution-drift detectors: is the data a deployed model sees still drawn like its reference?

Offline two-sample tests return one :class:`DriftResult` (statistic, threshold, p-value, per-feature detail):
:func:`univariate_test` (KS / Cramér–von Mises / χ² per feature, Bonferroni or FDR), :func:`mmd_test`,
:func:`lsdd_test`, :func:`classifier_test`, :func:`bbsd_test` (on a model's softmax outputs) and
:func:`label_shift_test` (BBSE).
"""

from sparring.defenses.detect.drift.bbsd import bbsd_test, label_shift_test, softmax_outputs
from sparring.defenses.detect.drift.classifier import classifier_test
from sparring.defenses.detect.drift.lsdd import lsdd_test
from sparring.defenses.detect.drift.mmd import mmd_test
from sparring.defenses.detect.drift.result import DriftResult, FeatureDrift, NonIIDReferenceWarning
from sparring.defenses.detect.drift.univariate import univariate_test

__all__ = [
    "DriftResult",
    "FeatureDrift",
    "NonIIDReferenceWarning",
    "bbsd_test",
    "classifier_test",
    "label_shift_test",
    "lsdd_test",
    "mmd_test",
    "softmax_outputs",
    "univariate_test",
]
