"""The pieces every ONNX operator converter shares (:mod:`sparring.targets.onnx_ops`, :mod:`.onnx_shapes`).

A converter receives the node's attributes and what is known of each input at conversion time (a constant, a
runtime tensor, or a runtime *shape*: the Python list that ``Shape`` gives) and returns a module whose ``forward``
takes the node's runtime inputs in order. Constants are baked in as buffers, or as Python values where tracing must
see values (shapes, indices, axes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from sparring.errors import OnnxConversionError

__all__ = ["Call", "Converted", "Kind", "Node", "Value", "axis_of", "call", "same", "step"]

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
    ``literal`` (True, or the input positions) a Python number or list (for shapes, indices and axes, which tracing
    must see as values)."""

    def __init__(self, fn: Callable[..., Any], ins: list[Value | None], *,
                 literal: bool | frozenset[int] = False) -> None:
        super().__init__()
        self.fn = fn
        self._slots: list[tuple[str, Any]] = []
        for i, v in enumerate(ins):
            if v is None:
                self._slots.append(("value", None))
            elif v.kind == "const":
                assert v.const is not None
                if literal is True or (not isinstance(literal, bool) and i in literal):
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


def call(node: Node, fn: Callable[..., Any], kinds: list[Kind] | None = None) -> Converted:
    return Converted(Call(fn, node.ins), kinds or ["tensor"])


def step(node: Node, module: nn.Module) -> Converted:
    """A layer of its own taking the node's single runtime input (input 0); the other inputs were baked in."""
    if node.ins[0] is None or node.ins[0].kind != "tensor":
        raise node.fail("its data input is not a runtime tensor")
    return Converted(Call(module, [node.ins[0]]), ["tensor"])


def axis_of(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def same(x: Any) -> Any:
    return x
