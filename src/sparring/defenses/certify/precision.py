"""Exact float32 while bounds are computed: on NVIDIA GPUs cuDNN convolutions and matrix products default to TF32
(a 10-bit mantissa, relative errors near 1e-3), far coarser than the rounding a sound bound tolerates.
:func:`full_precision` switches them to IEEE float32 and restores the settings; :func:`exact` decorates a function
with it. Re-exported by :mod:`.bounds`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

__all__ = ["exact", "full_precision", "precision_knobs"]

_F = TypeVar("_F", bound=Callable[..., Any])


def precision_knobs() -> list[tuple[Any, str, Any]]:
    """The settings that make float32 matmuls and convolutions exact float32: torch's ``fp32_precision`` API
    (``"ieee"``), or the legacy ``allow_tf32`` flags on torch versions without it (the two must not be mixed)."""
    knobs: list[tuple[Any, str, Any]] = [(obj, "fp32_precision", "ieee") for obj in (torch.backends.cuda.matmul,
                                                         getattr(torch.backends.cudnn, "conv", None))
             if obj is not None and hasattr(obj, "fp32_precision")]
    return knobs or [(torch.backends.cuda.matmul, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", False)]


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Float32 matrix products and convolutions computed in float32, not TF32, while bounds are computed.

    On NVIDIA GPUs cuDNN convolutions default to TF32 (10-bit mantissa, relative errors near 1e-3), far coarser than
    the rounding a bound tolerates: a certificate computed in TF32 can be unsound. Restores the settings after.
    """
    knobs = precision_knobs()
    saved = [getattr(obj, name) for obj, name, _ in knobs]
    try:
        for obj, name, value in knobs:
            setattr(obj, name, value)
        yield
    finally:
        for (obj, name, _), old in zip(knobs, saved, strict=True):
            setattr(obj, name, old)


def exact(fn: _F) -> _F:
    """``fn`` run under :func:`full_precision`."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with full_precision():
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]
