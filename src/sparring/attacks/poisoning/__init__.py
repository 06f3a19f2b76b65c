"""Poisoning attacks on training data: label flipping, dirty-label backdoors (BadNets patch, blended key, tabular
feature trigger), the clean-label backdoor, and the BackdoorBench metrics to measure them.

Each attack is configuration at construction and poisons a training set when called; it returns a
:class:`PoisonResult` with the poisoned ``x``/``y``, the changed ``indices`` and the ``trigger``.
"""

from sparring.attacks.poisoning.backdoor import BadNets, Blended, FeatureBackdoor, plant_trigger
from sparring.attacks.poisoning.clean_label import CleanLabel
from sparring.attacks.poisoning.flipping import LabelFlip
from sparring.attacks.poisoning.metrics import (
    BackdoorMetrics,
    DetectionMetrics,
    backdoor_metrics,
    detection_metrics,
    metrics_table,
)
from sparring.attacks.poisoning.result import PoisonResult
from sparring.attacks.poisoning.triggers import Trigger, blend_trigger, feature_trigger, patch_trigger

__all__ = [
    "BackdoorMetrics",
    "BadNets",
    "Blended",
    "CleanLabel",
    "DetectionMetrics",
    "FeatureBackdoor",
    "LabelFlip",
    "PoisonResult",
    "Trigger",
    "backdoor_metrics",
    "blend_trigger",
    "detection_metrics",
    "feature_trigger",
    "metrics_table",
    "patch_trigger",
    "plant_trigger",
]
