"""Read the computation a model really performs, in execution order, as the ops bound propagation understands.

The model is traced (``torch.fx`` symbolic tracing; ``torch.export`` when Python control flow stops that), so every
call is seen where it happens: a module object used twice is two operations, functional calls in ``forward``
(``F.relu``, ``torch.flatten``, ``x.view``, ``+``) are operations, and residual connections are the additions they
are. A ``torch.export`` program (or its module) already is such a graph; a TorchScript module is converted to one
with torch's TorchScript-to-export converter. Anything not understood is refused with a
:class:`~sparring.errors.ModelGraphError` naming the operation and its position in the graph.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from sparring.defenses.certify import ops as O
from sparring.errors import ModelGraphError

__all__ = ["SUPPORTED_LAYERS", "parse"]

SUPPORTED_LAYERS = (
    "Linear / F.linear / x @ W", "Conv2d / F.conv2d (zero padding)", "ReLU / F.relu / torch.relu / Tensor.relu",
    "BatchNorm1d/2d (eval)", "AvgPool2d / AdaptiveAvgPool2d / F.avg_pool2d", "mean / sum over non-batch axes",
    "Flatten / flatten / view / reshape / squeeze / unsqueeze (per example)",
    "permute / transpose / flip / roll / slicing and indexing with constants (non-batch axes)",
    "float() / to() / type_as() that keep the dtype and device", "Identity / Dropout (eval)",
    "x + y and x - y of two branches (residual connections)", "torch.cat of branches (non-batch axis)",
    "+ - * / with constants",
)

Tensor = torch.Tensor
A = torch.ops.aten


def _ops(*names: str) -> set[Any]:
    """The aten overloads of these names that this torch version has."""
    out: set[Any] = set()
    for name in names:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(A, packet, None), overload, None)
        if op is not None:
            out.add(op)
    return out


KINDS: dict[str, set[Any]] = {
    "relu": {F.relu, torch.relu, torch.relu_, "relu", "relu_"} | _ops("relu.default", "relu_.default"),
    "linear": {F.linear} | _ops("linear.default"),
    "matmul": {operator.matmul, torch.matmul, "matmul", "__matmul__"} | _ops("matmul.default", "mm.default"),
    "conv": {F.conv2d} | _ops("conv2d.default", "conv2d.padding", "convolution.default"),
    "bn": {F.batch_norm} | _ops("batch_norm.default", "_native_batch_norm_legit_no_training.default"),
    "pool": {F.avg_pool2d, F.adaptive_avg_pool2d} | _ops("avg_pool2d.default", "adaptive_avg_pool2d.default",
                                                          "_adaptive_avg_pool2d.default"),
    "reduce": {torch.mean, torch.sum, "mean", "sum"} | _ops("mean.dim", "sum.dim_IntList"),
    "reshape": {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, "view", "reshape", "flatten",
                "squeeze", "unsqueeze"} | _ops("view.default", "reshape.default", "_unsafe_view.default",
                                               "flatten.using_ints", "squeeze.dim", "squeeze.dims",
                                               "unsqueeze.default"),
    "identity": {torch.clone, "contiguous", "clone", "detach"} | _ops("clone.default", "alias.default",
                                                                     "detach.default"),
    "cast": {"float", "to", "type_as"} | _ops("to.dtype", "to.dtype_layout", "to.device", "_to_copy.default"),
    # each output element is one input element: an exact selection, whatever the indices
    "gather": {torch.permute, torch.transpose, torch.flip, torch.roll, torch.narrow, torch.select, "permute",
               "transpose", "flip", "roll", "narrow", "select"}
    | _ops("permute.default", "transpose.int", "flip.default", "roll.default", "narrow.default", "select.int",
           "slice.Tensor", "index.Tensor", "index_select.default"),
    "dropout": {F.dropout} | _ops("dropout.default"),
    "cat": {torch.cat, torch.concat, torch.concatenate} | _ops("cat.default", "concat.default"),
    # in-place variants too: what they do to a tensor that is used again is caught by the probe check
    "add": {operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__", "__iadd__"}
    | _ops("add.Tensor", "add.Scalar", "add_.Tensor", "add_.Scalar"),
    "sub": {operator.sub, operator.isub, torch.sub, "sub", "sub_", "__sub__", "__isub__"}
    | _ops("sub.Tensor", "sub.Scalar", "sub_.Tensor", "sub_.Scalar"),
    "rsub": {"__rsub__"} | _ops("rsub.Scalar", "rsub.Tensor"),
    "mul": {operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__", "__imul__"}
    | _ops("mul.Tensor", "mul.Scalar", "mul_.Tensor", "mul_.Scalar"),
    "div": {operator.truediv, operator.itruediv, torch.div, "div", "div_", "__truediv__", "__itruediv__"}
    | _ops("div.Tensor", "div.Scalar", "div_.Tensor", "div_.Scalar"),
    "neg": {operator.neg, torch.neg, "neg", "__neg__"} | _ops("neg.default"),
    "meta": {"size", "dim", getattr, operator.getitem} | _ops("sym_size.int", "_assert_tensor_metadata.default",
                                                               "_assert_scalar.default"),
}
MODULES: dict[type[nn.Module], str] = {
    nn.Linear: "linear", nn.Conv2d: "conv", nn.ReLU: "relu", nn.BatchNorm1d: "bn", nn.BatchNorm2d: "bn",
    nn.AvgPool2d: "pool", nn.AdaptiveAvgPool2d: "pool", nn.Flatten: "reshape", nn.Unflatten: "reshape",
    nn.Identity: "identity", nn.Dropout: "dropout",
}


def _kind_of(target: Any) -> str | None:
    for kind, members in KINDS.items():
        try:
            if target in members:
                return kind
        except TypeError:  # unhashable target
            return None
    return None


def _fetch(root: Any, path: str) -> Any:
    return functools.reduce(getattr, path.split("."), root)


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """torch.export logs shape specialisations and, when it fails, the graph; the TorchScript converter warns about
    unused buffers. All of it is expected here (a failure becomes a typed error), so none of it is shown."""
    loggers = [logging.getLogger(n) for n in ("torch._export", "torch.export", "torch.fx", "torch._dynamo",
                                              "torch._subclasses", "torch._functorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _export(model: nn.Module, example: Tensor) -> fx.GraphModule:
    batch = torch.export.Dim("batch")
    with _quiet_torch_export():
        ep = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
    return ep.module()  # type: ignore[return-value]


def trace(model: Any, example: Tensor) -> tuple[fx.Graph, Any, Callable[[Tensor], Tensor]]:
    """``(graph, root holding its modules and parameters, the callable that runs the real model)``."""
    from sparring.targets.load import ExportedModule

    if isinstance(model, torch.export.ExportedProgram):
        gm = model.module()
        return gm.graph, gm, gm
    if isinstance(model, ExportedModule):
        return model.exported.graph, model.exported, model  # type: ignore[return-value]
    if isinstance(model, torch.jit.ScriptModule):
        try:
            from torch._export.converter import TS2EPConverter

            with _quiet_torch_export():
                gm = TS2EPConverter(model, (example,)).convert().module()
        except Exception as exc:
            raise ModelGraphError(
                f"bound propagation could not read this TorchScript module ({type(model).__name__}): torch's "
                f"TorchScript-to-export converter failed: {_first_line(exc)}. Export the model instead: "
                "torch.export.save(torch.export.export(model, (x,)), 'model.pt2'), or pass the nn.Module.") from exc
        return gm.graph, gm, model
    if isinstance(model, fx.GraphModule):
        return model.graph, model, model
    if not isinstance(model, nn.Module):
        raise ModelGraphError(f"bound propagation needs a torch.nn.Module, an ExportedProgram or a TorchScript "
                              f"module; got {type(model).__name__}.")
    try:
        tracer = fx.Tracer()
        tracer.record_stack_traces = True
        return tracer.trace(model), model, model
    except Exception as fx_exc:  # e.g. Python control flow on tensors: torch.export follows one path of it
        try:
            gm = _export(model, example)
        except Exception as ex_exc:
            raise ModelGraphError(
                f"bound propagation could not trace {type(model).__name__}: torch.fx said {_first_line(fx_exc)}; "
                f"torch.export said {_first_line(ex_exc)}. Rewrite forward without data-dependent control flow, or "
                "pass a torch.export program.") from ex_exc
        return gm.graph, gm, model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class _Parser:
    def __init__(self, graph: fx.Graph, root: Any, ops: list[O.Op], inp: int, example: Tensor) -> None:
        self.graph, self.root, self.ops, self.inp, self.example = graph, root, ops, inp, example
        self.nodes = list(graph.nodes)
        self.env: dict[fx.Node, Any] = {}  # the value of every node on the example batch
        self.var: dict[fx.Node, int] = {}  # input-dependent tensors -> index of their value
        self.const: dict[fx.Node, Callable[[], Any]] = {}  # everything else, read live
        self.calls: dict[str, int] = {}
        self.batch = example.shape[0]
        self.dtype, self.device = example.dtype, example.device

    # ------------------------------------------------------------------------------------------ positions, errors
    def where(self, node: fx.Node) -> str:
        if node.op != "call_module":
            return node.name
        k = self.calls[str(node.target)] = self.calls.get(str(node.target), 0) + 1
        return str(node.target) if k == 1 else f"{node.target}#{k}"

    def position(self, node: fx.Node) -> str:
        i = self.nodes.index(node)
        at = f"graph node {i} of {len(self.nodes)} ({node.name!r}"
        stack = node.meta.get("nn_module_stack")
        if stack and list(stack.values())[-1][0]:
            at += f", inside {list(stack.values())[-1][0]!r}"
        lines = [ln.strip() for ln in (node.stack_trace or "").splitlines()]
        user = [i for i, ln in enumerate(lines[:-1]) if ln.startswith("File ") and "/torch/" not in ln]
        if user:  # the line of forward that made this call
            at += f"; {lines[user[-1]]}: {lines[user[-1] + 1]}"
        at += ")"
        if node.op == "call_module":
            return f"position {node.target!r} (as in model.named_modules()), {at}"
        return at

    def describe(self, node: fx.Node) -> str:
        t = node.target
        if node.op == "call_module":
            return type(self.root.get_submodule(str(t))).__name__
        if node.op == "call_method":
            return f"Tensor.{t}"
        if isinstance(t, torch._ops.OpOverload):
            return str(t)
        mod = getattr(t, "__module__", None) or ""
        return f"{mod}.{getattr(t, '__name__', t)}".lstrip(".")

    def unsupported(self, node: fx.Node, why: str = "") -> ModelGraphError:
        return ModelGraphError(
            f"bound propagation does not support {self.describe(node)} at {self.position(node)}{why}. Supported: "
            f"{'; '.join(SUPPORTED_LAYERS)}. Replace it with a supported equivalent (e.g. AvgPool2d or a strided "
            "Conv2d for MaxPool2d) or call model.eval() for layers that differ in training mode.")

    # ------------------------------------------------------------------------------------------ values
    def run(self, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "get_attr":
            return _fetch(self.root, str(node.target))
        if node.op == "call_function":
            return node.target(*args, **kwargs)  # type: ignore[operator]
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        return self.root.get_submodule(str(node.target))(*args, **kwargs)

    def getter(self, a: Any) -> Callable[[], Any]:
        if isinstance(a, fx.Node):
            return self.const[a]
        return lambda: a

    def value(self, node: fx.Node, i: int, name: str, default: Any = None) -> Any:
        """The constant argument ``i`` (or keyword ``name``) of ``node``, as it is now."""
        a = node.args[i] if len(node.args) > i else node.kwargs.get(name, default)
        return self.getter(a)()

    def live(self, node: fx.Node, i: int, name: str) -> Callable[[], Any]:
        a = node.args[i] if len(node.args) > i else node.kwargs.get(name)
        if isinstance(a, fx.Node) and a in self.var:
            raise self.unsupported(node, f" with its argument {name!r} depending on the input")
        return self.getter(a)

    def tensor(self, v: Any) -> Tensor:
        return torch.as_tensor(v, device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------------------------------ the walk
    def parse(self) -> int:
        for node in self.nodes:
            if node.op == "placeholder":
                if self.var:
                    if node.args:  # an optional argument left at its default
                        self.env[node] = node.args[0]
                        self.const[node] = self.getter(node.args[0])
                        continue
                    raise ModelGraphError(f"bound propagation needs a model with one tensor input; {node.name!r} is "
                                          "a second one.")
                self.env[node], self.var[node] = self.example, self.inp
            elif node.op == "output":
                return self.output(node)
            elif not any(isinstance(a, fx.Node) and a in self.var for a in node.all_input_nodes):
                self.constant(node)
            else:
                self.variable(node)
        raise ModelGraphError("the model's graph has no output.")

    def constant(self, node: fx.Node) -> None:
        with torch.no_grad():
            self.env[node] = self.run(node, self.env)
        if node.op == "get_attr":
            self.const[node] = lambda: _fetch(self.root, str(node.target))
        elif node.op == "call_module":
            frozen = self.env[node]
            self.const[node] = lambda: frozen
        else:
            deps = node.all_input_nodes
            self.const[node] = lambda: self.run(node, {d: self.const[d]() for d in deps})

    def output(self, node: fx.Node) -> int:
        out = node.args[0]
        if isinstance(out, tuple | list) and len(out) == 1:
            out = out[0]
        if not isinstance(out, fx.Node) or out not in self.var:
            got = self.env.get(out) if isinstance(out, fx.Node) else out
            raise ModelGraphError("bound propagation needs a model that returns one tensor computed from its input; "
                                  f"this one returns {type(got).__name__}.")
        return self.var[out]

    def variable(self, node: fx.Node) -> None:
        if node.op == "call_module" and str(node.target).startswith("_guards_fn"):  # torch.export's input checks
            self.env[node], self.const[node] = None, (lambda: None)
            return
        kind = self.kind(node)
        if kind in ("meta", "dead"):  # a size or a shape: a number, not a tensor the bounds follow
            with torch.no_grad():
                v = self.run(node, self.env)
            if isinstance(v, Tensor) and kind == "meta":
                raise self.unsupported(node, " on an input-dependent tensor")
            self.env[node], self.const[node] = v, (lambda: v)
            return
        self.check(node, kind)
        try:
            with torch.no_grad():
                out = self.run(node, self.env)
        except Exception as exc:
            raise ModelGraphError(f"{self.describe(node)} at {self.position(node)} fails on the traced inputs: "
                                  f"{_first_line(exc)}") from exc
        first = out[0] if isinstance(out, tuple) and kind == "bn" else out  # aten's (output, mean, rstd)
        if not isinstance(first, Tensor) or first.ndim < 1 or first.shape[0] != self.batch:
            raise self.unsupported(node, " with these arguments (it mixes the batch axis)")
        if kind == "cast":
            inp = self.env_tensor(next(a for a in node.all_input_nodes if a in self.var))
            if first.dtype != inp.dtype or first.device != inp.device:
                raise self.unsupported(node, f" that changes {inp.dtype} on {inp.device} to {first.dtype} on "
                                       f"{first.device} (bounds are computed in the model's own precision)")
        self.env[node] = out
        if kind in ("add", "sub", "rsub", "mul", "div", "neg"):
            src = [a for a in node.args[:2] if isinstance(a, fx.Node) and a in self.var]
        elif kind == "cat":
            parts = node.args[0] if node.args else node.kwargs["tensors"]
            src = list(parts)  # type: ignore[arg-type]  # every part follows the input (checked)
        else:
            src = [a for a in node.all_input_nodes if a in self.var][:1]
        op = self.make(node, kind, src, tuple(self.env_tensor(src[0]).shape[1:]), tuple(first.shape[1:]))
        if op is None:
            self.var[node] = self.var[src[0]]
        else:
            self.ops.append(op)
            self.var[node] = len(self.ops)

    def env_tensor(self, node: fx.Node) -> Tensor:
        v = self.env[node]
        return v[0] if isinstance(v, tuple) else v  # type: ignore[no-any-return]

    def kind(self, node: fx.Node) -> str:
        if node.op == "call_module":
            m = self.root.get_submodule(str(node.target))
            kind = MODULES.get(type(m))
            if kind is None:
                raise self.unsupported(node)
            return kind
        if node.op == "call_function" and node.target is operator.getitem:
            src = node.args[0]
            if isinstance(src, fx.Node) and self.kind_of_node(src) == "bn":
                return "identity" if node.args[1] == 0 else "dead"  # the saved statistics: unused
            if isinstance(src, fx.Node) and isinstance(self.env.get(src), Tensor):
                return "gather"  # indexing or slicing a tensor (x.shape[0] stays "meta")
        kind = _kind_of(node.target)
        if kind is None:
            raise self.unsupported(node)
        return kind

    def kind_of_node(self, node: fx.Node) -> str | None:
        return None if node.op != "call_function" else _kind_of(node.target)

    def check(self, node: fx.Node, kind: str) -> None:
        """Refuse before running what cannot be bounded (so nothing with side effects runs)."""
        m = self.root.get_submodule(str(node.target)) if node.op == "call_module" else None
        training = " in training mode (it is random or uses batch statistics)"
        if kind == "bn":
            if m is not None:
                if m.training:
                    raise self.unsupported(node, training)
                if getattr(m, "running_mean", None) is None:
                    raise self.unsupported(node, " without running statistics (track_running_stats=False)")
            elif (node.target is F.batch_norm or node.target in _ops("batch_norm.default")) and self.value(
                    node, 5, "training", False):
                raise self.unsupported(node, training)
        if kind == "dropout":
            if m is not None:
                if m.training and float(getattr(m, "p", 0.0)) > 0:
                    raise self.unsupported(node, training)
            else:
                functional = node.target is F.dropout
                p = self.value(node, 1, "p", 0.5)
                train = self.value(node, 2, "training" if functional else "train", functional)
                if train and float(p) > 0:
                    raise self.unsupported(node, training)
        if kind in ("add", "sub"):
            vs = [a for a in node.args[:2] if isinstance(a, fx.Node) and a in self.var]
            shapes = [tuple(self.env_tensor(a).shape) for a in vs]
            if len(shapes) == 2 and shapes[0] != shapes[1]:
                raise ModelGraphError(
                    f"{self.describe(node)} at {self.position(node)} adds input-dependent tensors of shapes "
                    f"{shapes[0][1:]} and {shapes[1][1:]} (per example): a residual connection must keep the shape "
                    "(y = x + block(x)), without broadcasting.")
        if kind in ("mul", "div", "matmul") and sum(isinstance(a, fx.Node) and a in self.var for a in node.args) > 1:
            raise self.unsupported(node, " of two input-dependent tensors (a nonlinear product)")
        if kind in ("div", "matmul") and not (isinstance(node.args[0], fx.Node) and node.args[0] in self.var):
            raise self.unsupported(node, " with the input-dependent tensor on the right")
        if kind == "div" and node.kwargs.get("rounding_mode") is not None:
            raise self.unsupported(node, " with rounding")
        if kind == "gather" and (not (isinstance(node.args[0], fx.Node) and node.args[0] in self.var)
                                 or sum(a in self.var for a in node.all_input_nodes) > 1):
            raise self.unsupported(node, " with an input-dependent index")
        if kind == "cat":
            parts = node.args[0] if node.args else node.kwargs.get("tensors")
            if not isinstance(parts, tuple | list) or not all(isinstance(a, fx.Node) and a in self.var
                                                               for a in parts):
                raise self.unsupported(node, " of a constant tensor (concatenate input-dependent tensors only)")
        if kind == "reduce":
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            nd = self.env_tensor(node.args[0]).ndim if isinstance(node.args[0], fx.Node) else 1
            dl = [dims] if isinstance(dims, int) else list(dims) if isinstance(dims, tuple | list) else None
            if dl is None or not dl or any(int(d) % nd == 0 for d in dl):
                raise self.unsupported(node, " over the batch axis (reduce over the other axes only)")

    # ------------------------------------------------------------------------------------------ the ops
    def make(self, node: fx.Node, kind: str, src: list[fx.Node], ins: tuple[int, ...], outs: tuple[int, ...]
             ) -> O.Op | None:
        where, args = self.where(node), [self.var[s] for s in src]
        m = self.root.get_submodule(str(node.target)) if node.op == "call_module" else None
        if kind in ("identity", "dropout", "cast"):
            return None
        if kind == "relu":
            return O.ReLU(where, args, ins, outs)
        if kind == "reshape":
            if _numel(ins) != _numel(outs):
                raise self.unsupported(node, " that changes the number of values per example")
            return O.Reshape(where, args, ins, outs)
        if kind == "linear":
            if isinstance(m, nn.Linear):
                return O.Linear(where, args, ins, outs, lambda: m.weight, lambda: m.bias)
            return O.Linear(where, args, ins, outs, self.live(node, 1, "weight"), self.live(node, 2, "bias"))
        if kind == "matmul":
            w = self.live(node, 1, "other")
            if self.tensor(w()).ndim != 2:
                raise self.unsupported(node, " with a constant that is not a matrix")
            return O.Linear(where, args, ins, outs, lambda: w().T, lambda: None)
        if kind == "conv":
            return self.conv(node, where, args, ins, outs, m)
        if kind == "bn":
            return self.batch_norm(node, where, args, ins, m)
        if kind in ("pool", "reduce"):
            return O.PositiveLinear(where, args, ins, outs, self.linear_map(node, m))
        if kind == "gather":
            return O.Gather(where, args, ins, outs, self.selection(node, ins, outs))
        if kind == "cat":
            dim = int(self.value(node, 1, "dim", 0)) % (len(outs) + 1)
            sizes = [int(self.env_tensor(a).shape[dim]) for a in src]
            return O.Concat(where, args, ins, outs, dim, sizes)
        if outs != ins:
            raise self.unsupported(node, f" that broadcasts the input-dependent tensor from {ins} to {outs}")
        return self.arithmetic(node, kind, where, args, ins)

    def linear_map(self, node: fx.Node, m: nn.Module | None) -> Callable[[Tensor], Tensor]:
        if m is not None:
            return m  # type: ignore[return-value]
        rest = fx.node.map_arg(node.args[1:], lambda n: self.const[n]())  # constants, nested ones too
        kw = fx.node.map_arg(node.kwargs, lambda n: self.const[n]())
        if node.op == "call_method":
            name = str(node.target)
            return lambda t: getattr(t, name)(*rest, **kw)  # type: ignore[no-any-return]
        fn = node.target
        return lambda t: fn(t, *rest, **kw)  # type: ignore[operator, no-any-return]

    def selection(self, node: fx.Node, ins: tuple[int, ...], outs: tuple[int, ...]) -> Tensor:
        """Which input element each output element of a gather-like op is, found by running the op on the
        elements' own indices (two examples, to see that it keeps them apart)."""
        fn, n = self.linear_map(node, None), _numel(ins)
        ids = torch.arange(2 * n, dtype=torch.float64, device=self.device).reshape(2, *ins)
        with torch.no_grad():
            got = fn(ids)
        if not isinstance(got, Tensor) or tuple(got.shape) != (2, *outs) or not torch.equal(got[1] - got[0],
                                                                                          torch.full_like(got[0], n)):
            raise self.unsupported(node, " with these arguments (it mixes the batch axis)")
        return got[0].reshape(-1).to(torch.long)

    def conv(self, node: fx.Node, where: str, args: list[int], ins: tuple[int, ...], outs: tuple[int, ...],
             m: nn.Module | None) -> O.Op:
        if len(ins) != 3:
            raise self.unsupported(node, f" on inputs of shape {ins} (only 2-D convolutions)")
        weight: Callable[[], Any]
        bias: Callable[[], Any]
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                raise self.unsupported(node, f" with padding_mode={m.padding_mode!r} (only 'zeros')")
            weight, bias = (lambda: m.weight), (lambda: m.bias)
            stride, padding, dilation, groups = m.stride, m.padding, m.dilation, m.groups
        else:
            weight, bias = self.live(node, 1, "weight"), self.live(node, 2, "bias")
            aten_conv = node.target in _ops("convolution.default")
            stride, padding = self.value(node, 3, "stride", 1), self.value(node, 4, "padding", 0)
            dilation = self.value(node, 5, "dilation", 1)
            if aten_conv:
                if self.value(node, 6, "transposed", False):
                    raise self.unsupported(node, " (transposed)")
                groups = self.value(node, 8, "groups", 1)
            else:
                groups = self.value(node, 6, "groups", 1)
        dil, k = _pair(dilation), tuple(weight().shape[2:])
        if padding == "valid":
            pad = (0, 0)
        elif isinstance(padding, str):  # "same": symmetric only
            total = [d * (kk - 1) for d, kk in zip(dil, k, strict=True)]
            if any(t % 2 for t in total):
                raise self.unsupported(node, " with asymmetric padding='same' (even kernel); pad explicitly")
            pad = (total[0] // 2, total[1] // 2)
        else:
            pad = _pair(padding)
        return O.Conv(where, args, ins, outs, weight, bias, _pair(stride), pad, dil, int(groups))

    def batch_norm(self, node: fx.Node, where: str, args: list[int], ins: tuple[int, ...], m: nn.Module | None
                   ) -> O.Op:
        w: Callable[[], Any]
        b: Callable[[], Any]
        rm: Callable[[], Any]
        rv: Callable[[], Any]
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            mm = m
            w, b, rm, rv = (lambda: mm.weight), (lambda: mm.bias), (lambda: mm.running_mean), (lambda: mm.running_var)
            eps = float(m.eps)
        elif node.target is F.batch_norm:
            rm, rv, w, b = (self.live(node, i, n) for i, n in ((1, "running_mean"), (2, "running_var"),
                                                               (3, "weight"), (4, "bias")))
            eps = float(self.value(node, 7, "eps", 1e-5))
        else:
            w, b, rm, rv = (self.live(node, i, n) for i, n in ((1, "weight"), (2, "bias"), (3, "running_mean"),
                                                               (4, "running_var")))
            legit = node.target in _ops("_native_batch_norm_legit_no_training.default")
            eps = float(self.value(node, 6 if legit else 7, "eps", 1e-5))
        if rm() is None or rv() is None:
            raise self.unsupported(node, " without running statistics (track_running_stats=False)")
        view = (-1,) + (1,) * (len(ins) - 1)

        def params() -> tuple[Tensor, Tensor]:
            mean, var = rm(), rv()
            assert mean is not None and var is not None  # checked above; buffers are not removed later
            weight, bias = w(), b()
            scale = torch.rsqrt(var + eps)
            if weight is not None:
                scale = scale * weight
            shift = -mean * scale
            if bias is not None:
                shift = shift + bias
            return scale.reshape(view), shift.reshape(view)

        return O.Affine(where, args, ins, params)

    def arithmetic(self, node: fx.Node, kind: str, where: str, args: list[int], shape: tuple[int, ...]) -> O.Op:
        alpha = float(node.kwargs.get("alpha", 1.0))  # type: ignore[arg-type]
        if kind == "neg":
            one = self.tensor(1.0)
            return O.Affine(where, args, shape, lambda: (-one, one * 0))
        first_var = isinstance(node.args[0], fx.Node) and node.args[0] in self.var
        if len(args) == 2:  # both operands follow the input: a sum of branches
            sign = -1.0 if kind in ("sub", "rsub") else 1.0
            w = (1.0, sign * alpha) if kind != "rsub" else (sign * alpha, 1.0)
            return O.Sum(where, args, shape, w)
        other = self.getter(node.args[1] if first_var else node.args[0])
        ndim = len(shape)

        def c() -> Tensor:
            t = self.tensor(other())
            if t.ndim > ndim:  # a leading batch axis of size 1
                if t.ndim != ndim + 1 or t.shape[0] != 1:
                    raise self.unsupported(node, f" with a constant of shape {tuple(t.shape)} (one per example?)")
                t = t[0]
            return t

        c()  # refuse a bad constant now, not at the first bound
        one, zero = self.tensor(1.0), self.tensor(0.0)
        if kind == "mul":
            return O.Affine(where, args, shape, lambda: (c(), zero))
        if kind == "div":
            return O.Affine(where, args, shape, lambda: (1 / c(), zero))
        if kind == "add":
            return O.Affine(where, args, shape, (lambda: (one, c() * alpha)) if first_var else
                            (lambda: (one * alpha, c())))
        if (kind == "sub") == first_var:  # x - c
            return O.Affine(where, args, shape, lambda: (one, -c() * alpha))
        return O.Affine(where, args, shape, lambda: (-one * alpha, c()))  # c - x (and aten's rsub(x, c))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(x) for x in v)
    return (t[0], t[0]) if len(t) == 1 else (t[0], t[1])


def parse(model: Any, ops: list[O.Op], inp: int, example: Tensor) -> tuple[int, Callable[[Tensor], Tensor]]:
    """Append the ops of ``model`` (reading value ``inp``) to ``ops``; return the index of its output value and the
    callable that runs the real model. ``example``: a batch of (normalised) inputs of 2 examples or more."""
    graph, root, call = trace(model, example)
    return _Parser(graph, root, ops, inp, example).parse(), call
