"""What the universal attacks share: their parameters as set (for reports), number checks, and the layout round trip
to channels-first images."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from sparring.errors import ParameterError
from sparring.targets.spec import InputSpec

__all__ = ["from_chw", "number", "params_of", "to_chw"]


def params_of(obj: object) -> dict[str, Any]:
    """An object's ``__init__`` arguments exactly as set (for reports)."""
    names = [n for n in inspect.signature(type(obj).__init__).parameters if n != "self"]  # type: ignore[misc]
    return {n: getattr(obj, n) for n in names}


def number(value: object, name: str, lo: float, hi: float, *, open_lo: bool = False, hint: str = "") -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > lo if open_lo else v >= lo) and v <= hi
    if not ok:
        left = "(" if open_lo else "["
        raise ParameterError(f"{name} must be a number in {left}{lo:g}, {hi:g}]{hint}; got {value!r}.")
    return float(value)  # type: ignore[arg-type]


def to_chw(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if spec.layout == "hwc" else x


def from_chw(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if spec.layout == "hwc" else x
