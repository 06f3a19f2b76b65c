"""Read the computation a model really performs, in execution order, as the ops bound propagation understands.

The model is traced (``torch.fx`` symbolic tracing; ``torch.export`` when Python control flow stops that), so every
call is seen where it happens: a module object used twice is two operations, functional calls in ``forward``
(``F.relu``, ``torch.flatten``, ``x.view``, ``+``) are operations, and residual connections are the additions they
are. A ``torch.export`` program (or its module) already is such a graph; a TorchScript module is converted to one
with torch's TorchScript-to-export converter. Anything not understood is refused with a
:class:`~sparring.errors.ModelGraphError` naming the operation and its position in the graph.

Tracing is in :mod:`~sparring.defenses.certify.trace`, the table of operations by kind in
:mod:`~sparring.defenses.certify.kinds`, the construction of each op in :mod:`~sparring.defenses.certify.build`;
this module walks the graph, keeps constants apart from input-dependent values, and refuses what cannot be bounded.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from sparring.defenses.certify import ops as O
from sparring.defenses.certify.build import make
from sparring.defenses.certify.kinds import MODULES, SUPPORTED_LAYERS, aten_ops, kind_of
from sparring.defenses.certify.trace import first_line, trace
from sparring.errors import ModelGraphError

__all__ = ["SUPPORTED_LAYERS", "parse", "trace"]

Tensor = torch.Tensor


def _fetch(root: Any, path: str) -> Any:
    return functools.reduce(getattr, path.split("."), root)


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
                                  f"{first_line(exc)}") from exc
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
        op = make(self, node, kind, src, tuple(self.env_tensor(src[0]).shape[1:]), tuple(first.shape[1:]))
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
        kind = kind_of(node.target)
        if kind is None:
            raise self.unsupported(node)
        return kind

    def kind_of_node(self, node: fx.Node) -> str | None:
        return None if node.op != "call_function" else kind_of(node.target)

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
            elif (node.target is F.batch_norm or node.target in aten_ops("batch_norm.default")) and self.value(
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
        arithmetic = ("add", "sub", "rsub", "mul", "div", "neg")
        if kind in arithmetic and (len(node.args) < (1 if kind == "neg" else 2)
                                   or any(isinstance(v, fx.Node) and v in self.var for v in node.kwargs.values())):
            raise self.unsupported(node, " with its operands as keywords (write it as x + y, x * c, ...)")
        if kind in ("add", "sub"):
            vs = [a for a in node.args[:2] if isinstance(a, fx.Node) and a in self.var]
            shapes = [tuple(self.env_tensor(a).shape) for a in vs]
            if len(shapes) == 2 and shapes[0] != shapes[1]:
                raise ModelGraphError(
                    f"{self.describe(node)} at {self.position(node)} combines input-dependent tensors of shapes "
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


def parse(model: Any, ops: list[O.Op], inp: int, example: Tensor) -> tuple[int, Callable[[Tensor], Tensor]]:
    """Append the ops of ``model`` (reading value ``inp``) to ``ops``; return the index of its output value and the
    callable that runs the real model. ``example``: a batch of (normalised) inputs of 2 examples or more."""
    graph, root, call = trace(model, example)
    return _Parser(graph, root, ops, inp, example).parse(), call
