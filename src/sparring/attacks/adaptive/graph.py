"""BPDA from the graph itself (Athalye, Carlini, Wagner 2018, section 4.1), for models whose non-differentiable step is
an operation inside ``forward`` rather than a sub-module: TorchScript (scripted or traced) and FX / ``torch.export``.

The operations whose gradient is zero or undefined are found in the computation graph, with the dtypes and shapes
the graph really computes on probe inputs:

* *flat* operations on floats: ``round``, ``floor``, ``ceil``, ``trunc``, ``sign``, ``floor_divide``;
* *discrete chains*: a float value computed only from integer, boolean or quantised values that depend on the input,
  e.g. ``(x > t).float()``, ``x.long().float()``, ``dequantize(quantize_per_tensor(x))``,
  ``one_hot(argmax(z)).float()``, ``where(x > t, 1.0, 0.0)``; the chain is followed back to the float value it
  started from.

A copy of the model is then attacked in which each such output ``out`` becomes
``out.detach() + (s - s.detach())`` with ``s`` the float value the step started from (negated for ``<``/``<=``):
exactly ``out`` in value, the identity (straight-through) in gradient. The user's model is never altered: TorchScript
graphs are copied (``inlined_graph``) and run as a new function on the same module object; FX graphs are copied into
a new ``GraphModule`` sharing the parameters. Before a copy is used its outputs are compared with the original's on
the probe inputs and must be bit-identical; a rewrite that changes them is dropped.

Limits (documented fallback): operations inside TorchScript control flow (``prim::If``/``prim::Loop`` blocks) and
inside FX leaf modules are not rewritten, and nor is a non-differentiable step in plain Python code that neither
TorchScript nor FX represents (e.g. a numpy round trip in an ordinary module: module BPDA handles that). Where no
graph can be rewritten, the audit's retry relies on the gradient-free attacks (SPSA, NES, Square).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import fx, nn

from sparring.attacks.adaptive._common import PROBE_POINTS, check_target, probe, uniform_points
from sparring.errors import ParameterError
from sparring.targets.spec import Access
from sparring.targets.torch import Forward, TorchTarget

__all__ = ["GraphBlocker", "find_graph_blockers", "with_graph_bpda"]

logger = logging.getLogger(__name__)

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
class _Meta:
    dtype: torch.dtype
    shape: tuple[int, ...]
    dep: bool  # depends on the model's input


@dataclass
class _Op:
    name: str
    args: list[Pos | None]  # each argument's value position (None: not a graph value)
    out: Pos
    label: str


# ---------------------------------------------------------------------------------------------- planning
def _base_name(raw: str) -> str:
    name = raw.split("::")[-1].split(".")[0]
    return name.strip("_")


def _plan(ops: Sequence[_Op], meta: dict[Pos, _Meta]) -> list[tuple[Pos, Pos, int, str, str]]:
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


def _meta_of(t: Any, dep: bool) -> _Meta | None:
    if isinstance(t, torch.Tensor):
        return _Meta(t.dtype, tuple(t.shape), dep)
    return None


# ---------------------------------------------------------------------------------------------- TorchScript
def _script_ops(mod: torch.jit.ScriptModule, args: tuple[Any, ...]) -> tuple[list[_Op], dict[Pos, _Meta]]:
    """The top-level operations of ``mod``'s inlined forward graph, with the dtypes/shapes seen on ``args``."""
    g = mod.inlined_graph
    pos: dict[int, Pos] = {v.unique(): (-1, k) for k, v in enumerate(g.inputs())}
    dep: dict[int, bool] = {v.unique(): k > 0 for k, v in enumerate(g.inputs())}  # input 0 is self
    ops: list[_Op] = []
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
            ops.append(_Op(_base_name(n.kind()), [pos.get(v.unique()) for v in ins], (i, 0),
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
    meta: dict[Pos, _Meta] = {}
    for k, a in enumerate(args):
        m = _meta_of(a, True)
        if m is not None:
            meta[(-1, k + 1)] = m
    for (p, o), val in zip(record, values, strict=True):
        m = _meta_of(val, dep[o.unique()])
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


def _build_script(mod: torch.jit.ScriptModule, rewrites: Sequence[GraphBlocker]) -> nn.Module:
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


# ---------------------------------------------------------------------------------------------- FX / torch.export
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
        return _base_name(str(n.target))
    if n.op != "call_function":
        return None
    t = n.target
    schema = getattr(t, "_schema", None)
    if schema is not None:
        return _base_name(schema.name)
    return _base_name(getattr(t, "__name__", str(t)))


def _fx_ops(gm: fx.GraphModule, args: tuple[Any, ...]) -> tuple[list[_Op], dict[Pos, _Meta]]:
    from torch.fx.passes.shape_prop import ShapeProp

    work, nodes = _fx_copy(gm)
    with torch.no_grad():
        ShapeProp(work).propagate(*args)
    index = {n: i for i, n in enumerate(nodes)}
    dep: dict[fx.Node, bool] = {}
    ops: list[_Op] = []
    meta: dict[Pos, _Meta] = {}
    for n in nodes:
        dep[n] = n.op == "placeholder" or any(dep.get(a, False) for a in n.all_input_nodes)
        tm = n.meta.get("tensor_meta")
        if tm is not None and hasattr(tm, "dtype") and hasattr(tm, "shape"):
            meta[(index[n], 0)] = _Meta(tm.dtype, tuple(tm.shape), dep[n])
        name = _fx_name(n)
        if name is not None:
            flat_args = [*n.args, *n.kwargs.values()]
            ops.append(_Op(name, [(index[a], 0) if isinstance(a, fx.Node) else None for a in flat_args],
                           (index[n], 0), n.name))
    return ops, meta


def _not(node: fx.Node) -> Callable[[fx.Node], bool]:
    def keep(user: fx.Node) -> bool:
        return user is not node

    return keep


def _build_fx(gm: fx.GraphModule, rewrites: Sequence[GraphBlocker]) -> nn.Module:
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


# ---------------------------------------------------------------------------------------------- the model copy
def _graph_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost TorchScript modules and FX GraphModules in ``model`` (the model itself included)."""
    out: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p, _ in out if p) or (out and out[0][0] == ""):
            continue
        if isinstance(m, (torch.jit.ScriptModule, fx.GraphModule)):
            out.append((name, m))
    return out


def _replace(root: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """A shallow copy of ``root`` (and of the modules on ``path``) with the module at ``path`` replaced by ``new``;
    every other module and parameter is shared, and ``root`` itself is unchanged."""
    if not path:
        return new
    head, _, rest = path.partition(".")
    clone = copy.copy(root)
    clone._modules = dict(root._modules)
    child = root._modules[head]
    assert child is not None
    clone._modules[head] = _replace(child, rest, new)
    return clone


class _Recorder(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.args: tuple[Any, ...] | None = None

    def forward(self, *args: Any) -> Any:
        if self.args is None:
            self.args = tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)
        return self.inner(*args)


def _forward(t: TorchTarget, model: nn.Module) -> Forward:
    norm = t.spec.norm_tensors(t.device, t.dtype)
    if norm is None:
        return model
    mean, std = norm
    inv_std = 1.0 / std  # as TorchTarget normalises, so values match the base bit for bit
    return lambda x: model((x - mean) * inv_std)


def _inputs_of(t: TorchTarget, model: nn.Module, path: str, x: torch.Tensor) -> tuple[Any, ...] | None:
    rec = _Recorder(dict(model.named_modules())[path]) if path else None
    copy_ = _replace(model, path, rec) if rec is not None else model
    if rec is None:
        norm = t.spec.norm_tensors(t.device, t.dtype)
        return (x if norm is None else (x - norm[0]) * (1.0 / norm[1]),)
    with torch.no_grad():
        _forward(t, copy_)(x)
    return rec.args


def _analyse(t: TorchTarget, x: torch.Tensor) -> list[tuple[str, nn.Module, list[GraphBlocker]]]:
    found = []
    for path, mod in _graph_modules(t.model):
        args = _inputs_of(t, t.model, path, x)
        if args is None:
            continue
        kind: Literal["torchscript", "fx"] = "torchscript" if isinstance(mod, torch.jit.ScriptModule) else "fx"
        try:
            ops, meta = _script_ops(mod, args) if kind == "torchscript" else _fx_ops(mod, args)  # type: ignore[arg-type]
        except Exception as exc:  # a graph we cannot read is a graph we cannot rewrite: fall back, never crash
            logger.info("graph BPDA: cannot analyse %s (%s: %s)", path or "the model", type(exc).__name__, exc)
            continue
        blockers = [GraphBlocker(path, kind, what, label, end, src, sign)
                    for end, src, sign, what, label in _plan(ops, meta)]
        if blockers:
            found.append((path, mod, blockers))
    return found


def _build(t: TorchTarget, parts: Sequence[tuple[str, nn.Module, Sequence[GraphBlocker]]]) -> nn.Module:
    model = t.model
    for path, mod, blockers in parts:
        new = (_build_script(mod, blockers) if isinstance(mod, torch.jit.ScriptModule)  # type: ignore[arg-type]
               else _build_fx(mod, blockers))  # type: ignore[arg-type]
        model = _replace(model, path, new)
    return model


def _same_outputs(t: TorchTarget, model: nn.Module, x: torch.Tensor, want: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            torch.manual_seed(0)
            got = _forward(t, model)(x)
    except Exception as exc:
        logger.info("graph BPDA: the rewritten copy fails on the probe (%s: %s)", type(exc).__name__, exc)
        return False
    return isinstance(got, torch.Tensor) and got.shape == want.shape and bool(torch.equal(got, want))


def _verified(t: TorchTarget, x: torch.Tensor) -> tuple[nn.Module | None, list[GraphBlocker]]:
    """The rewritten copy and its blockers, every rewrite checked to leave the outputs on ``x`` bit-identical.

    Runs under a forked global RNG (the caller's state is left as it was), reseeded before every comparison, so
    a model that draws noise from the global generator is compared on the same draws."""
    with torch.random.fork_rng(devices=[t.device] if t.device.type == "cuda" else []):
        return _verified_here(t, x)


def _verified_here(t: TorchTarget, x: torch.Tensor) -> tuple[nn.Module | None, list[GraphBlocker]]:
    parts = _analyse(t, x)
    if not parts:
        return None, []
    with torch.no_grad():
        torch.manual_seed(0)
        want = _forward(t, t.model)(x)
    try:
        model = _build(t, parts)
        ok = _same_outputs(t, model, x, want)
    except Exception as exc:
        logger.info("graph BPDA: rewriting all at once failed (%s: %s)", type(exc).__name__, exc)
        ok = False
    if ok:
        return model, [b for _, _, bs in parts for b in bs]
    kept: list[tuple[str, nn.Module, list[GraphBlocker]]] = []  # one at a time: keep those that verify
    for path, mod, blockers in parts:
        good: list[GraphBlocker] = []
        for b in blockers:
            try:
                if _same_outputs(t, _build(t, [*kept, (path, mod, [*good, b])]), x, want):
                    good.append(b)
            except Exception as exc:
                logger.info("graph BPDA: dropping %s (%s)", b, exc)
        if good:
            kept.append((path, mod, good))
    if not kept:
        return None, []
    return _build(t, kept), [b for _, _, bs in kept for b in bs]


# ---------------------------------------------------------------------------------------------- the target
class _GraphBPDATarget(TorchTarget):
    """A target whose differentiable forward runs a rewritten (straight-through) copy of the model."""

    def __init__(self, base: TorchTarget, copy_: nn.Module, blockers: list[GraphBlocker],
                 rewritten: list[nn.Module]) -> None:
        self._base = base
        self.blockers = blockers
        self.rewritten_modules = rewritten
        self._copy = copy_
        super().__init__(
            base.model, base.spec, access=base.access, output=base.output, batch_size=base.batch_size,
            top_k=base.top_k, decimals=base.decimals,
        )
        self.counter = base.counter

    def _raw_forward(self) -> Forward:
        return self._base._raw_forward()  # forward values are the base's, untouched

    def differentiable(self, attack: str = "this attack") -> Forward:
        self.require(Access.GRADIENTS, attack)
        fwd, charge = _forward(self, self._copy), self.counter.charge

        def counted(x: torch.Tensor) -> torch.Tensor:
            charge(x.shape[0])
            return fwd(x)

        return counted

    @contextmanager
    def frozen(self) -> Iterator[TorchTarget]:
        with self._base.frozen():
            yield self

    def describe(self) -> dict[str, Any]:
        d = self._base.describe()
        d["adaptive"] = [*d.get("adaptive", []), "bpda-graph: " + ", ".join(map(str, self.blockers))]
        return d


def find_graph_blockers(target: TorchTarget, x: torch.Tensor | np.ndarray) -> list[GraphBlocker]:
    """The non-differentiable operations inside the TorchScript / FX graphs of ``target.model`` that a
    straight-through rewrite handles with bit-identical outputs on ``x`` (see the module docstring).

    Costs no counted queries (the probes run the model directly, like :func:`find_gradient_blockers`'s local runs).

    Example:
        >>> import torch
        >>> from sparring.attacks.adaptive import find_graph_blockers
        >>> from sparring.targets import InputSpec, TorchTarget
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x):
        ...         return torch.round(x * 7) / 7 @ torch.ones(4, 3)
        >>> t = TorchTarget(torch.jit.trace(Net(), torch.rand(2, 4)), InputSpec(shape=(4,), n_classes=3,
        ...                 layout="features"))
        >>> [b.ops for b in find_graph_blockers(t, torch.rand(8, 4))]
        ['round']
    """
    t = check_target(target, "find_graph_blockers")
    t.require(Access.GRADIENTS, "find_graph_blockers")
    return _verified(t, probe(t, x))[1]


def graph_bpda(t: TorchTarget, x: torch.Tensor) -> tuple[TorchTarget | None, list[GraphBlocker]]:
    """The graph-BPDA wrapper of ``t`` (None when no graph has a non-differentiable step) and what it rewrote."""
    model, blockers = _verified(t, x)
    if model is None:
        return None, []
    rewritten = [m for p, m in _graph_modules(t.model) if any(b.module == p for b in blockers)]
    return _GraphBPDATarget(t, model, blockers, rewritten), blockers


def with_graph_bpda(target: TorchTarget, *, x: torch.Tensor | np.ndarray | None = None) -> TorchTarget:
    """BPDA through the non-differentiable operations of a TorchScript or FX / ``torch.export`` model (Athalye,
    Carlini, Wagner 2018, "Obfuscated Gradients Give a False Sense of Security", section 4.1, straight-through).

    Threat model: white-box, for a model whose ``forward`` itself quantises, rounds, thresholds or casts to integers
    (no sub-module to hook). The forward pass and every query are exactly the model's; only
    ``target.differentiable`` runs the rewritten copy, whose outputs were checked bit-identical on the probe inputs.
    Shares the original target's query counter, budget and ``frozen()``.

    Args:
        target: the white-box target (its model a ScriptModule, a GraphModule, or containing them).
        x: probe inputs (a few dozen real examples; default 16 uniform random points in the bounds).

    Raises:
        ParameterError: when no graph in the model has a step the rewrite can handle.

    Example:
        >>> import torch
        >>> from sparring.attacks.adaptive import with_graph_bpda
        >>> from sparring.targets import InputSpec, TorchTarget
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x):
        ...         return (x > 0.5).float() @ torch.ones(4, 3)
        >>> spec = InputSpec(shape=(4,), n_classes=3, layout="features")
        >>> t = with_graph_bpda(TorchTarget(torch.jit.script(Net()), spec))
        >>> bool(t.loss_gradient(torch.rand(2, 4), torch.tensor([0, 1])).abs().sum() > 0)
        True
    """
    t = check_target(target, "with_graph_bpda")
    t.require(Access.GRADIENTS, "with_graph_bpda")
    xt = probe(t, x) if x is not None else uniform_points(t, PROBE_POINTS)
    wrapped, _ = graph_bpda(t, xt)
    if wrapped is None:
        kinds = [type(m).__name__ for _, m in _graph_modules(t.model)]
        raise ParameterError(
            "with_graph_bpda found no non-differentiable operation to rewrite in "
            + (f"the graphs of {', '.join(kinds)}" if kinds else "the model (it holds no TorchScript or FX graph)")
            + ". Use with_bpda(target) for sub-modules, or a gradient-free attack (SPSA, NES, Square)."
        )
    return wrapped
