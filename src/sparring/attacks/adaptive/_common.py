"""Helpers shared by the adaptive wrappers: target checks and probe batches."""

from __future__ import annotations

import numpy as np
import torch

from sparring.errors import ParameterError
from sparring.targets.torch import TorchTarget

PROBE_POINTS = 16
"""Uniform random points probed when blockers must be found and no ``x`` is given."""
ADAPTIVE_POINTS = 64
"""Most examples :func:`~sparring.attacks.adaptive.adaptive` probes (the first ones of ``x``)."""


def check_target(target: object, fn: str) -> TorchTarget:
    if not isinstance(target, TorchTarget):
        raise ParameterError(
            f"{fn} needs a TorchTarget (a white-box PyTorch model); got {type(target).__name__}. Wrap the model "
            "with TorchTarget(model, spec), or evaluate a black-box target with a gradient-free attack (SPSA, NES, "
            "Square, HopSkipJump)."
        )
    return target


def probe(t: TorchTarget, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    xt, _ = t.spec.validate(x)
    return xt.to(t.device, t.dtype)


def uniform_points(t: TorchTarget, n: int) -> torch.Tensor:
    gen = torch.Generator(device=t.device)
    gen.manual_seed(0)
    lo, hi = t.spec.bounds_tensors(t.device, t.dtype)
    u = torch.rand((n, *t.spec.shape), generator=gen, device=t.device, dtype=t.dtype)
    return lo + (hi - lo) * u
