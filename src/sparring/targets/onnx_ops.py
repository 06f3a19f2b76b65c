"""ONNX operators as torch modules: one converter per operator, for :mod:`sparring.targets.onnx_torch`.

Each converter (:mod:`sparring.targets.onnx_node` says what one receives and returns) bakes the node's constants in
(weights become the parameters of real
``nn.Conv2d``/``nn.Linear``/``nn.BatchNorm2d`` layers, other constants buffers), so the converted model is plain
torch that autograd, ``torch.fx`` and ``torch.export`` follow. Semantics follow the ONNX operator specification
(https://onnx.ai/onnx/operators/), including the opset-dependent ones (attributes that became inputs at opset 10,
11, 13 and 18; ``Softmax``'s 2-D coercion before opset 13).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparring.targets.onnx_node import Call, Converted, Node, Value, axis_of, call, same, step
from sparring.targets.onnx_shapes import SHAPE_CONVERTERS, Pad, torch_pad

__all__ = ["CONVERTERS", "SUPPORTED_OPS", "Converted", "Node", "Value"]


# ---------------------------------------------------------------------------------------------- elementwise
def _binary(fn: Callable[[Any, Any], Any]) -> Callable[[Node], Converted]:
    def convert(node: Node) -> Converted:
        if any(v is not None and v.kind == "shape" for v in node.ins):
            raise node.fail("arithmetic on a tensor shape is not supported")
        if len(node.ins) == 2:
            return call(node, fn)
        return call(node, functools.partial(_reduce_args, fn))

    return convert


def _reduce_args(fn: Callable[[Any, Any], Any], *xs: Any) -> Any:
    return functools.reduce(fn, xs)


def _mean_args(*xs: Any) -> Any:
    return functools.reduce(operator.add, xs) / len(xs)


def _unary(fn: Callable[[Any], Any]) -> Callable[[Node], Converted]:
    return lambda node: call(node, fn)


def _layer(make: Callable[[Node], nn.Module]) -> Callable[[Node], Converted]:
    return lambda node: step(node, make(node))


def _hard_sigmoid(alpha: float, beta: float, x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


def _softmax_2d(fn: Callable[..., torch.Tensor], axis: int, x: torch.Tensor) -> torch.Tensor:
    """Softmax before opset 13: the input coerced to 2-D at ``axis``, normalised over the flattened tail."""
    return fn(torch.flatten(x, axis), -1).reshape(x.shape)


def _softmax(fn: Callable[..., torch.Tensor]) -> Callable[[Node], Converted]:
    def convert(node: Node) -> Converted:
        if node.opset >= 13:
            return call(node, functools.partial(fn, dim=int(node.attrs.get("axis", -1))))
        rank = node.rank()
        axis = axis_of(int(node.attrs.get("axis", 1)), rank)
        if axis == rank - 1:
            return call(node, functools.partial(fn, dim=axis))
        return call(node, functools.partial(_softmax_2d, fn, axis))

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
        return Converted(Call(same, node.ins[:1]), ["shape"])
    to = int(node.attrs["to"])
    if to not in DTYPES:
        raise node.fail(f"casting to ONNX data type {to} is not supported")
    return call(node, functools.partial(_to, DTYPES[to]))


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
        layer = nn.Linear(w.shape[0], w.shape[1], bias=c is not None, dtype=w.dtype)
        with torch.no_grad():
            layer.weight.copy_(w.t() * alpha)
            if c is not None and c.const is not None:
                layer.bias.copy_(torch.broadcast_to(c.const.reshape(-1) * beta, (w.shape[1],)))
        return step(node, layer)
    fn = functools.partial(_gemm_fn, alpha, beta, trans_a, trans_b)
    return Converted(Call(fn, [*node.ins, None, None][:3]), ["tensor"])


def _matmul(node: Node) -> Converted:
    b = node.input(1)
    a = node.input(0)
    if (b is not None and b.kind == "const" and b.const is not None and b.const.dim() == 2
            and a is not None and a.kind == "tensor"):
        layer = nn.Linear(b.const.shape[0], b.const.shape[1], bias=False, dtype=b.const.dtype)
        with torch.no_grad():
            layer.weight.copy_(b.const.t())
        return step(node, layer)
    return call(node, torch.matmul)


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
                bias=bias is not None, dtype=w.dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(bias)
    if symmetric:
        return step(node, layer)
    return step(node, nn.Sequential(Pad(torch_pad(pads), 0.0), layer))


def _conv_transpose(node: Node) -> Converted:
    w = node.const(1, "weight")
    assert w is not None
    bias = node.const(2, "bias")
    n = w.dim() - 2
    if n not in (1, 2, 3) or node.attrs.get("auto_pad", "NOTSET") != "NOTSET" or "output_shape" in node.attrs:
        raise node.fail("only 1-3-D ConvTranspose with explicit pads (no auto_pad, no output_shape) is supported")
    pads = [int(p) for p in node.attrs.get("pads", [0] * (2 * n))]
    if pads[:n] != pads[n:]:
        raise node.fail(f"asymmetric pads {pads} are not supported in ConvTranspose")
    group = int(node.attrs.get("group", 1))
    cls: Any = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[n - 1]
    layer = cls(w.shape[0], w.shape[1] * group, tuple(w.shape[2:]),
                stride=tuple(int(v) for v in node.attrs.get("strides", [1] * n)), padding=tuple(pads[:n]),
                output_padding=tuple(int(v) for v in node.attrs.get("output_padding", [0] * n)), groups=group,
                bias=bias is not None, dilation=tuple(int(v) for v in node.attrs.get("dilations", [1] * n)),
                dtype=w.dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(bias)
    return step(node, layer)


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
            return step(node, cls(kernel, strides, pads[:n], dilation=dilations, ceil_mode=ceil))
        if any(d != 1 for d in dilations):
            raise node.fail("dilated average pooling is not supported")
        cls = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[n - 1]
        include = bool(node.attrs.get("count_include_pad", 0))
        return step(node, cls(kernel, strides, pads[:n], ceil_mode=ceil, count_include_pad=include))

    return convert


def _global_pool(kind: str) -> Callable[[Node], Converted]:
    def convert(node: Node) -> Converted:
        rank = node.rank()
        if kind == "avg" and rank == 4:
            return step(node, nn.AdaptiveAvgPool2d(1))
        fn = torch.mean if kind == "avg" else torch.amax
        return call(node, functools.partial(_reduce, fn, list(range(2, rank)), True))

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
            return Converted(Call(same, node.ins[:1]), ["tensor"])
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
    layer = cls(scale.numel(), eps=eps, dtype=scale.dtype).eval()
    with torch.no_grad():
        layer.weight.copy_(scale)
        layer.bias.copy_(bias)
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)
    return step(node, layer)


def _layernorm(node: Node) -> Converted:
    scale, bias = node.const(1, "scale"), node.const(2, "bias")
    assert scale is not None
    rank = node.rank()
    axis = axis_of(int(node.attrs.get("axis", -1)), rank)
    if node.n_out > 1:
        raise node.fail("the Mean/InvStdDev outputs of LayerNormalization are not supported")
    if scale.dim() != rank - axis:
        raise node.fail(f"scale of shape {tuple(scale.shape)} does not cover the normalised axes {axis}..{rank - 1}")
    layer = nn.LayerNorm(tuple(scale.shape), eps=float(node.attrs.get("epsilon", 1e-5)), bias=bias is not None,
                         dtype=scale.dtype)
    with torch.no_grad():
        layer.weight.copy_(scale)
        if bias is not None:
            layer.bias.copy_(torch.broadcast_to(bias, scale.shape))
    return step(node, layer)


def _instancenorm(node: Node) -> Converted:
    eps = float(node.attrs.get("epsilon", 1e-5))
    return call(node, functools.partial(_instance_norm, eps))


def _instance_norm(eps: float, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.instance_norm(x, weight=scale, bias=bias, eps=eps)


def _hard_swish_make(node: Node) -> nn.Module:
    return nn.Hardswish()


CONVERTERS: dict[str, Callable[[Node], Converted]] = {
    "Add": _binary(operator.add), "Sub": _binary(operator.sub), "Mul": _binary(operator.mul),
    "Div": _binary(operator.truediv), "Pow": _binary(torch.pow), "Max": _binary(torch.maximum),
    "Min": _binary(torch.minimum), "Sum": _binary(operator.add),
    "Mean": lambda node: call(node, _mean_args),
    "Relu": _layer(lambda n: nn.ReLU()), "Sigmoid": _layer(lambda n: nn.Sigmoid()), "Tanh": _layer(lambda n: nn.Tanh()),
    "LeakyRelu": _layer(lambda n: nn.LeakyReLU(float(n.attrs.get("alpha", 0.01)))),
    "Elu": _layer(lambda n: nn.ELU(float(n.attrs.get("alpha", 1.0)))), "Selu": _layer(lambda n: nn.SELU()),
    "Softplus": _layer(lambda n: nn.Softplus()), "Softsign": _layer(lambda n: nn.Softsign()),
    "HardSwish": _layer(_hard_swish_make),
    "Gelu": _layer(lambda n: nn.GELU(approximate=n.attrs.get("approximate", "none"))),
    "HardSigmoid": lambda n: call(n, functools.partial(_hard_sigmoid, float(n.attrs.get("alpha", 0.2)),
                                                         float(n.attrs.get("beta", 0.5)))),
    "Exp": _unary(torch.exp), "Log": _unary(torch.log), "Sqrt": _unary(torch.sqrt), "Abs": _unary(torch.abs),
    "Neg": _unary(operator.neg), "Reciprocal": _unary(torch.reciprocal), "Erf": _unary(torch.erf),
    "Floor": _unary(torch.floor), "Ceil": _unary(torch.ceil), "Round": _unary(torch.round),
    "Sign": _unary(torch.sign), "Not": _unary(torch.logical_not),
    "Equal": _binary(torch.eq), "Less": _binary(torch.lt), "Greater": _binary(torch.gt),
    "LessOrEqual": _binary(torch.le), "GreaterOrEqual": _binary(torch.ge), "And": _binary(torch.logical_and),
    "Or": _binary(torch.logical_or), "Where": lambda node: call(node, torch.where),
    "Softmax": _softmax(torch.softmax), "LogSoftmax": _softmax(torch.log_softmax),
    "Clip": _clip, "Cast": _cast,
    "Gemm": _gemm, "MatMul": _matmul, "Conv": _conv, "ConvTranspose": _conv_transpose,
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_pool("avg"), "GlobalMaxPool": _global_pool("max"),
    "ReduceMean": _reduce_op(torch.mean, 18), "ReduceSum": _reduce_op(torch.sum, 13),
    "ReduceMax": _reduce_op(torch.amax, 18), "ReduceMin": _reduce_op(torch.amin, 18),
    "BatchNormalization": _batchnorm, "LayerNormalization": _layernorm, "InstanceNormalization": _instancenorm,
    **SHAPE_CONVERTERS,
}
"""ONNX operator -> converter. ``Constant``, ``Identity`` and inference-mode ``Dropout`` are handled by the graph
walk itself (folded or wired through)."""

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted([*CONVERTERS, "Constant", "Identity", "Dropout"]))

