"""Per-example attack losses on logits. Each returns a vector ``(N,)`` that the attacker wants to *increase*."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from sparring.errors import ParameterError

__all__ = ["LOSSES", "AttackLoss", "cross_entropy", "get_loss", "margin"]

AttackLoss = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Untargeted: CE w.r.t. the true label (push away). Targeted: minus CE w.r.t. the target (pull towards)."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    return -ce if targeted else ce


def margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Carlini & Wagner (2017) margin on logits: best other class minus the label's logit (negated if targeted).

    Positive exactly when the attack has succeeded, which makes it a natural stopping signal.
    """
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return own - other if targeted else other - own


LOSSES: dict[str, AttackLoss] = {"ce": cross_entropy, "margin": margin}


def get_loss(name: str) -> AttackLoss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ParameterError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}.") from None
