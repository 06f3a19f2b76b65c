"""Graph BPDA on TorchScript (scripted or traced modules): the operations of the inlined graph with the dtypes and
shapes of a probe run (:func:`script_ops`), and a copy of the graph in which the planned outputs are straight-through,
run as a new function on the same module object (:func:`build_script`; the user's module is not altered).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sparring.attacks.adaptive._graph_plan import GraphBlocker, Meta, Op, Pos, base_name, meta_of

__all__ = ["build_script", "script_ops"]


def script_ops(mod: torch.jit.ScriptModule, args: tuple[Any, ...]) -> tuple[list[Op], dict[Pos, Meta]]:
    """The top-level operations of ``mod``'s inlined forward graph, with the dtypes/shapes seen on ``args``."""
    g = mod.inlined_graph
    pos: dict[int, Pos] = {v.unique(): (-1, k) for k, v in enumerate(g.inputs())}
    dep: dict[int, bool] = {v.unique(): k > 0 for k, v in enumerate(g.inputs())}  # input 0 is self
    ops: list[Op] = []
    record: list[tuple[Pos, Any]] = []
    for i, n in enumerate(g.nodes()):
        ins = list(n.inputs())
        d = any(dep.get(v.unique(), False) for v in ins) or bool(list(n.blocks()))
        for k, o in enumerate(n.outputs()):
            pos[o.unique()] = (i, k)
            dep[o.unique()] = d
            if o.type().kind() == "TensorType" and n.kind() not in ("prim::Constant", "prim::GetAttr"):
                record.append(((i, k), o))
        if n.outputsSize() == 1 and n.kind().startswith("aten::"):
            ops.append(Op(base_name(n.kind()), [pos.get(v.unique()) for v in ins], (i, 0),
                           n.output().debugName()))
    # One tuple output holding every recorded value (a function from a graph must have exactly one output).
    packed = g.create("prim::TupleConstruct", [o for _, o in record], 1)
    g.appendNode(packed)  # type: ignore[attr-defined]
    packed.output().setType(torch._C.TupleType([o.type() for _, o in record]))
    while len(list(g.outputs())):
        g.eraseOutput(0)  # type: ignore[attr-defined]
    g.registerOutput(packed.output())
    fn = torch._C._create_function_from_graph("sparring_probe", g)
    with torch.no_grad():
        values = list(fn(mod._c, *args))
    meta: dict[Pos, Meta] = {}
    for k, a in enumerate(args):
        m = meta_of(a, True)
        if m is not None:
            meta[(-1, k + 1)] = m
    for (p, o), val in zip(record, values, strict=True):
        m = meta_of(val, dep[o.unique()])
        if m is not None:
            meta[p] = m
    return ops, meta


class _ScriptBPDA(nn.Module):
    """Runs a rewritten copy of a TorchScript module's forward graph on the module itself."""

    def __init__(self, script: torch.jit.ScriptModule, fn: Any) -> None:
        super().__init__()
        self.script = script
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(self.script._c, *args)


def build_script(mod: torch.jit.ScriptModule, rewrites: Sequence[GraphBlocker]) -> nn.Module:
    g = mod.inlined_graph
    nodes = list(g.nodes())
    inputs = list(g.inputs())

    def value(p: Pos) -> Any:
        return inputs[p[1]] if p[0] < 0 else list(nodes[p[0]].outputs())[p[1]]

    tensor = torch._C.TensorType.get()
    for r in rewrites:
        end, src = value(r.end), value(r.source)
        one = g.insertConstant(1)  # type: ignore[attr-defined]
        one.node().moveAfter(end.node())
        d_out = g.create("aten::detach", [end], 1)
        d_out.insertAfter(one.node())
        d_src = g.create("aten::detach", [src], 1)
        d_src.insertAfter(d_out)
        sub_args = [src, d_src.output(), one] if r.sign > 0 else [d_src.output(), src, one]
        diff = g.create("aten::sub", sub_args, 1)
        diff.insertAfter(d_src)
        res = g.create("aten::add", [d_out.output(), diff.output(), one], 1)
        res.insertAfter(diff)
        for k in (d_out, d_src, diff, res):
            k.output().setType(tensor)
        end.replaceAllUsesAfterNodeWith(res, res.output())
    g.lint()
    return _ScriptBPDA(mod, torch._C._create_function_from_graph("sparring_bpda_forward", g))
