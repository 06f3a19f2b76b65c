"""Model extraction through a prediction API: equation solving, surrogate training, metrics, transfer attacks."""

from sparring.attacks.extraction.equation import EquationSolving, EquationSolvingResult
from sparring.attacks.extraction.knockoff import KnockoffNets, default_surrogate
from sparring.attacks.extraction.metrics import ExtractionResult, accuracy, agreement, fidelity
from sparring.attacks.extraction.transfer import TransferResult, transfer_attack

__all__ = [
    "EquationSolving",
    "EquationSolvingResult",
    "ExtractionResult",
    "KnockoffNets",
    "TransferResult",
    "accuracy",
    "agreement",
    "default_surrogate",
    "fidelity",
    "transfer_attack",
]
