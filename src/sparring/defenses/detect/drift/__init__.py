"""Distribution-drift detectors: is the data a deployed model sees still drawn like its reference?

Offline two-sample tests return one :class:`DriftResult` (statistic, threshold, p-value, per-feature detail):
:func:`univariate_test` (KS / Cramér–von Mises / χ² per feature, Bonferroni or FDR), :func:`mmd_test`,
:func:`lsdd_test`, :func:`classifier_test`, :func:`bbsd_test` (on a model's softmax outputs) and
:func:`label_shift_test` (BBSE).

Online detectors take one example per :meth:`update` and raise an alarm (:class:`OnlineStep`) with thresholds
calibrated by simulation to an expected run time between false alarms: :class:`OnlineMMD` and :class:`OnlineLSDD`
on a sliding window of inputs (Cobb, Van Looveren, Klaise 2022), :class:`CUSUM` and :class:`PageHinkley` on a
scalar signal such as the model's confidence. Their state is plain JSON (``state_dict`` / ``load_state_dict``).
"""

from sparring.defenses.detect.drift._stream import OnlineStep
from sparring.defenses.detect.drift.bbsd import bbsd_test, label_shift_test, softmax_outputs
from sparring.defenses.detect.drift.classifier import classifier_test
from sparring.defenses.detect.drift.lsdd import lsdd_test
from sparring.defenses.detect.drift.mmd import mmd_test
from sparring.defenses.detect.drift.online import OnlineLSDD, OnlineMMD
from sparring.defenses.detect.drift.result import DriftResult, FeatureDrift, NonIIDReferenceWarning
from sparring.defenses.detect.drift.scalar import CUSUM, PageHinkley
from sparring.defenses.detect.drift.univariate import univariate_test

__all__ = [
    "CUSUM",
    "DriftResult",
    "FeatureDrift",
    "NonIIDReferenceWarning",
    "OnlineLSDD",
    "OnlineMMD",
    "OnlineStep",
    "PageHinkley",
    "bbsd_test",
    "classifier_test",
    "label_shift_test",
    "lsdd_test",
    "mmd_test",
    "softmax_outputs",
    "univariate_test",
]
