"""Faster evaluation of the same model: a private channels-last copy for convolutional networks."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from sparring.attacks.base import BatchContext
from sparring.targets.torch import TorchTarget

__all__ = ["channels_last_target", "fast_layout"]

_MAX_PARAMS = 100_000_000  # larger models are not copied (memory): they run as they are


@contextmanager
def fast_layout(ctx: BatchContext, x: torch.Tensor) -> Iterator[BatchContext]:
    """For the duration, ``ctx.target`` evaluates its model through :func:`channels_last_target` (not on a
    randomized model, whose outputs no probe can compare)."""
    original = ctx.target
    if ctx.randomized or not isinstance(original, TorchTarget):
        yield ctx
        return
    ctx.target = channels_last_target(original, x)
    try:
        yield ctx
    finally:
        ctx.target = original


def channels_last_target(target: TorchTarget, probe: torch.Tensor) -> TorchTarget:
    """``target`` with a private copy of its model in the channels-last memory layout, where that is the same
    function and the model has convolutions; else ``target`` itself.

    A layout changes how tensors are stored, not the function: the copy's outputs on ``probe`` (up to 64 points)
    must give the same predictions and logits within 1e-4 (relative to their scale), or the original is used. On
    CPU, PyTorch's pooling and convolution kernels are several times faster on channels-last activations (the
    digits CNN's forward pass: about 1.8x). The copy shares the target's query counter and spec; the user's model
    is never modified. Models with more than 10^8 parameters are not copied (the copy would double their memory).
    """
    if getattr(target, "_channels_last", False):
        return target
    model = target.model
    params = list(model.parameters())
    if probe.ndim != 4 or not any(p.ndim == 4 for p in params) or sum(p.numel() for p in params) > _MAX_PARAMS:
        return target
    try:
        fast_model = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    except Exception:  # a model that cannot be copied or converted runs as it is
        return target
    fast = copy.copy(target)
    fast.model = fast_model
    fast._channels_last = True  # type: ignore[attr-defined]
    sample = probe[:64]
    try:
        with torch.no_grad():
            ref, out = target._raw_forward()(sample), fast._raw_forward()(sample)
    except Exception:  # nor one whose copy fails
        return target
    scale = float(ref.abs().max()) + 1.0
    if (ref.shape != out.shape or not torch.equal(ref.argmax(1), out.argmax(1))
            or float((ref - out).abs().max()) > 1e-4 * scale):
        return target
    return fast
