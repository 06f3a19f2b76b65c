"""Bundled datasets, user data files, and the model zoo."""

from sparring.data import zoo
from sparring.data.datasets import Dataset, load_breast_cancer, load_digits
from sparring.data.files import LabelledData, load_csv, load_data, load_image_folder, load_npz
from sparring.data.mnist import load_fashion_mnist, load_mnist
from sparring.data.text_files import TextTable, load_text_file

__all__ = [
    "Dataset",
    "LabelledData",
    "TextTable",
    "load_breast_cancer",
    "load_csv",
    "load_data",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "load_npz",
    "load_text_file",
    "zoo",
]
