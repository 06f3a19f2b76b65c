"""ONNX operators as torch modules: one converter per operator, for :mod:`sparring.targets.onnx_torch`.

A converter receives the node's attributes and what is known of each input at conversion time (a constant, a
runtime tensor, or a runtime *shape*: the Python list that ``Shape`` gives) and returns a module whose ``forward``
takes the node's runtime inputs in order. Constants are baked in (weights become the parameters of real
``nn.Conv2d``/``nn.Linear``/``nn.BatchNorm2d`` layers, other constants buffers), so the converted model is plain
torch that autograd, ``torch.fx`` and ``torch.export`` follow. Semantics follow the ONNX operator specification
(https://onnx.ai/onnx/operators/), including the opset-dependent ones (attributes that became inputs at opset 10,
11, 13 and 18; ``Softmax``'s 2-D coercion before opset 13).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sparring.errors import OnnxConversionError

__all__ = ["CONVERTERS", "Converted", "Value"]

Kind = Literal["const", "tensor", "shape"]


@dataclass
class Value:
    """What the conversion knows of one ONNX value: a constant, a runtime tensor (with its rank when inferred), or a
    runtime shape (a Python list of ints, or one int when ``rank`` is 0)."""

    kind: Kind
    const: torch.Tensor | None = None
    rank: int | None = None


@dataclass
class Converted:
    """A converted node: the module to run on its runtime inputs, and the kind of each output."""

    module: nn.Module
    kinds: list[Kind]


class Node:
    """The part of an ONNX NodeProto a converter reads: op type, name, attributes, inputs, opset."""

    def __init__(self, op: str, name: str, attrs: dict[str, Any], ins: list[Value | None], n_out: int,
                 opset: int) -> None:
        self.op, self.name, self.attrs, self.ins, self.n_out, self.opset = op, name, attrs, ins, n_out, opset

    def fail(self, why: str) -> OnnxConversionError:
        return OnnxConversionError(
            f"ONNX node {self.name!r} ({self.op}) cannot be converted to torch: {why}. Attack the model with "
            "score-based attacks on OnnxTarget (square, hopskipjump), or re-export it without this construct.",
            ops=(self.op,),
        )

    def input(self, i: int) -> Value | None:
        return self.ins[i] if i < len(self.ins) else None

    def const(self, i: int, what: str) -> torch.Tensor | None:
        """Input ``i`` as a constant (None when omitted); a runtime value there is refused."""
        v = self.input(i)
        if v is None:
            return None
        if v.kind != "const" or v.const is None:
            raise self.fail(f"its {what} (input {i}) is computed at run time; only constant {what}s are supported")
        return v.const

    def ints(self, attr: str, i: int, what: str) -> list[int] | None:
        """An int list given as attribute ``attr`` (older opsets) or constant input ``i`` (newer ones)."""
        if attr in self.attrs:
            return [int(a) for a in self.attrs[attr]]
        c = self.const(i, what)
        return None if c is None else [int(a) for a in c.reshape(-1).tolist()]

    def rank(self, i: int = 0) -> int:
        v = self.input(i)
        if v is None or v.rank is None:
            raise self.fail(f"the rank of input {i} is unknown (ONNX shape inference could not tell it)")
        return v.rank


class Call(nn.Module):
    """``fn(*args)`` where each arg is either the next runtime input or a baked-in constant: a buffer, or with
    ``literal=True`` a Python number or list (for shapes, indices and axes, which tracing must see as values)."""

    def __init__(self, fn: Callable[..., Any], ins: list[Value | None], *, literal: bool = False) -> None:
        super().__init__()
        self.fn = fn
        self._slots: list[tuple[str, Any]] = []
        for i, v in enumerate(ins):
            if v is None:
                self._slots.append(("value", None))
            elif v.kind == "const":
                assert v.const is not None
                if literal:
                    self._slots.append(("value", v.const.tolist()))
                else:
                    self.register_buffer(f"c{i}", v.const, persistent=True)
                    self._slots.append(("buffer", f"c{i}"))
            else:
                self._slots.append(("arg", None))

    def forward(self, *xs: Any) -> Any:
        it = iter(xs)
        args = [next(it) if k == "arg" else getattr(self, v) if k == "buffer" else v for k, v in self._slots]
        return self.fn(*args)

    def extra_repr(self) -> str:
        fn = self.fn.func if isinstance(self.fn, functools.partial) else self.fn
        return getattr(fn, "__name__", repr(fn))


def _call(node: Node, fn: Callable[..., Any], kinds: list[Kind] | None = None) -> Converted:
    return Converted(Call(fn, node.ins), kinds or ["tensor"])


def _module(node: Node, module: nn.Module) -> Converted:
    """A layer of its own taking the node's single runtime input (input 0); the other inputs were baked in."""
    if node.ins[0] is None or node.ins[0].kind != "tensor":
        raise node.fail("its data input is not a runtime tensor")
    return Converted(Call(module, [node.ins[0]]), ["tensor"])


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# ---------------------------------------------------------------------------------------------- elementwise
def _binary(fn: Callable[[Any, Any], Any]) -> Callable[[Node], Converted]:
    def convert(node: Node) -> Converted:
        if any(v is not None and v.kind == "shape" for v in node.ins):
            raise node.fail("arithmetic on a tensor shape is not supported")
        if len(node.ins) == 2:
            return _call(node, fn)
        return _call(node, functools.partial(_reduce_args, fn))

    return convert


def _reduce_args(fn: Callable[[Any, Any], Any], *xs: Any) -> Any:
    return functools.reduce(fn, xs)


def _mean_args(*xs: Any) -> Any:
    return functools.reduce(operator.add, xs) / len(xs)


def _unary(fn: Callable[[Any], Any]) -> Callable[[Node], Converted]:
    return lambda node: _call(node, fn)


def _layer(make: Callable[[Node], nn.Module]) -> Callable[[Node], Converted]:
    return lambda node: _module(node, make(node))


def _hard_sigmoid(alpha: float, beta: float, x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


def _softmax_2d(fn: Callable[..., torch.Tensor], axis: int, x: torch.Tensor) -> torch.Tensor:
    """Softmax before opset 13: the input coerced to 2-D at ``axis``, normalised over the flattened tail."""
    return fn(torch.flatten(x, axis), -1).reshape(x.shape)


def _softmax(fn: Callable[..., torch.Tensor]) -> Callable[[Node], Converted]:
    def convert(node: Node) -> Converted:
        if node.opset >= 13:
            return _call(node, functools.partial(fn, dim=int(node.attrs.get("axis", -1))))
        rank = node.rank()
        axis = _axis(int(node.attrs.get("axis", 1)), rank)
        if axis == rank - 1:
            return _call(node, functools.partial(fn, dim=axis))
        return _call(node, functools.partial(_softmax_2d, fn, axis))

    return convert


def _clip(node: Node) -> Converted:
    if node.opset < 11:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
    else:
        lo_t, hi_t = node.const(1, "minimum"), node.const(2, "maximum")
        lo = None if lo_t is None else float(lo_t)
        hi = None if hi_t is None else float(hi_t)
    return Converted(Call(functools.partial(_clamp, lo, hi), node.ins[:1]), ["tensor"])


def _clamp(lo: float | None, hi: float | None, x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, lo, hi)


# ONNX TensorProto data types -> torch dtypes (those Cast can target here)
DTYPES: dict[int, torch.dtype] = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32,
                                  7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64,
                                  16: torch.bfloat16}


def _to(dtype: torch.dtype, x: torch.Tensor) -> torch.Tensor:
    return x.to(dtype)


def _cast(node: Node) -> Converted:
    v = node.ins[0]
    if v is not None and v.kind == "shape":
        return Converted(Call(_same, node.ins[:1]), ["shape"])
    to = int(node.attrs["to"])
    if to not in DTYPES:
        raise node.fail(f"casting to ONNX data type {to} is not supported")
    return _call(node, functools.partial(_to, DTYPES[to]))


def _same(x: Any) -> Any:
    return x


# ---------------------------------------------------------------------------------------------- linear layers
def _gemm_fn(alpha: float, beta: float, trans_a: int, trans_b: int, a: torch.Tensor, b: torch.Tensor,
             c: torch.Tensor | None) -> torch.Tensor:
    a = a.t() if trans_a else a
    b = b.t() if trans_b else b
    out = torch.matmul(a, b) * alpha if alpha != 1.0 else torch.matmul(a, b)
    if c is not None:
        out = out + (c * beta if beta != 1.0 else c)
    return out


def _gemm(node: Node) -> Converted:
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    b, c = node.input(1), node.input(2)
    if (trans_a == 0 and b is not None and b.kind == "const" and b.const is not None
            and (c is None or (c.kind == "const" and c.const is not None))):
        w = b.const.t() if trans_b else b.const  # (in, out)
        layer = nn.Linear(w.shape[0], w.shape[1], bias=c is not None)
        with torch.no_grad():
            layer.weight.copy_(w.t() * alpha)
            if c is not None and c.const is not None:
                layer.bias.copy_(torch.broadcast_to(c.const.reshape(-1) * beta, (w.shape[1],)))
        return _module(node, layer)
    fn = functools.partial(_gemm_fn, alpha, beta, trans_a, trans_b)
    return Converted(Call(fn, [*node.ins, None, None][:3]), ["tensor"])


def _matmul(node: Node) -> Converted:
    b = node.input(1)
    a = node.input(0)
    if (b is not None and b.kind == "const" and b.const is not None and b.const.dim() == 2
            and a is not None and a.kind == "tensor"):
        layer = nn.Linear(b.const.shape[0], b.const.shape[1], bias=False)
        with torch.no_grad():
            layer.weight.copy_(b.const.t())
        return _module(node, layer)
    return _call(node, torch.matmul)


def _pads(node: Node, n: int, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """The ONNX pads ``[b1, b2, ..., e1, e2, ...]`` (auto_pad resolved where it does not depend on the input size)."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", "VALID"):
        return [int(p) for p in node.attrs.get("pads", [0] * (2 * n))] if auto == "NOTSET" else [0] * (2 * n)
    if any(s != 1 for s in strides):
        raise node.fail(f"auto_pad={auto} with strides {strides} depends on the input size; re-export with pads")
    total = [d * (k - 1) for k, d in zip(kernel, dilations, strict=True)]
    small = [t // 2 for t in total]
    big = [t - s for t, s in zip(total, small, strict=True)]
    return small + big if auto == "SAME_UPPER" else big + small


def _torch_pad(pads: list[int]) -> list[int]:
    """ONNX ``[b1, ..., bn, e1, ..., en]`` (spatial axes) to F.pad's last-axis-first ``[bn, en, ..., b1, e1]``."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    while len(out) > 2 and out[-2:] == [0, 0]:  # unpadded leading axes (batch, channels): F.pad needs none
        out = out[:-2]
    return out


def _conv(node: Node) -> Converted:
    w = node.const(1, "weight")
    assert w is not None
    bias = node.const(2, "bias")
    n = w.dim() - 2
    if n not in (1, 2, 3):
        raise node.fail(f"{n}-D convolution is not supported (1-D, 2-D and 3-D are)")
    kernel = [int(k) for k in node.attrs.get("kernel_shape", w.shape[2:])]
    strides = [int(s) for s in node.attrs.get("strides", [1] * n)]
    dilations = [int(d) for d in node.attrs.get("dilations", [1] * n)]
    group = int(node.attrs.get("group", 1))
    pads = _pads(node, n, kernel, strides, dilations)
    symmetric = pads[:n] == pads[n:]
    cls: Any = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[n - 1]
    layer = cls(w.shape[1] * group, w.shape[0], tuple(kernel), stride=tuple(strides),
                padding=tuple(pads[:n]) if symmetric else 0, dilation=tuple(dilations), groups=group,
                bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(bias)
    if symmetric:
        return _module(node, layer)
    return _module(node, nn.Sequential(_Pad(_torch_pad(pads), 0.0), layer))


class _Pad(nn.Module):
    def __init__(self, pads: list[int], value: float, mode: str = "constant") -> None:
        super().__init__()
        self.pads, self.value, self.mode = pads, value, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "constant":
            return F.pad(x, self.pads, value=self.value)
        return F.pad(x, self.pads, mode=self.mode)


# ---------------------------------------------------------------------------------------------- pooling, norms
def _pool(kind: str) -> Callable[[Node], Converted]:
    def convert(node: Node) -> Converted:
        kernel = [int(k) for k in node.attrs["kernel_shape"]]
        n = len(kernel)
        if n not in (1, 2, 3):
            raise node.fail(f"{n}-D pooling is not supported")
        if node.n_out > 1:
            raise node.fail("the Indices output of MaxPool is not supported")
        strides = [int(s) for s in node.attrs.get("strides", [1] * n)]
        dilations = [int(d) for d in node.attrs.get("dilations", [1] * n)]
        pads = _pads(node, n, kernel, strides, dilations)
        ceil = bool(node.attrs.get("ceil_mode", 0))
        if pads[:n] != pads[n:]:
            raise node.fail(f"asymmetric pads {pads} are not supported in pooling")
        if kind == "max":
            cls: Any = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[n - 1]
            return _module(node, cls(kernel, strides, pads[:n], dilation=dilations, ceil_mode=ceil))
        if any(d != 1 for d in dilations):
            raise node.fail("dilated average pooling is not supported")
        cls = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[n - 1]
        include = bool(node.attrs.get("count_include_pad", 0))
        return _module(node, cls(kernel, strides, pads[:n], ceil_mode=ceil, count_include_pad=include))

    return convert


def _global_pool(kind: str) -> Callable[[Node], Converted]:
    def convert(node: Node) -> Converted:
        rank = node.rank()
        if kind == "avg" and rank == 4:
            return _module(node, nn.AdaptiveAvgPool2d(1))
        fn = torch.mean if kind == "avg" else torch.amax
        return _call(node, functools.partial(_reduce, fn, list(range(2, rank)), True))

    return convert


def _reduce(fn: Callable[..., torch.Tensor], dims: list[int] | None, keep: bool, x: torch.Tensor) -> torch.Tensor:
    if dims is None:
        return fn(x).reshape([1] * x.dim()) if keep else fn(x)
    return fn(x, dim=dims, keepdim=keep)


def _reduce_op(fn: Callable[..., torch.Tensor], axes_input_from: int) -> Callable[[Node], Converted]:
    def convert(node: Node) -> Converted:
        axes = node.ints("axes", 1, "axes") if node.opset >= axes_input_from else (
            [int(a) for a in node.attrs["axes"]] if "axes" in node.attrs else None)
        if not axes and node.attrs.get("noop_with_empty_axes", 0):
            return Converted(Call(_same, node.ins[:1]), ["tensor"])
        return Converted(Call(functools.partial(_reduce, fn, axes or None, bool(node.attrs.get("keepdims", 1))),
                              node.ins[:1]), ["tensor"])

    return convert


def _batchnorm(node: Node) -> Converted:
    if node.attrs.get("training_mode", 0) or node.attrs.get("is_test", 1) == 0 or node.attrs.get("spatial", 1) != 1:
        raise node.fail("only inference-mode batch normalisation (spatial) is supported")
    scale, bias, mean, var = (node.const(i, w) for i, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    assert scale is not None and bias is not None and mean is not None and var is not None
    eps = float(node.attrs.get("epsilon", 1e-5))
    v = node.input(0)
    rank = v.rank if v is not None else None
    cls: Any = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank or 0)
    if cls is None:
        raise node.fail(f"batch normalisation of a rank-{rank} input is not supported")
    layer = cls(scale.numel(), eps=eps).eval()
    with torch.no_grad():
        layer.weight.copy_(scale)
        layer.bias.copy_(bias)
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)
    return _module(node, layer)


def _layernorm(node: Node) -> Converted:
    scale, bias = node.const(1, "scale"), node.const(2, "bias")
    assert scale is not None
    rank = node.rank()
    axis = _axis(int(node.attrs.get("axis", -1)), rank)
    if node.n_out > 1:
        raise node.fail("the Mean/InvStdDev outputs of LayerNormalization are not supported")
    if scale.dim() != rank - axis:
        raise node.fail(f"scale of shape {tuple(scale.shape)} does not cover the normalised axes {axis}..{rank - 1}")
    layer = nn.LayerNorm(tuple(scale.shape), eps=float(node.attrs.get("epsilon", 1e-5)), bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(scale)
        if bias is not None:
            layer.bias.copy_(torch.broadcast_to(bias, scale.shape))
    return _module(node, layer)


def _instancenorm(node: Node) -> Converted:
    eps = float(node.attrs.get("epsilon", 1e-5))
    return _call(node, functools.partial(_instance_norm, eps))


def _instance_norm(eps: float, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.instance_norm(x, weight=scale, bias=bias, eps=eps)


# ---------------------------------------------------------------------------------------------- shapes
def _shape(node: Node) -> Converted:
    v = node.input(0)
    start, end = node.attrs.get("start"), node.attrs.get("end")
    rank = v.rank if v is not None else None
    if rank is None:
        if start is not None or end is not None:
            raise node.fail("Shape with start/end needs the input's rank, which shape inference could not tell")
        return Converted(Call(_full_shape, node.ins), ["shape"])
    lo = 0 if start is None else _axis(int(start), rank)
    hi = rank if end is None else min(_axis(int(end), rank), rank)
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
    return Converted(Call(fn, node.ins, literal=True), ["tensor"])


def _flatten_fn(axis: int, x: torch.Tensor) -> torch.Tensor:
    if axis == 0:
        return x.reshape(1, -1)
    out = torch.flatten(x, axis)
    return torch.flatten(out, 0, axis - 1) if axis > 1 else out


def _flatten(node: Node) -> Converted:
    axis = int(node.attrs.get("axis", 1))
    if axis < 0:
        axis = _axis(axis, node.rank())
    return _call(node, functools.partial(_flatten_fn, axis))


def _permute(perm: list[int], x: torch.Tensor) -> torch.Tensor:
    return x.permute(perm)


def _transpose(node: Node) -> Converted:
    perm = node.attrs.get("perm")
    dims = [int(p) for p in perm] if perm is not None else list(reversed(range(node.rank())))
    return _call(node, functools.partial(_permute, dims))


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
        axes = [_axis(a, node.rank() + len(axes)) for a in axes]
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
    return _call(node, functools.partial(_cat, int(node.attrs["axis"])))


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
        return Converted(Call(functools.partial(_gather_fn, 0, None), node.ins, literal=True), ["shape"])
    rank = v.rank if v is not None else None
    if axis < 0:
        axis = _axis(axis, node.rank())
    return Converted(Call(functools.partial(_gather_fn, axis, rank), node.ins, literal=True), ["tensor"])


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
        axes = [_axis(a, node.rank()) for a in axes]
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
    return _module(node, _Pad(_torch_pad(pads), value, torch_mode))


def _hard_swish_make(node: Node) -> nn.Module:
    return nn.Hardswish()


CONVERTERS: dict[str, Callable[[Node], Converted]] = {
    "Add": _binary(operator.add), "Sub": _binary(operator.sub), "Mul": _binary(operator.mul),
    "Div": _binary(operator.truediv), "Pow": _binary(torch.pow), "Max": _binary(torch.maximum),
    "Min": _binary(torch.minimum), "Sum": _binary(operator.add),
    "Mean": lambda node: _call(node, _mean_args),
    "Relu": _layer(lambda n: nn.ReLU()), "Sigmoid": _layer(lambda n: nn.Sigmoid()), "Tanh": _layer(lambda n: nn.Tanh()),
    "LeakyRelu": _layer(lambda n: nn.LeakyReLU(float(n.attrs.get("alpha", 0.01)))),
    "Elu": _layer(lambda n: nn.ELU(float(n.attrs.get("alpha", 1.0)))), "Selu": _layer(lambda n: nn.SELU()),
    "Softplus": _layer(lambda n: nn.Softplus()), "Softsign": _layer(lambda n: nn.Softsign()),
    "HardSwish": _layer(_hard_swish_make),
    "Gelu": _layer(lambda n: nn.GELU(approximate=n.attrs.get("approximate", "none"))),
    "HardSigmoid": lambda n: _call(n, functools.partial(_hard_sigmoid, float(n.attrs.get("alpha", 0.2)),
                                                         float(n.attrs.get("beta", 0.5)))),
    "Exp": _unary(torch.exp), "Log": _unary(torch.log), "Sqrt": _unary(torch.sqrt), "Abs": _unary(torch.abs),
    "Neg": _unary(operator.neg), "Reciprocal": _unary(torch.reciprocal), "Erf": _unary(torch.erf),
    "Floor": _unary(torch.floor), "Ceil": _unary(torch.ceil), "Round": _unary(torch.round),
    "Sign": _unary(torch.sign),
    "Softmax": _softmax(torch.softmax), "LogSoftmax": _softmax(torch.log_softmax),
    "Clip": _clip, "Cast": _cast,
    "Gemm": _gemm, "MatMul": _matmul, "Conv": _conv,
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_pool("avg"), "GlobalMaxPool": _global_pool("max"),
    "ReduceMean": _reduce_op(torch.mean, 18), "ReduceSum": _reduce_op(torch.sum, 13),
    "ReduceMax": _reduce_op(torch.amax, 18), "ReduceMin": _reduce_op(torch.amin, 18),
    "BatchNormalization": _batchnorm, "LayerNormalization": _layernorm, "InstanceNormalization": _instancenorm,
    "Shape": _shape, "Reshape": _reshape, "Flatten": _flatten, "Transpose": _transpose, "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze, "Concat": _concat, "Gather": _gather, "Slice": _slice, "Pad": _pad,
}
"""ONNX operator -> converter. ``Constant``, ``Identity`` and inference-mode ``Dropout`` are handled by the graph
walk itself (folded or wired through)."""

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted([*CONVERTERS, "Constant", "Identity", "Dropout"]))

