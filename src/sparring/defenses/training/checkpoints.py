"""The record of an adversarial-training run: per-epoch statistics (:class:`EpochStats`, :class:`TrainHistory`) and
the per-epoch checkpoints a run resumes from (the newest readable one for the same run key; corrupted files are
reported and skipped), with the fingerprint of the training data that is part of the run key.
Used by :func:`~sparring.defenses.training.adversarial.adversarial_train`; the classes are re-exported there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparring.data.cache import load_state
from sparring.errors import CheckpointError

__all__ = ["FORMAT", "FORMAT_VERSION", "EpochStats", "TrainHistory", "checkpoint_path", "data_fingerprint",
           "latest_checkpoint"]


FORMAT = "sparring-adversarial-training"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class EpochStats:
    """What one epoch of adversarial training did.

    Attributes:
        epoch: 1-based epoch number.
        loss: mean training loss over the epoch's examples (the method's own objective).
        train_robust_accuracy: accuracy on the attacked training points, measured in the update's forward pass
            (before the step). A sudden jump towards 1 in fast FGSM training is the sign of catastrophic overfitting.
        clean_accuracy: accuracy on ``eval_data`` after the epoch (``None`` without ``eval_data``).
        robust_accuracy: accuracy under PGD (``eval_steps`` steps, same ``eps`` and norm) on ``eval_data``.
        seconds: wall time of the epoch, evaluation included.
    """

    epoch: int
    loss: float
    train_robust_accuracy: float
    clean_accuracy: float | None
    robust_accuracy: float | None
    seconds: float


@dataclass
class TrainHistory:
    """Per-epoch record of :func:`adversarial_train` (also stored in every checkpoint).

    Attributes:
        method: ``"pgd"``, ``"trades"`` or ``"fast-fgsm"``.
        params: the training parameters as used (``alpha`` resolved to its value).
        epochs: one :class:`EpochStats` per finished epoch, including those done before a resume.
        resumed_from: the epoch of the checkpoint this run continued from (``None`` for a fresh run).
    """

    method: str
    params: dict[str, Any]
    epochs: list[EpochStats] = field(default_factory=list)
    resumed_from: int | None = None

    @property
    def last(self) -> EpochStats | None:
        """The most recent epoch's stats (``None`` before the first epoch)."""
        return self.epochs[-1] if self.epochs else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {"method": self.method, "params": dict(self.params), "epochs": [asdict(e) for e in self.epochs],
                "resumed_from": self.resumed_from}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainHistory:
        return cls(method=str(d["method"]), params=dict(d["params"]),
                   epochs=[EpochStats(**e) for e in d["epochs"]], resumed_from=d.get("resumed_from"))


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch:04d}.pt"


def latest_checkpoint(directory: Path, run_key: dict[str, Any], max_epoch: int) -> dict[str, Any] | None:
    """The newest readable checkpoint with ``epoch <= max_epoch`` (corrupted ones are reported and skipped)."""
    if not directory.is_dir():
        return None
    found = []
    for p in directory.glob("epoch-*.pt"):
        try:
            found.append((int(p.stem.split("-")[1]), p))
        except ValueError:
            continue
    for epoch, path in sorted(found, reverse=True):
        if epoch > max_epoch:
            continue
        state = load_state(path)  # checksum verified, weights_only; a corrupted file is reported and removed
        if state is None:
            continue
        if state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path} is not a sparring adversarial-training checkpoint (version "
                                  f"{FORMAT_VERSION}); point checkpoint_dir at a new folder.")
        if state["run"] != run_key:
            diff = sorted(k for k in set(run_key) | set(state["run"]) if run_key.get(k) != state["run"].get(k))
            raise CheckpointError(
                f"{path} belongs to a different training run (differs in: {', '.join(diff)}); use a new "
                "checkpoint_dir, or resume=False to start over in this one."
            )
        return state
    return None


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    return [float(x.shape[0]), float(x.double().sum()), float((y.double() * torch.arange(1, len(y) + 1)).sum())]
