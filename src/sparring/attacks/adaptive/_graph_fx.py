"""Graph BPDA on FX / ``torch.export`` graphs: the operations of a copied ``GraphModule`` with the dtypes and shapes of
a probe run (:func:`fx_ops`), and a new ``GraphModule`` sharing the parameters in which the planned outputs are
straight-through (:func:`build_fx`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn

from sparring.attacks.adaptive._graph_plan import GraphBlocker, Meta, Op, Pos, base_name

__all__ = ["build_fx", "fx_ops"]


def _fx_copy(gm: fx.GraphModule) -> tuple[fx.GraphModule, list[fx.Node]]:
    g = fx.Graph(tracer_cls=gm.graph._tracer_cls)
    g._codegen = gm.graph._codegen
    env: dict[fx.Node, fx.Node] = {}
    out = g.graph_copy(gm.graph, env)
    g.output(out)
    new = fx.GraphModule(gm, g, class_name=type(gm).__name__)
    return new, [n for n in g.nodes if n.op != "output"]


def _fx_name(n: fx.Node) -> str | None:
    if n.op == "call_method":
        return base_name(str(n.target))
    if n.op != "call_function":
        return None
    t = n.target
    schema = getattr(t, "_schema", None)
    if schema is not None:
        return base_name(schema.name)
    return base_name(getattr(t, "__name__", str(t)))


def fx_ops(gm: fx.GraphModule, args: tuple[Any, ...]) -> tuple[list[Op], dict[Pos, Meta]]:
    from torch.fx.passes.shape_prop import ShapeProp

    work, nodes = _fx_copy(gm)
    with torch.no_grad():
        ShapeProp(work).propagate(*args)
    index = {n: i for i, n in enumerate(nodes)}
    dep: dict[fx.Node, bool] = {}
    ops: list[Op] = []
    meta: dict[Pos, Meta] = {}
    for n in nodes:
        dep[n] = n.op == "placeholder" or any(dep.get(a, False) for a in n.all_input_nodes)
        tm = n.meta.get("tensor_meta")
        if tm is not None and hasattr(tm, "dtype") and hasattr(tm, "shape"):
            meta[(index[n], 0)] = Meta(tm.dtype, tuple(tm.shape), dep[n])
        name = _fx_name(n)
        if name is not None:
            flat_args = [*n.args, *n.kwargs.values()]
            ops.append(Op(name, [(index[a], 0) if isinstance(a, fx.Node) else None for a in flat_args],
                           (index[n], 0), n.name))
    return ops, meta


def _not(node: fx.Node) -> Callable[[fx.Node], bool]:
    def keep(user: fx.Node) -> bool:
        return user is not node

    return keep


def build_fx(gm: fx.GraphModule, rewrites: Sequence[GraphBlocker]) -> nn.Module:
    new, nodes = _fx_copy(gm)
    g = new.graph
    for r in rewrites:
        end, src = nodes[r.end[0]], nodes[r.source[0]]
        with g.inserting_after(end):
            d_out = g.call_function(torch.Tensor.detach, (end,))
        with g.inserting_after(d_out):
            d_src = g.call_function(torch.Tensor.detach, (src,))
        with g.inserting_after(d_src):
            diff = g.call_function(torch.sub, (src, d_src) if r.sign > 0 else (d_src, src))
        with g.inserting_after(diff):
            res = g.call_function(torch.add, (d_out, diff))
        end.replace_all_uses_with(res, delete_user_cb=_not(d_out))
    g.lint()
    new.recompile()
    return new
