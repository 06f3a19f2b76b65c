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

Layout: the blockers and the plan are in :mod:`._graph_plan`, reading and rewriting TorchScript in
:mod:`._graph_script` and FX in :mod:`._graph_fx`; this module copies the model, verifies the copy and wraps it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from torch import fx, nn

from sparring.attacks.adaptive._common import PROBE_POINTS, check_target, probe, uniform_points
from sparring.attacks.adaptive._graph_fx import build_fx, fx_ops
from sparring.attacks.adaptive._graph_plan import GraphBlocker, plan_rewrites
from sparring.attacks.adaptive._graph_script import build_script, script_ops
from sparring.errors import ParameterError
from sparring.targets.spec import Access
from sparring.targets.torch import Forward, TorchTarget

__all__ = ["GraphBlocker", "find_graph_blockers", "with_graph_bpda"]

logger = logging.getLogger(__name__)


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
            ops, meta = script_ops(mod, args) if kind == "torchscript" else fx_ops(mod, args)  # type: ignore[arg-type]
        except Exception as exc:  # a graph we cannot read is a graph we cannot rewrite: fall back, never crash
            logger.info("graph BPDA: cannot analyse %s (%s: %s)", path or "the model", type(exc).__name__, exc)
            continue
        blockers = [GraphBlocker(path, kind, what, label, end, src, sign)
                    for end, src, sign, what, label in plan_rewrites(ops, meta)]
        if blockers:
            found.append((path, mod, blockers))
    return found


def _build(t: TorchTarget, parts: Sequence[tuple[str, nn.Module, Sequence[GraphBlocker]]]) -> nn.Module:
    model = t.model
    for path, mod, blockers in parts:
        new = (build_script(mod, blockers) if isinstance(mod, torch.jit.ScriptModule)  # type: ignore[arg-type]
               else build_fx(mod, blockers))  # type: ignore[arg-type]
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
