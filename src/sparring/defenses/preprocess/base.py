"""The base of the image preprocessing defences: :class:`Preprocessor` (a module on raw ``(N, C, H, W)`` inputs with
its BPDA stand-in, Athalye, Carlini & Wagner 2018) and the parameter checks every transform shares.

The transforms are in :mod:`.squeeze` (bit depth, median and mean smoothing), :mod:`.jpeg` and :mod:`.tv`;
:mod:`.image` puts them in front of a model (``defend``, ``bpda``) and re-exports them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sparring.errors import ParameterError

__all__ = ["Approx", "Bounds", "Preprocessor", "check_bounds", "check_images", "check_int", "check_positive",
           "identity"]


Approx = Callable[[torch.Tensor], torch.Tensor]
Bounds = tuple[float, float]


def identity(x: torch.Tensor) -> torch.Tensor:
    """The straight-through BPDA stand-in (the default :meth:`Preprocessor.bpda_approx`)."""
    return x


class Preprocessor(nn.Module):
    """Base of the input transforms: a module on raw inputs ``(N, C, H, W)`` with a BPDA approximation.

    Subclasses implement ``forward`` (the exact, possibly non-differentiable transform) and may override
    :meth:`bpda_approx`. The approximation must not call the module itself (BPDA hooks sit on the module).
    """

    def bpda_approx(self) -> Approx:
        """The differentiable function that stands in for this transform on the backward pass of BPDA.

        Default: the identity (straight-through), as Athalye et al. (2018) use for quantisation and JPEG. Use it as
        ``with_bpda(defended, modules=[t], approx=t.bpda_approx())``, or :func:`bpda` for every transform at once.
        """
        return identity

    def get_params(self) -> dict[str, Any]:
        """The transform's parameters as given (for reports)."""
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())


def check_int(value: object, name: str, lo: int, hi: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ParameterError(f"{name} must be an integer in {lo}..{hi} ({hint}); got {value!r}.")
    return value


def check_positive(value: object, name: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ParameterError(f"{name} must be a finite number > 0 ({hint}); got {value!r}.")
    return float(value)


def check_bounds(bounds: object) -> Bounds:
    try:
        lo, hi = (float(b) for b in bounds)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ParameterError(f"bounds must be two numbers (low, high), e.g. (0.0, 1.0); got {bounds!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ParameterError(f"bounds must be finite with low < high, e.g. (0.0, 1.0); got {bounds!r}.")
    return lo, hi


def check_images(x: torch.Tensor, who: str) -> None:
    if x.ndim != 4:
        raise ParameterError(
            f"{who} takes a batch of images (N, C, H, W); got shape {tuple(x.shape)}. Channels-last images are "
            "permuted by defend(); for a single image add a batch axis with x[None]."
        )
