"""Certified robustness: guarantees that a prediction cannot change within a radius."""

from sparring.defenses.certify.bounds import (
    SUPPORTED_LAYERS,
    BoundedModel,
    Residual,
    crown_bounds,
    interval_bounds,
    margin_spec,
)
from sparring.defenses.certify.smoothing import (
    CertifyResult,
    SmoothedClassifier,
    certified_accuracy_curve,
    certified_radius,
)
from sparring.defenses.certify.verify import VerifyResult, verify

__all__ = [
    "SUPPORTED_LAYERS",
    "BoundedModel",
    "CertifyResult",
    "Residual",
    "SmoothedClassifier",
    "VerifyResult",
    "certified_accuracy_curve",
    "certified_radius",
    "crown_bounds",
    "interval_bounds",
    "margin_spec",
    "verify",
]
