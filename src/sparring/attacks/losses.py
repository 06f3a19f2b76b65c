"""Per-example attack losses on logits. Each returns a vector ``(N,)`` that the attacker wants to *increase*."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from sparring.errors import ParameterError

__all__ = ["LOSSES", "AttackLoss", "cross_entropy", "dlr", "dlr_targeted", "get_loss", "margin"]

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


_DLR_TINY = 1e-12


def _need_classes(logits: torch.Tensor, k: int, what: str) -> None:
    if logits.shape[1] < k:
        raise ParameterError(
            f"the {what} loss needs at least {k} classes but the model has {logits.shape[1]}; use loss='ce'."
        )


def dlr(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    r"""Difference of logits ratio (Croce & Hein 2020, sec. 4): ``-(z_y - max_{i≠y} z_i) / (z_π1 - z_π3 + 1e-12)``.

    ``π`` sorts the logits in decreasing order. Shift- and scale-invariant in the logits, positive exactly when the
    attack has succeeded. Needs at least 3 classes.

    With ``targeted=True`` and only the target ``t`` known (the :data:`AttackLoss` signature), the ratio becomes
    ``-(max_{i≠t} z_i - z_t) / (z_π1 - (z_π3 + z_π4) / 2 + 1e-12)``: the paper's targeted DLR (sec. 4) with the
    strongest other class standing in for the true one (the same thing while the true class leads). Use
    :func:`dlr_targeted` when the true labels are at hand.
    """
    srt = logits.sort(dim=1, descending=True).values
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    if targeted:
        return -(other - own) / (srt[:, 0] - (srt[:, 2] + srt[:, 3]) / 2 + _DLR_TINY)
    return -(own - other) / (srt[:, 0] - srt[:, 2] + _DLR_TINY)


def dlr_targeted(logits: torch.Tensor, labels: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
    r"""Targeted difference of logits ratio (Croce & Hein 2020, sec. 4):
    ``-(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2 + 1e-12)`` for true class ``y`` and target ``t``.

    Increasing it pulls the target's logit above the true one; shift- and scale-invariant. Needs at least 4 classes.
    """
    _need_classes(logits, 4, "targeted DLR")
    srt = logits.sort(dim=1, descending=True).values
    own = logits.gather(1, labels[:, None]).squeeze(1)
    tgt = logits.gather(1, target_labels[:, None]).squeeze(1)
    return -(own - tgt) / (srt[:, 0] - (srt[:, 2] + srt[:, 3]) / 2 + _DLR_TINY)


LOSSES: dict[str, AttackLoss] = {"ce": cross_entropy, "margin": margin, "dlr": dlr}


def get_loss(name: str) -> AttackLoss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ParameterError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}.") from None
