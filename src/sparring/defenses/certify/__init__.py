"""Certified robustness: guarantees that a prediction cannot change within a radius."""

from sparring.defenses.certify.bounds import BoundedModel, Residual, crown_bounds, interval_bounds, margin_spec
from sparring.defenses.certify.verify import VerifyResult, verify

__all__ = ["BoundedModel", "Residual", "VerifyResult", "crown_bounds", "interval_bounds", "margin_spec", "verify"]
