"""Model scans and repairs against backdoors: Neural Cleanse (trigger reverse-engineering) and fine-pruning."""

from sparring.defenses.backdoor.fine_pruning import FinePruning, FinePruningResult
from sparring.defenses.backdoor.neural_cleanse import NeuralCleanse, NeuralCleanseResult, anomaly_index

__all__ = ["FinePruning", "FinePruningResult", "NeuralCleanse", "NeuralCleanseResult", "anomaly_index"]
