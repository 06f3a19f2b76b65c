"""Backdoor triggers: one stamping rule ``x' = (1 - mask) * x + mask * pattern`` for every kind.

* a BadNets patch (Gu, Dolan-Gavitt, Garg 2017): a small square, binary mask, checkerboard or solid pattern;
* a blended key pattern (Chen, Liu, Li, Lu, Song 2017, "blended injection"): mask ``alpha`` everywhere;
* a tabular feature-value trigger: a few features set to fixed values (mask 1 there, 0 elsewhere).

A trigger is plain data (mask and pattern tensors shaped like one example), so the same object poisons training
data, makes triggered test inputs and is what Neural Cleanse tries to reverse-engineer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from sparring.errors import InputSpecError, ParameterError
from sparring.targets.spec import InputSpec

__all__ = ["Trigger", "blend_trigger", "feature_trigger", "patch_trigger"]

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)
_POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "center")


@dataclass(frozen=True, eq=False)
class Trigger:
    """A backdoor trigger: ``apply(x) = (1 - mask) * x + mask * pattern``, per example.

    Attributes:
        mask: opacity per input value in [0, 1], shaped like one example.
        pattern: the trigger's values (within the input bounds), shaped like one example.
        kind: ``"patch"``, ``"blend"`` or ``"features"``.
        params: how it was made (for reports).
    """

    mask: torch.Tensor
    pattern: torch.Tensor
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mask.shape != self.pattern.shape:
            raise ParameterError(
                f"trigger mask {tuple(self.mask.shape)} and pattern {tuple(self.pattern.shape)} must have the same "
                "shape (that of one example)."
            )
        if bool((self.mask < 0).any()) or bool((self.mask > 1).any()):
            raise ParameterError("trigger mask values must lie in [0, 1] (opacity); rescale the mask.")

    def apply(self, x: ArrayT) -> ArrayT:
        """Stamp the trigger on a batch ``(N, *shape)`` (tensor or numpy; returned as the same kind and device)."""
        xt = torch.as_tensor(x)
        if tuple(xt.shape[1:]) != tuple(self.mask.shape):
            raise InputSpecError(
                f"inputs have shape {tuple(xt.shape)}; this trigger stamps batches of shape "
                f"(N, {', '.join(map(str, self.mask.shape))}). Make the trigger from the data's InputSpec."
            )
        m = self.mask.to(xt.device, xt.dtype if xt.is_floating_point() else torch.float32)
        p = self.pattern.to(m.device, m.dtype)
        out = (1 - m) * xt.to(m.dtype) + m * p
        return out.numpy() if isinstance(x, np.ndarray) else out  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params}


def _check_spec(spec: InputSpec, what: str, images: bool) -> None:
    if not isinstance(spec, InputSpec):
        raise ParameterError(f"{what} needs the data's InputSpec; got {type(spec).__name__}.")
    if images and spec.layout == "features":
        raise ParameterError(
            f"{what} stamps images (layout 'chw' or 'hwc'); this spec has layout 'features'. Use feature_trigger "
            "for tabular data."
        )


def _hw(spec: InputSpec) -> tuple[int, int]:
    return (spec.shape[1], spec.shape[2]) if spec.layout == "chw" else (spec.shape[0], spec.shape[1])


def _to_example(plane: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """An (H, W) plane repeated over the channels of one example."""
    ch = spec.n_channels
    return plane[None].expand(ch, -1, -1).clone() if spec.layout == "chw" else plane[..., None].expand(
        -1, -1, ch).clone()


def patch_trigger(
    spec: InputSpec,
    *,
    size: int = 3,
    position: str | tuple[int, int] = "bottom-right",
    pattern: str = "checkerboard",
    opacity: float = 1.0,
) -> Trigger:
    """A BadNets square patch (Gu et al. 2017) of ``size``×``size`` pixels.

    Args:
        spec: the images' spec (bounds give the pattern's low/high values).
        size: side of the square in pixels.
        position: a corner name (``"bottom-right"``, ``"top-left"``, ...), ``"center"``, or ``(row, col)`` of the
            patch's top-left pixel.
        pattern: ``"checkerboard"`` (alternating high/low, the BadNets look) or ``"solid"`` (all high).
        opacity: the mask value inside the patch (1 replaces the pixels; less blends them).
    """
    _check_spec(spec, "patch_trigger", images=True)
    h, w = _hw(spec)
    if not isinstance(size, int) or not 1 <= size <= min(h, w):
        raise ParameterError(f"patch size must be an integer in 1..{min(h, w)} for {h}×{w} images; got {size!r}.")
    if not 0 < opacity <= 1:
        raise ParameterError(f"opacity must be in (0, 1]; got {opacity!r}.")
    if pattern not in ("checkerboard", "solid"):
        raise ParameterError(f"pattern must be 'checkerboard' or 'solid'; got {pattern!r}.")
    r, c = _corner(position, size, h, w)
    lo, hi = spec.bounds_tensors()
    low, high = float(lo.min()), float(hi.max())
    ii, jj = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cells = ((ii + jj) % 2 == 0).float() if pattern == "checkerboard" else torch.ones(size, size)
    plane_p = torch.full((h, w), low)
    plane_p[r : r + size, c : c + size] = low + cells * (high - low)
    plane_m = torch.zeros(h, w)
    plane_m[r : r + size, c : c + size] = opacity
    return Trigger(_to_example(plane_m, spec), _to_example(plane_p, spec), "patch",
                   {"size": size, "position": list(position) if isinstance(position, tuple) else position,
                    "pattern": pattern, "opacity": opacity})


def _corner(position: str | tuple[int, int], size: int, h: int, w: int) -> tuple[int, int]:
    if isinstance(position, tuple):
        r, c = position
        if not (isinstance(r, int) and isinstance(c, int) and 0 <= r <= h - size and 0 <= c <= w - size):
            raise ParameterError(
                f"patch position {position!r} puts a {size}×{size} patch outside {h}×{w} images; rows must be in "
                f"0..{h - size} and columns in 0..{w - size}."
            )
        return r, c
    if position not in _POSITIONS:
        raise ParameterError(f"position must be one of {', '.join(_POSITIONS)} or (row, col); got {position!r}.")
    if position == "center":
        return (h - size) // 2, (w - size) // 2
    r = 1 if position.startswith("top") else h - size - 1
    c = 1 if position.endswith("left") else w - size - 1
    return max(r, 0), max(c, 0)


def blend_trigger(
    spec: InputSpec,
    *,
    alpha: float = 0.1,
    pattern: torch.Tensor | np.ndarray | None = None,
    seed: int = 0,
) -> Trigger:
    """A blended key pattern (Chen et al. 2017): ``x' = (1 - alpha) x + alpha k`` over the whole image.

    Args:
        spec: the images' spec.
        alpha: blend ratio (Chen et al. use 0.05-0.2; BackdoorBench uses 0.2).
        pattern: the key image, shaped like one example, within bounds; default uniform random noise drawn from
            ``seed`` (Chen et al.'s random-pattern key).
        seed: seed of the random key.
    """
    _check_spec(spec, "blend_trigger", images=True)
    if not 0 < alpha <= 1:
        raise ParameterError(f"alpha must be in (0, 1]; got {alpha!r}.")
    lo, hi = spec.bounds_tensors()
    if pattern is None:
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand(spec.shape, generator=gen)
        key = lo[0] + u * (hi[0] - lo[0])
    else:
        key = torch.as_tensor(pattern, dtype=torch.float32)
        if tuple(key.shape) != spec.shape:
            raise ParameterError(f"the key pattern has shape {tuple(key.shape)}; one example is {spec.shape}.")
    return Trigger(torch.full(spec.shape, float(alpha)), key.float(), "blend",
                   {"alpha": alpha, "pattern": "random" if pattern is None else "given", "seed": seed})


def feature_trigger(
    spec: InputSpec, *, features: Sequence[int], values: Sequence[float] | None = None
) -> Trigger:
    """A tabular trigger: the listed features set to fixed ``values`` (default: each feature's upper bound).

    An extreme but valid combination of a few feature values plays the role of the image patch.
    """
    _check_spec(spec, "feature_trigger", images=False)
    n = spec.n_features
    feats = list(features)
    if not feats or any(not isinstance(f, int | np.integer) or not 0 <= f < n for f in feats):
        raise ParameterError(f"features must be a non-empty list of feature indices in 0..{n - 1}; got {feats!r}.")
    lo, hi = (t.reshape(-1).expand(n) for t in spec.bounds_tensors())
    vals = hi[feats] if values is None else torch.as_tensor(list(values), dtype=torch.float32)
    if vals.shape[0] != len(feats):
        raise ParameterError(f"got {vals.shape[0]} values for {len(feats)} features; give one value per feature.")
    if bool((vals < lo[feats]).any()) or bool((vals > hi[feats]).any()):
        raise ParameterError("trigger values must lie within the spec's bounds of their features.")
    mask = torch.zeros(n)
    mask[feats] = 1.0
    pattern = torch.zeros(n)
    pattern[feats] = vals
    return Trigger(mask.reshape(spec.shape), pattern.reshape(spec.shape), "features",
                   {"features": [int(f) for f in feats], "values": [float(v) for v in vals]})
