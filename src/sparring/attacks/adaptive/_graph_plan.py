"""Graph BPDA, the plan: what a blocker is (:class:`GraphBlocker`), the graph's values as the probe inputs really
computed them (:class:`Meta`, :class:`Op`), and which outputs to make straight-through (:func:`plan_rewrites`: flat
float operations and discrete chains followed back to the float value they started from; Athalye, Carlini & Wagner
2018, section 4.1). Read from TorchScript by :mod:`._graph_script` and from FX by :mod:`._graph_fx`; used by
:mod:`.graph`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["FLAT", "GraphBlocker", "Meta", "Op", "Pos", "base_name", "meta_of", "plan_rewrites"]

logger = logging.getLogger("sparring.attacks.adaptive.graph")


FLAT = frozenset({"round", "floor", "ceil", "trunc", "fix", "sign", "sgn", "floor_divide", "floordiv"})
"""Float-to-float operations whose gradient is zero almost everywhere."""
_DECREASING = frozenset({"lt", "le"})  # a step that falls as its first operand grows
_INCREASING = frozenset({"gt", "ge"})

Pos = tuple[int, int]
"""A value in a graph: (node index, output index); node index -1 is the graph's inputs."""


@dataclass(frozen=True)
class GraphBlocker:
    """One non-differentiable step found in a graph and made straight-through."""

    module: str
    """Path of the TorchScript/FX module in ``target.model`` (``""``: the model itself)."""
    graph: Literal["torchscript", "fx"]
    ops: str
    """The operations, from the output back to the float value they start from, e.g. ``"to <- gt"``."""
    value: str
    """The graph's name of the output made straight-through."""
    end: Pos
    source: Pos
    sign: int

    def __str__(self) -> str:
        where = f"module {self.module!r}" if self.module else "forward"
        return f"{self.ops} ({self.value}, {self.graph} {where})"


@dataclass
class Meta:
    dtype: torch.dtype
    shape: tuple[int, ...]
    dep: bool  # depends on the model's input


@dataclass
class Op:
    name: str
    args: list[Pos | None]  # each argument's value position (None: not a graph value)
    out: Pos
    label: str


def base_name(raw: str) -> str:
    name = raw.split("::")[-1].split(".")[0]
    return name.strip("_")


def plan_rewrites(ops: Sequence[Op], meta: dict[Pos, Meta]) -> list[tuple[Pos, Pos, int, str, str]]:
    """(end, source, sign, ops, label) for every non-differentiable step whose output is a float of the input."""
    producer = {op.out: op for op in ops}

    def fl(p: Pos) -> bool:
        return meta[p].dtype.is_floating_point

    out = []
    for op in ops:
        o = meta.get(op.out)
        if o is None or not o.dtype.is_floating_point or not o.dep:
            continue
        dep_in = [a for a in op.args if a is not None and a in meta and meta[a].dep]
        if not dep_in:
            continue
        found: tuple[Pos, int, str] | None = None
        if op.name in FLAT and fl(dep_in[0]):
            found = (dep_in[0], 1, op.name)
        elif not any(fl(a) for a in dep_in):  # a float made only of discrete values: the gradient is cut
            chain, v = [op.name], dep_in[0]
            while v in producer:
                p = producer[v]
                chain.append(p.name)
                p_dep = [a for a in p.args if a is not None and a in meta and meta[a].dep]
                floats = [a for a in p_dep if fl(a)]
                if floats:
                    first = p.args.index(floats[0]) == 0
                    falls = (p.name in _DECREASING and first) or (p.name in _INCREASING and not first)
                    found = (floats[0], -1 if falls else 1, " <- ".join(chain))
                    break
                if not p_dep:
                    break
                v = p_dep[0]
        if found is None:
            continue
        src, sign, what = found
        try:
            fits = tuple(torch.broadcast_shapes(meta[src].shape, o.shape)) == o.shape  # type: ignore[no-untyped-call]
        except RuntimeError:
            fits = False
        if fits:
            out.append((op.out, src, sign, what, op.label))
        else:
            logger.debug("graph BPDA: %s at %s: source shape %s does not fit %s", what, op.label, meta[src].shape,
                         o.shape)
    return out


def meta_of(t: Any, dep: bool) -> Meta | None:
    if isinstance(t, torch.Tensor):
        return Meta(t.dtype, tuple(t.shape), dep)
    return None
