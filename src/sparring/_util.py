"""Small private helpers shared across modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name), at most 300 characters, for error messages."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def reinit_parameters(model: torch.nn.Module, seed: int) -> None:
    """Re-initialise every layer's parameters from ``seed`` without touching the global RNG state.

    The seeding happens inside ``torch.random.fork_rng`` (forking the model's CUDA device too, since
    ``torch.manual_seed`` also seeds CUDA), so callers' random streams are unchanged.
    """
    import torch

    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for m in model.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
