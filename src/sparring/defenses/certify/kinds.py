"""The operations bound propagation reads from a traced graph, by kind: the functions, methods, aten overloads and
module types of each (see :mod:`sparring.defenses.certify.graph`)."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KINDS", "MODULES", "SUPPORTED_LAYERS", "aten_ops", "kind_of"]

SUPPORTED_LAYERS = (
    "Linear / F.linear / x @ W", "Conv2d / F.conv2d (zero padding)", "ReLU / F.relu / torch.relu / Tensor.relu",
    "clamp / clip / ReLU6 / Hardtanh (constant limits) / LeakyReLU", "BatchNorm1d/2d (eval)",
    "AvgPool2d / AdaptiveAvgPool2d / F.avg_pool2d", "mean / sum over non-batch axes",
    "Flatten / flatten / view / reshape / squeeze / unsqueeze (per example)",
    "permute / transpose / flip / roll / expand / repeat / slicing and indexing with constants (non-batch axes)",
    "float() / to() / type_as() that keep the dtype and device", "Identity / Dropout (eval)",
    "x + y and x - y of two branches (residual connections)", "torch.cat of branches (non-batch axis)",
    "+ - * / with constants",
)

A = torch.ops.aten


def aten_ops(*names: str) -> set[Any]:
    """The aten overloads of these names that this torch version has."""
    out: set[Any] = set()
    for name in names:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(A, packet, None), overload, None)
        if op is not None:
            out.add(op)
    return out


KINDS: dict[str, set[Any]] = {
    "relu": {F.relu, torch.relu, torch.relu_, "relu", "relu_"} | aten_ops("relu.default", "relu_.default"),
    # piecewise linear, written with ReLUs: clamp(x, a, b) = a + relu(x - a) - relu(x - b), leaky = αx + (1-α)relu
    "clamp": {torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max, F.hardtanh, F.relu6, "clamp", "clip",
              "clamp_", "clip_", "clamp_min", "clamp_max"}
    | aten_ops("clamp.default", "clamp_min.default", "clamp_max.default", "hardtanh.default", "hardtanh_.default",
               "relu6.default", "clamp_.default", "clip.default", "clip_.default"),
    "leaky": {F.leaky_relu} | aten_ops("leaky_relu.default", "leaky_relu_.default"),
    "linear": {F.linear} | aten_ops("linear.default"),
    "matmul": {operator.matmul, torch.matmul, "matmul", "__matmul__"} | aten_ops("matmul.default", "mm.default"),
    "conv": {F.conv2d} | aten_ops("conv2d.default", "conv2d.padding", "convolution.default"),
    "bn": {F.batch_norm} | aten_ops("batch_norm.default", "_native_batch_norm_legit_no_training.default"),
    "pool": {F.avg_pool2d, F.adaptive_avg_pool2d} | aten_ops("avg_pool2d.default", "adaptive_avg_pool2d.default",
                                                          "_adaptive_avg_pool2d.default"),
    "reduce": {torch.mean, torch.sum, "mean", "sum"} | aten_ops("mean.dim", "sum.dim_IntList"),
    "reshape": {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, "view", "reshape", "flatten",
                "squeeze", "unsqueeze"} | aten_ops("view.default", "reshape.default", "_unsafe_view.default",
                                               "flatten.using_ints", "squeeze.dim", "squeeze.dims",
                                               "unsqueeze.default"),
    "identity": {torch.clone, "contiguous", "clone", "detach"} | aten_ops("clone.default", "alias.default",
                                                                     "detach.default"),
    "cast": {"float", "to", "type_as"} | aten_ops("to.dtype", "to.dtype_layout", "to.device", "_to_copy.default"),
    # each output element is one input element: an exact selection, whatever the indices
    "gather": {torch.permute, torch.transpose, torch.flip, torch.roll, torch.narrow, torch.select, torch.tile,
               "permute", "transpose", "flip", "roll", "narrow", "select", "expand", "repeat", "tile"}
    | aten_ops("permute.default", "transpose.int", "flip.default", "roll.default", "narrow.default", "select.int",
               "slice.Tensor", "index.Tensor", "index_select.default", "expand.default", "repeat.default"),
    "dropout": {F.dropout} | aten_ops("dropout.default"),
    "cat": {torch.cat, torch.concat, torch.concatenate} | aten_ops("cat.default", "concat.default"),
    # in-place variants too: what they do to a tensor that is used again is caught by the probe check
    "add": {operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__", "__iadd__"}
    | aten_ops("add.Tensor", "add.Scalar", "add_.Tensor", "add_.Scalar"),
    "sub": {operator.sub, operator.isub, torch.sub, "sub", "sub_", "__sub__", "__isub__"}
    | aten_ops("sub.Tensor", "sub.Scalar", "sub_.Tensor", "sub_.Scalar"),
    "rsub": {"__rsub__"} | aten_ops("rsub.Scalar", "rsub.Tensor"),
    "mul": {operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__", "__imul__"}
    | aten_ops("mul.Tensor", "mul.Scalar", "mul_.Tensor", "mul_.Scalar"),
    "div": {operator.truediv, operator.itruediv, torch.div, "div", "div_", "__truediv__", "__itruediv__"}
    | aten_ops("div.Tensor", "div.Scalar", "div_.Tensor", "div_.Scalar"),
    "neg": {operator.neg, torch.neg, "neg", "__neg__"} | aten_ops("neg.default"),
    "meta": {"size", "dim", getattr, operator.getitem} | aten_ops("sym_size.int", "_assert_tensor_metadata.default",
                                                               "_assert_scalar.default"),
}
MODULES: dict[type[nn.Module], str] = {
    nn.Linear: "linear", nn.Conv2d: "conv", nn.ReLU: "relu", nn.BatchNorm1d: "bn", nn.BatchNorm2d: "bn",
    nn.AvgPool2d: "pool", nn.AdaptiveAvgPool2d: "pool", nn.Flatten: "reshape", nn.Unflatten: "reshape",
    nn.Identity: "identity", nn.Dropout: "dropout", nn.ReLU6: "clamp", nn.Hardtanh: "clamp", nn.LeakyReLU: "leaky",
}


def kind_of(target: Any) -> str | None:
    for kind, members in KINDS.items():
        try:
            if target in members:
                return kind
        except TypeError:  # unhashable target
            return None
    return None
