"""BPDA by module hooks (Athalye, Carlini, Wagner 2018, section 4.1): the backward pass of chosen sub-modules is the
identity or a differentiable approximation, the forward pass is the model's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sparring.attacks.adaptive._common import PROBE_POINTS, check_target, probe, uniform_points
from sparring.errors import ParameterError
from sparring.targets.spec import Access
from sparring.targets.torch import Forward, TorchTarget, frozen_parameters

__all__ = ["find_gradient_blockers", "hookable", "with_bpda"]

logger = logging.getLogger(__name__)

Approx = Callable[[torch.Tensor], torch.Tensor]
ModuleRef = nn.Module | str | tuple[str, nn.Module]


@dataclass(frozen=True)
class _Blocker:
    name: str
    module: nn.Module
    approx: Approx | None  # None: straight-through (identity on the backward pass)


def _bpda_hook(b: _Blocker) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if not torch.is_grad_enabled():
            return None  # no backward pass will follow: keep the module's own output object
        inp = args[0] if args else None
        if not isinstance(inp, torch.Tensor) or not isinstance(output, torch.Tensor):
            raise ParameterError(
                f"BPDA on module {b.name!r}: it must take and return one tensor; got "
                f"{type(inp).__name__} -> {type(output).__name__}. Choose the transform module itself."
            )
        sur = inp if b.approx is None else b.approx(inp)
        if sur.shape != output.shape:
            fix = "give approx= a module with the same output shape" if b.approx is None else "fix approx"
            raise ParameterError(
                f"BPDA on module {b.name!r}: the surrogate has shape {tuple(sur.shape)} but the module returns "
                f"{tuple(output.shape)}; {fix}."
            )
        # Value: exactly the module's output (s - s.detach() is exactly 0). Gradient: the surrogate's.
        return output.detach() + (sur - sur.detach()).to(output.dtype)

    return hook


@contextmanager
def _installed(blockers: Sequence[_Blocker]) -> Iterator[None]:
    """The BPDA forward hooks, on the modules only while the block runs."""
    handles = [b.module.register_forward_hook(_bpda_hook(b)) for b in blockers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _BPDATarget(TorchTarget):
    """A target whose differentiable forward replaces the gradient of some modules (see :func:`with_bpda`)."""

    def __init__(self, base: TorchTarget, blockers: list[_Blocker]) -> None:
        self._base = base
        self.blockers = blockers
        super().__init__(
            base.model, base.spec, access=base.access, output=base.output, batch_size=base.batch_size,
            top_k=base.top_k, decimals=base.decimals,
        )
        self.counter = base.counter

    def _raw_forward(self) -> Forward:
        return self._base._raw_forward()  # forward values are the base's, untouched

    def differentiable(self, attack: str = "this attack") -> Forward:
        self.require(Access.GRADIENTS, attack)
        inner, blockers = self._base.differentiable(attack), self.blockers

        def forward(x: torch.Tensor) -> torch.Tensor:
            with _installed(blockers):
                return inner(x)

        return forward

    @contextmanager
    def frozen(self) -> Iterator[TorchTarget]:
        params = [p for b in self.blockers if isinstance(b.approx, nn.Module) for p in b.approx.parameters()]
        with self._base.frozen(), frozen_parameters(params):
            yield self

    def describe(self) -> dict[str, Any]:
        d = self._base.describe()
        how = ", ".join(f"{b.name} ({'identity' if b.approx is None else 'approx'})" for b in self.blockers)
        d["adaptive"] = [*d.get("adaptive", []), f"bpda: {how or 'no modules'}"]
        return d


def with_bpda(
    target: TorchTarget,
    modules: Sequence[ModuleRef] | None = None,
    approx: Approx | Mapping[str, Approx] | None = None,
    *,
    x: torch.Tensor | np.ndarray | None = None,
) -> TorchTarget:
    """Backward Pass Differentiable Approximation (Athalye, Carlini, Wagner 2018, "Obfuscated Gradients Give a
    False Sense of Security", section 4.1).

    Threat model: white-box; for a model ``f = g ∘ t`` whose input transform ``t`` (quantisation, JPEG-like
    rounding, median filtering, a call into numpy) has a zero, undefined or disconnected gradient. The forward pass
    computes ``t`` exactly; the backward pass uses ``∇g(x')`` evaluated at ``x' = t(x)`` as if ``t(x) ≈ x``
    (straight-through: ``out = t(inp)`` in value, ``inp`` in gradient) or, with ``approx=h``, the gradient of a
    differentiable ``h ≈ t`` (``out = t(inp)`` in value, ``h(inp)`` in gradient).

    Forward values equal the original model's exactly, on the query path and the differentiable one. The
    replacement is made by forward hooks registered on the chosen modules only while the wrapper's differentiable
    forward runs, and removed right after (even on error); the user's model is never altered and no global state
    is kept. (Another thread taking gradients through the same model *during* such a forward would see them.)

    The wrapper shares the original target's query counter, budget, batch size, access and ``frozen()``.

    Args:
        target: the white-box target.
        modules: the transform modules to approximate, as module objects, names from ``model.named_modules()`` or
            ``(name, module)`` pairs (what :func:`find_gradient_blockers` returns). ``None``: found with
            :func:`find_gradient_blockers` on ``x`` (or, without ``x``, on 16 uniform random points in the bounds).
        approx: ``None`` for straight-through (the identity) everywhere; one differentiable function or module
            used for every chosen module; or a mapping from module name to its approximation (modules not named
            there are straight-through). An approximation must return its input's shape.
        x: a small batch to find blockers on when ``modules`` is ``None``.

    Returns:
        A :class:`TorchTarget` to give to any gradient attack.

    Example:
        >>> import torch
        >>> from sparring import PGD, zoo
        >>> from sparring.attacks.adaptive import with_bpda
        >>> from sparring.targets import TorchTarget
        >>> class Quantize(torch.nn.Module):  # a defence: round pixels to 8 levels (zero gradient)
        ...     def forward(self, x):
        ...         return torch.round(x * 7) / 7
        >>> base, data = zoo.load("digits-mlp"), zoo.data("digits-mlp")
        >>> defended = TorchTarget(torch.nn.Sequential(Quantize(), base.model), base.spec)
        >>> x, y = data.x_test[:64], data.y_test[:64]
        >>> naive = PGD(eps=0.1)(defended, x, y).robust_accuracy
        >>> adaptive = PGD(eps=0.1)(with_bpda(defended, x=x), x, y).robust_accuracy  # finds Quantize itself
        >>> adaptive < naive - 0.3
        True
    """
    t = check_target(target, "with_bpda")
    if modules is None:
        probe = x if x is not None else uniform_points(t, PROBE_POINTS)
        found: Sequence[ModuleRef] = find_gradient_blockers(t, probe)
    else:
        if isinstance(modules, (str, nn.Module, tuple)) or len(modules) == 0:
            raise ParameterError(
                f"modules must be a non-empty list of modules, names or (name, module) pairs; got {modules!r}. "
                "Pass modules=None to find the gradient blockers automatically."
            )
        found = modules
    resolved = _resolve(t.model, found)
    names = [n for n, _ in resolved]
    if approx is None or (callable(approx) and not isinstance(approx, Mapping)):
        approx_of: dict[str, Approx | None] = {n: approx for n in names}
    elif isinstance(approx, Mapping):
        unknown = [k for k in approx if k not in names]
        if unknown:
            raise ParameterError(f"approx names modules {unknown} that are not among the chosen ones {names}.")
        for k, v in approx.items():
            if not callable(v):
                raise ParameterError(f"approx[{k!r}] must be a callable (e.g. an nn.Module); got {type(v).__name__}.")
        approx_of = {n: approx.get(n) for n in names}
    else:
        raise ParameterError(
            f"approx must be None, a callable/nn.Module, or a mapping name -> callable; got {type(approx).__name__}."
        )
    return _BPDATarget(t, [_Blocker(n, m, approx_of[n]) for n, m in resolved])


def find_gradient_blockers(target: TorchTarget, x: torch.Tensor | np.ndarray) -> list[tuple[str, nn.Module]]:
    """The sub-modules of ``target.model`` whose backward pass blocks the gradient, probed on the batch ``x``.

    Heuristic: one forward pass of ``x`` records every sub-module's input (the model itself excluded). Each
    sub-module that takes a floating tensor and returns one of the *same shape* is then run alone on its recorded
    input, and its local vector-Jacobian product with a random Gaussian vector is taken. It is a blocker when its
    output does not require grad (``torch.no_grad``, ``.detach()``, a numpy round trip), the input is disconnected
    from it (``None`` gradient), or the product is exactly zero everywhere (``torch.round``, ``sign``, hard
    thresholds). A random vector rather than ones keeps softmax-like modules, whose Jacobian kills constant
    vectors, from looking blocked. Modules are probed deepest first and found blockers are made straight-through
    while their ancestors are probed, so a container is reported only when it blocks by itself. Shape-changing
    modules (pooling, flatten, linear) are not probed; use ``with_bpda(modules=...)`` for those.

    False positives are possible for modules that are locally flat on every point of ``x`` (e.g. a ReLU whose
    inputs are all negative): probe real data, a few dozen points. Costs ``len(x)`` queries (one forward pass).

    Args:
        target: the white-box target.
        x: a small batch of valid inputs (tensor or numpy).

    Returns:
        ``(name, module)`` pairs, names as in ``model.named_modules()``; empty when nothing blocks.

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.adaptive import find_gradient_blockers
        >>> find_gradient_blockers(zoo.load("digits-cnn"), zoo.data("digits-cnn").x_test[:16])
        []
    """
    t = check_target(target, "find_gradient_blockers")
    t.require(Access.GRADIENTS, "find_gradient_blockers")
    xt = probe(t, x)
    # TorchScript modules cannot carry Python hooks (and their sub-modules are not called from Python): their
    # non-differentiable operations are found in the graph (sparring.attacks.adaptive.graph).
    named = [(n, m) for n, m in t.model.named_modules() if n and hookable(m)]
    seen: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def record(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if id(module) not in seen:  # cloned before the forward, so in-place modules do not overwrite it
            seen[id(module)] = (tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args), kwargs)

    handled = _handled_blockers(target)
    skip = _graph_rewritten(target)
    handles = [m.register_forward_pre_hook(record, with_kwargs=True) for _, m in named]
    try:
        with t.frozen(), torch.no_grad():
            t.counter.charge(xt.shape[0])
            t._raw_forward()(xt)
    finally:
        for h in handles:
            h.remove()
    gen = torch.Generator(device=t.device)
    gen.manual_seed(0)
    found: list[_Blocker] = []
    with t.frozen():
        for name, module in sorted(named, key=lambda nm: -nm[0].count(".")):
            if id(module) not in seen or any(b.module is module for b in handled) or module in skip:
                continue
            args, kwargs = seen[id(module)]
            if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
                continue
            inner = [b for b in (*handled, *found) if b.name.startswith(name + ".")]
            leaf = args[0].detach().requires_grad_(True)
            try:
                with torch.enable_grad(), _installed(inner):
                    out = module(leaf.clone(), *args[1:], **kwargs)
            except RuntimeError as exc:  # cannot be re-run alone: not something BPDA could wrap either
                logger.debug("find_gradient_blockers: skipping %s (%s)", name, exc)
                continue
            if isinstance(out, torch.Tensor) and out.shape == leaf.shape and _blocks(out, leaf, gen):
                found.append(_Blocker(name, module, None))
    return [(b.name, b.module) for b in found]


def _blocks(out: torch.Tensor, leaf: torch.Tensor, gen: torch.Generator) -> bool:
    if not out.requires_grad:
        return True
    v = torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)
    (g,) = torch.autograd.grad(out, leaf, v, allow_unused=True)
    return g is None or not bool(g.any())


def _handled_blockers(target: TorchTarget) -> list[_Blocker]:
    """Modules already approximated by BPDA wrappers anywhere in ``target``'s wrapper chain."""
    out: list[_Blocker] = []
    t: TorchTarget | None = target
    while t is not None:
        if isinstance(t, _BPDATarget):
            out.extend(t.blockers)
        base = getattr(t, "_base", None)  # every adaptive wrapper keeps the target it wraps as ``_base``
        t = base if isinstance(base, TorchTarget) else None
    return out


def hookable(m: nn.Module) -> bool:
    """Whether Python forward hooks run on ``m`` (not on TorchScript modules, which refuse them)."""
    return not isinstance(m, torch.jit.ScriptModule)


def _graph_rewritten(target: TorchTarget) -> list[nn.Module]:
    """Modules whose graph a graph-BPDA wrapper in ``target``'s chain already rewrote (not probed again)."""
    out: list[nn.Module] = []
    t: TorchTarget | None = target
    while t is not None:
        out.extend(getattr(t, "rewritten_modules", []))
        base = getattr(t, "_base", None)
        t = base if isinstance(base, TorchTarget) else None
    return out


def _resolve(model: nn.Module, refs: Sequence[ModuleRef]) -> list[tuple[str, nn.Module]]:
    by_name = dict(model.named_modules())
    name_of = {id(m): n for n, m in by_name.items()}
    out: list[tuple[str, nn.Module]] = []
    for ref in refs:
        if isinstance(ref, str):
            if ref not in by_name:
                some = ", ".join(repr(n) for n in list(by_name)[1:9])
                raise ParameterError(f"the model has no sub-module named {ref!r}; names look like {some}.")
            mod = by_name[ref]
        else:
            mod = ref[1] if isinstance(ref, tuple) else ref
            if not isinstance(mod, nn.Module) or id(mod) not in name_of:
                raise ParameterError(
                    f"{ref!r} is not a sub-module of the target's model; give modules of target.model (or names)."
                )
        if not hookable(mod):
            raise ParameterError(
                f"module {name_of[id(mod)]!r} is a TorchScript module ({type(mod).__name__}), which cannot carry the "
                "hooks module BPDA uses; use with_graph_bpda(target) (rewrites the TorchScript graph) instead."
            )
        entry = (name_of[id(mod)], mod)
        if entry not in out:
            out.append(entry)
    return out
