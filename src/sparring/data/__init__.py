"""Bundled datasets, user data files, and the model zoo."""

from sparring.data import zoo
from sparring.data.datasets import Dataset, load_breast_cancer, load_digits

__all__ = ["Dataset", "load_breast_cancer", "load_digits", "zoo"]
