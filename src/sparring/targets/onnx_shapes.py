"""ONNX shape operators as torch: Shape, Reshape, Flatten, Transpose, Squeeze/Unsqueeze, Concat, Gather, Slice, Pad.

Shapes computed at run time (``Shape`` of the batch, then ``Gather``/``Unsqueeze``/``Concat``, as torch's exporter
writes ``x.view(x.size(0), -1)``) stay Python lists of sizes, so ``torch.fx`` and ``torch.export`` see sizes, not
data. Semantics follow the ONNX operator specification (https://onnx.ai/onnx/operators/), attributes and inputs alike
(``axes``, ``starts``/``ends``, ``pads`` moved from attributes to inputs at opsets 10, 11 and 13).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparring.targets.onnx_node import Call, Converted, Kind, Node, axis_of, call, step

__all__ = ["SHAPE_CONVERTERS", "Pad", "torch_pad"]

_SECOND = frozenset({1})  # the shape/indices/repeats input, read as Python values; the data input stays a tensor


def torch_pad(pads: list[int]) -> list[int]:
    """ONNX ``[b1, ..., bn, e1, ..., en]`` (spatial axes) to F.pad's last-axis-first ``[bn, en, ..., b1, e1]``."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    while len(out) > 2 and out[-2:] == [0, 0]:  # unpadded leading axes (batch, channels): F.pad needs none
        out = out[:-2]
    return out


class Pad(nn.Module):
    def __init__(self, pads: list[int], value: float, mode: str = "constant") -> None:
        super().__init__()
        self.pads, self.value, self.mode = pads, value, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "constant":
            return F.pad(x, self.pads, value=self.value)
        return F.pad(x, self.pads, mode=self.mode)


def _shape(node: Node) -> Converted:
    v = node.input(0)
    start, end = node.attrs.get("start"), node.attrs.get("end")
    rank = v.rank if v is not None else None
    if rank is None:
        if start is not None or end is not None:
            raise node.fail("Shape with start/end needs the input's rank, which shape inference could not tell")
        return Converted(Call(_full_shape, node.ins), ["shape"])
    lo = 0 if start is None else axis_of(int(start), rank)
    hi = rank if end is None else min(axis_of(int(end), rank), rank)
    return Converted(Call(functools.partial(_shape_of, list(range(lo, hi))), node.ins), ["shape"])


def _full_shape(x: torch.Tensor) -> list[Any]:
    return list(x.shape)


def _shape_of(dims: list[int], x: torch.Tensor) -> list[Any]:
    return [x.shape[d] for d in dims]


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list | tuple) else [v]


def _reshape_fn(allow_zero: bool, x: torch.Tensor, shape: Any) -> torch.Tensor:
    dims = _as_list(shape)
    if not allow_zero:
        dims = [x.shape[i] if isinstance(d, int) and d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _reshape(node: Node) -> Converted:
    fn = functools.partial(_reshape_fn, bool(node.attrs.get("allowzero", 0)))
    return Converted(Call(fn, node.ins, literal=_SECOND), ["tensor"])


def _flatten_fn(axis: int, x: torch.Tensor) -> torch.Tensor:
    if axis == 0:
        return x.reshape(1, -1)
    out = torch.flatten(x, axis)
    return torch.flatten(out, 0, axis - 1) if axis > 1 else out


def _flatten(node: Node) -> Converted:
    axis = int(node.attrs.get("axis", 1))
    if axis < 0:
        axis = axis_of(axis, node.rank())
    return call(node, functools.partial(_flatten_fn, axis))


def _permute(perm: list[int], x: torch.Tensor) -> torch.Tensor:
    return x.permute(perm)


def _transpose(node: Node) -> Converted:
    perm = node.attrs.get("perm")
    dims = [int(p) for p in perm] if perm is not None else list(reversed(range(node.rank())))
    return call(node, functools.partial(_permute, dims))


def _squeeze_fn(axes: list[int] | None, on_shape: bool, x: Any) -> Any:
    if on_shape:  # a shape of one element -> that element
        return x[0]
    return torch.squeeze(x) if axes is None else torch.squeeze(x, axes)


def _unsqueeze_fn(axes: list[int], on_shape: bool, x: Any) -> Any:
    if on_shape:  # a shape element -> a one-element shape
        return [x]
    for a in axes:  # normalised and sorted at conversion
        x = torch.unsqueeze(x, a)
    return x


def _shape_kind(node: Node) -> list[Kind]:
    v = node.ins[0]
    return ["shape" if v is not None and v.kind == "shape" else "tensor"]


def _squeeze(node: Node) -> Converted:
    axes = node.ints("axes", 1, "axes")
    v = node.ins[0]
    if v is not None and v.kind == "shape" and (v.rank != 1 or axes not in (None, [0])):
        raise node.fail("squeezing a tensor shape other than a one-element one is not supported")
    kinds = _shape_kind(node)
    return Converted(Call(functools.partial(_squeeze_fn, axes, kinds == ["shape"]), node.ins[:1]), kinds)


def _unsqueeze(node: Node) -> Converted:
    axes = node.ints("axes", 1, "axes")
    if axes is None:
        raise node.fail("Unsqueeze without axes")
    v = node.ins[0]
    if v is not None and v.kind == "shape" and (v.rank != 0 or axes != [0]):
        raise node.fail("unsqueezing a tensor shape other than one element at axis 0 is not supported")
    if any(a < 0 for a in axes):
        axes = [axis_of(a, node.rank() + len(axes)) for a in axes]
    axes = sorted(axes)
    kinds = _shape_kind(node)
    return Converted(Call(functools.partial(_unsqueeze_fn, axes, kinds == ["shape"]), node.ins[:1]), kinds)


def _cat_shapes(*parts: Any) -> list[Any]:
    out: list[Any] = []
    for p in parts:
        out += _as_list(p)
    return out


def _cat(axis: int, *xs: torch.Tensor) -> torch.Tensor:
    return torch.cat(list(xs), axis)


def _concat(node: Node) -> Converted:
    if any(v is not None and v.kind == "shape" for v in node.ins):
        return Converted(Call(_cat_shapes, node.ins, literal=True), ["shape"])
    return call(node, functools.partial(_cat, int(node.attrs["axis"])))


def _gather_fn(axis: int, rank: int | None, x: Any, idx: Any) -> Any:
    if isinstance(x, list):  # a shape: pick elements
        return x[idx] if isinstance(idx, int) else [x[i] for i in idx]
    if isinstance(idx, int):
        return torch.select(x, axis, idx)
    t = torch.tensor(idx, dtype=torch.long, device=x.device)
    flat = t.reshape(-1)
    if bool((flat < 0).any()):
        flat = torch.remainder(flat, x.shape[axis])
    picked = torch.index_select(x, axis, flat)
    if t.dim() == 1:
        return picked
    n = x.dim() if rank is None else rank
    return picked.reshape([*(x.shape[d] for d in range(axis)), *t.shape, *(x.shape[d] for d in range(axis + 1, n))])


def _gather(node: Node) -> Converted:
    node.const(1, "indices")
    v = node.ins[0]
    axis = int(node.attrs.get("axis", 0))
    if v is not None and v.kind == "shape":
        if axis != 0 or v.rank != 1:
            raise node.fail("Gather on a tensor shape needs axis 0 of the whole shape")
        return Converted(Call(functools.partial(_gather_fn, 0, None), node.ins, literal=_SECOND), ["shape"])
    rank = v.rank if v is not None else None
    if axis < 0:
        axis = axis_of(axis, node.rank())
    return Converted(Call(functools.partial(_gather_fn, axis, rank), node.ins, literal=_SECOND), ["tensor"])


_INT_MAX = 2**62


def _slice_fn(spec: list[tuple[int, int, int, int]], x: Any) -> Any:
    if isinstance(x, list):
        ((_, start, end, step),) = spec
        return x[start:end:step]
    index: list[Any] = [slice(None)] * (1 + max(a for a, _, _, _ in spec))  # axes normalised at conversion
    for axis, start, end, step in spec:
        index[axis] = slice(start, None if end >= _INT_MAX else end, step)
    return x[tuple(index)]


def _slice(node: Node) -> Converted:
    if node.opset < 10:
        starts, ends = [int(a) for a in node.attrs["starts"]], [int(a) for a in node.attrs["ends"]]
        axes = [int(a) for a in node.attrs.get("axes", range(len(starts)))]
        steps = [1] * len(starts)
    else:
        starts, ends = node.ints("", 1, "starts") or [], node.ints("", 2, "ends") or []
        axes = node.ints("", 3, "axes") or list(range(len(starts)))
        steps = node.ints("", 4, "steps") or [1] * len(starts)
    if any(s <= 0 for s in steps):
        raise node.fail(f"slice steps {steps} are not supported (positive steps only)")
    ends = [min(e, _INT_MAX) for e in ends]
    v = node.ins[0]
    if v is not None and v.kind == "shape":
        if len(axes) != 1 or axes[0] not in (0, -1):
            raise node.fail("Slice on a tensor shape needs one slice along axis 0")
        axes = [0]
    elif any(a < 0 for a in axes):
        axes = [axis_of(a, node.rank()) for a in axes]
    spec = list(zip(axes, starts, ends, steps, strict=True))
    return Converted(Call(functools.partial(_slice_fn, spec), node.ins[:1]), _shape_kind(node))


def _pad(node: Node) -> Converted:
    mode = node.attrs.get("mode", "constant")
    if node.opset < 11:
        pads, value = [int(p) for p in node.attrs["pads"]], float(node.attrs.get("value", 0.0))
    else:
        pads = node.ints("", 1, "pads") or []
        cv = node.const(2, "constant value")
        value = 0.0 if cv is None or cv.numel() == 0 else float(cv.reshape(-1)[0])
        if node.input(3) is not None:
            raise node.fail("Pad with axes is not supported")
    n = len(pads) // 2
    if any(pads[i] or pads[i + n] for i in range(min(2, n))) and mode != "constant":
        raise node.fail("non-constant padding of the batch or channel axes is not supported")
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(mode)
    if torch_mode is None:
        raise node.fail(f"pad mode {mode!r} is not supported")
    return step(node, Pad(torch_pad(pads), value, torch_mode))


def _split_fn(axis: int, sizes: list[int] | None, parts: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if sizes is not None:
        return torch.split(x, sizes, axis)
    return torch.chunk(x, parts, axis)  # ceil(size / parts) each, the last smaller: ONNX's equal split


def _split(node: Node) -> Converted:
    sizes = node.ints("split", 1, "split sizes")
    parts = int(node.attrs.get("num_outputs", node.n_out))
    if node.ins[0] is None or node.ins[0].kind == "shape":
        raise node.fail("splitting a tensor shape is not supported")
    fn = functools.partial(_split_fn, int(node.attrs.get("axis", 0)), sizes, parts)
    return Converted(Call(fn, node.ins[:1]), ["tensor"] * parts)


def _ones_like_shape(x: torch.Tensor, shape: Any) -> torch.Tensor:
    return x * torch.ones(_as_list(shape), dtype=x.dtype, device=x.device)  # ONNX Expand: two-way broadcasting


def _expand(node: Node) -> Converted:
    return Converted(Call(_ones_like_shape, node.ins[:2], literal=_SECOND), ["tensor"])


def _tile_fn(x: torch.Tensor, repeats: Any) -> torch.Tensor:
    return x.repeat(_as_list(repeats))


def _tile(node: Node) -> Converted:
    node.const(1, "repeats")
    return Converted(Call(_tile_fn, node.ins[:2], literal=_SECOND), ["tensor"])


def _constant_of_shape_fn(value: torch.Tensor, shape: Any) -> torch.Tensor:
    return torch.full(_as_list(shape), value.item(), dtype=value.dtype)


def _constant_of_shape(node: Node) -> Converted:
    v = node.attrs.get("value")
    value = v.reshape(-1)[:1].reshape(()) if isinstance(v, torch.Tensor) else torch.tensor(0.0)
    return Converted(Call(functools.partial(_constant_of_shape_fn, value), node.ins[:1], literal=True), ["tensor"])


SHAPE_CONVERTERS: dict[str, Callable[[Node], Converted]] = {
    "Shape": _shape, "Reshape": _reshape, "Flatten": _flatten, "Transpose": _transpose, "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze, "Concat": _concat, "Gather": _gather, "Slice": _slice, "Pad": _pad,
    "Split": _split, "Expand": _expand, "Tile": _tile, "ConstantOfShape": _constant_of_shape,
}
