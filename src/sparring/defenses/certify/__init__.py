"""Certified robustness: guarantees that a prediction cannot change within a radius."""
