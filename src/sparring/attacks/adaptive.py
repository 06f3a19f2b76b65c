"""Adaptive attacks: BPDA and EOT as target wrappers, so every gradient attack works through them unchanged.

A defence can make gradient attacks fail without making the model robust (Athalye, Carlini, Wagner 2018,
"Obfuscated Gradients Give a False Sense of Security"): a non-differentiable input transform (quantisation,
JPEG-like rounding, median filtering) *shatters* the gradient, and a randomized model gives *stochastic* gradients
and predictions. The paper's two answers are wrappers here, each returning a new :class:`TorchTarget` on the same
model object and spec:

* :func:`with_bpda` — Backward Pass Differentiable Approximation (section 4.1): the forward pass is exactly the
  model's; on the backward pass chosen modules act as the identity or as a differentiable approximation.
* :func:`with_eot` — Expectation over Transformation (section 4.2; Athalye, Engstrom, Ilyas, Kwok 2018,
  "Synthesizing Robust Adversarial Examples"): each example is evaluated on several random draws at once and the
  attack sees the expected output.

:func:`find_gradient_blockers` and :func:`is_randomized` detect the two cases; :func:`adaptive` applies what they
find. Attacks call ``target.differentiable(...)`` and ``target.query(...)`` as always::

    defended, notes = adaptive(target, x[:32])
    result = PGD(eps=0.1)(defended, x, y)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from sparring.attacks.evasion._checks import check_positive_int
from sparring.errors import ParameterError
from sparring.targets.base import QueryCounter
from sparring.targets.spec import Access
from sparring.targets.torch import Forward, TorchTarget

__all__ = ["adaptive", "find_gradient_blockers", "is_randomized", "with_bpda", "with_eot"]

logger = logging.getLogger(__name__)

Approx = Callable[[torch.Tensor], torch.Tensor]
ModuleRef = nn.Module | str | tuple[str, nn.Module]
Reduce = Literal["logits", "probs"]

_PROBE_POINTS = 16
"""Uniform random points :func:`with_bpda` probes when it must find the blockers itself and no ``x`` is given."""
_ADAPTIVE_POINTS = 64
"""Most examples :func:`adaptive` probes (the first ones of ``x``)."""


# ---------------------------------------------------------------------------------------------------- BPDA
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
        flags = [p.requires_grad for p in params]
        with self._base.frozen():
            for p in params:
                p.requires_grad_(False)
            try:
                yield self
            finally:
                for p, f in zip(params, flags, strict=True):
                    p.requires_grad_(f)

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
    t = _check_target(target, "with_bpda")
    if modules is None:
        probe = x if x is not None else _uniform_points(t, _PROBE_POINTS)
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
    t = _check_target(target, "find_gradient_blockers")
    t.require(Access.GRADIENTS, "find_gradient_blockers")
    xt = _probe(t, x)
    named = [(n, m) for n, m in t.model.named_modules() if n]
    seen: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def record(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if id(module) not in seen:  # cloned before the forward, so in-place modules do not overwrite it
            seen[id(module)] = (tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args), kwargs)

    handled = _handled_blockers(target)
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
            if id(module) not in seen or any(b.module is module for b in handled):
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
        t = t._base if isinstance(t, (_BPDATarget, _EOTTarget)) else None
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
        entry = (name_of[id(mod)], mod)
        if entry not in out:
            out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------------- EOT
class _DrawCounter(QueryCounter):
    """A view of another counter that charges ``draws`` queries per example (each example runs ``draws`` times)."""

    def __init__(self, inner: QueryCounter, draws: int) -> None:  # all state lives in ``inner``
        self._inner, self._draws = inner, draws

    @property
    def budget(self) -> int | None:
        return self._inner.budget

    @budget.setter
    def budget(self, value: int | None) -> None:
        self._inner.budget = value

    @property
    def used(self) -> int:
        return self._inner.used

    @used.setter
    def used(self, value: int) -> None:
        self._inner.used = value

    @property
    def calls(self) -> int:
        return self._inner.calls

    @calls.setter
    def calls(self, value: int) -> None:
        self._inner.calls = value

    def charge(self, n: int) -> None:
        self._inner.charge(n * self._draws)

    def reset(self) -> None:
        self._inner.reset()


class _EOTTarget(TorchTarget):
    """A target that evaluates every example on ``draws`` random draws and returns the mean (see :func:`with_eot`)."""

    def __init__(self, base: TorchTarget, draws: int, reduce: Reduce, batch_size: int) -> None:
        self._base, self.draws, self.reduce = base, draws, reduce
        super().__init__(
            base.model, base.spec, access=base.access, output=base.output, batch_size=batch_size,
            top_k=base.top_k, decimals=base.decimals,
        )
        self.counter = _DrawCounter(base.counter, draws)

    def _expected(self, fwd: Forward) -> Forward:
        draws, log_probs = self.draws, self.reduce == "probs" and self.output == "logits"

        def forward(x: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]
            many = x.unsqueeze(0).expand(draws, *x.shape).reshape(draws * n, *x.shape[1:])
            out = fwd(many).reshape(draws, n, -1)
            if log_probs:  # log of the mean probability: valid logits whose softmax is the expected prediction
                return torch.logsumexp(out.log_softmax(dim=2), dim=0) - math.log(draws)
            return out.mean(dim=0)

        return forward

    def _raw_forward(self) -> Forward:
        return self._expected(self._base._raw_forward())

    def differentiable(self, attack: str = "this attack") -> Forward:
        self.require(Access.GRADIENTS, attack)
        return self._expected(self._base.differentiable(attack))  # the base charges draws × n

    @contextmanager
    def frozen(self) -> Iterator[TorchTarget]:
        with self._base.frozen():
            yield self

    def describe(self) -> dict[str, Any]:
        d = self._base.describe()
        d["adaptive"] = [*d.get("adaptive", []), f"eot: mean {self.reduce} over {self.draws} draws"]
        return d


def with_eot(
    target: TorchTarget, draws: int = 20, *, reduce: Reduce = "logits", batch_size: int | None = None
) -> TorchTarget:
    r"""Expectation over Transformation for randomized models (Athalye, Engstrom, Ilyas, Kwok 2018, "Synthesizing
    Robust Adversarial Examples", eq. 1; used against randomized defences in Athalye, Carlini, Wagner 2018,
    section 4.2).

    Threat model: white-box against a model with internal randomness (noise injection, random resizing/padding,
    stochastic activations). Instead of one random draw, the attack optimises the expectation
    :math:`\mathbb{E}_{r}[f_r(x)]`: every example is repeated ``draws`` times, the whole batch goes through the
    model in one forward pass, and the ``draws`` outputs are averaged.

    ``reduce="logits"`` averages logits; ``reduce="probs"`` averages softmax probabilities and returns their log
    (valid logits whose softmax is the expected probability). The gradient of the mean is the mean of the
    gradients, so for a loss linear in the logits (e.g. a logit margin with a fixed other class) this equals
    averaging loss gradients over the draws. AutoAttack's ``rand`` version (Croce & Hein 2020) instead averages the
    gradient of the *loss* over 20 draws (EOT inside APGD); here the expectation is taken on the model's output so
    that every attack works unchanged, which differs only through the loss's curvature (and not at all for
    sign-based L∞ steps on a linear loss). The predictions that decide success (``query``, ``query_labels``, and
    the ``argmax`` of the differentiable forward) are the expected prediction as well, so an example counts as
    broken only if it is broken on average, not on one lucky draw.

    Queries: one example evaluated on ``draws`` draws costs ``draws`` queries of the shared counter (the model
    really runs that often); the wrapper's own ``counter`` is a view of the original one. The wrapper's
    ``batch_size`` is the original's divided by ``draws`` (at least 1), so one model call holds about as many
    examples as before. On a deterministic model the output equals the original's up to float rounding of the
    mean (exactly, with ``draws=1``).

    Args:
        target: the white-box target (may itself be a BPDA wrapper).
        draws: random draws per example (>= 1); the paper and AutoAttack use 20 or more.
        reduce: ``"logits"`` or ``"probs"``; a model whose output is already probabilities is averaged as is.
        batch_size: examples per call of the wrapper; default ``max(1, target.batch_size // draws)``.

    Example:
        >>> from sparring import PGD, zoo
        >>> from sparring.attacks.adaptive import with_eot
        >>> noisy = zoo.load("digits-cnn")  # a randomized model in practice
        >>> eot = with_eot(noisy, draws=4)
        >>> data = zoo.data("digits-cnn")
        >>> PGD(eps=0.1, steps=10)(eot, data.x_test[:16], data.y_test[:16]).cost.queries >= 4 * 16
        True
    """
    t = _check_target(target, "with_eot")
    check_positive_int(draws, "draws")
    if reduce not in ("logits", "probs"):
        raise ParameterError(f"reduce must be 'logits' or 'probs'; got {reduce!r}.")
    bs = max(1, t.batch_size // draws) if batch_size is None else check_positive_int(batch_size, "batch_size")
    return _EOTTarget(t, draws, reduce, bs)


def is_randomized(target: TorchTarget, x: torch.Tensor | np.ndarray, tries: int = 2) -> bool:
    """Whether the same input gives different scores on repeated forward passes (a randomized model).

    The batch ``x`` is evaluated ``tries`` times in eval mode (as attacks see the model, inside ``frozen()``);
    scores count as different when any differs by more than ``1e-5 × (1 + max |score|)``, so the last-bit
    nondeterminism of some GPU kernels is not mistaken for a randomized defence. Costs ``tries × len(x)`` queries.

    Args:
        target: the white-box target.
        x: a small batch of valid inputs (tensor or numpy).
        tries: forward passes to compare (>= 2).

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.adaptive import is_randomized
        >>> is_randomized(zoo.load("digits-cnn"), zoo.data("digits-cnn").x_test[:8])
        False
    """
    t = _check_target(target, "is_randomized")
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 2:
        raise ParameterError(f"tries must be an integer >= 2 (two passes to compare); got {tries!r}.")
    xt = _probe(t, x)
    ask = t.query if t.access >= Access.SCORES else t.query_labels
    with t.frozen():
        first = ask(xt).float()
        tol = 1e-5 * (1.0 + float(first.abs().max()))
        return any(float((ask(xt).float() - first).abs().max()) > tol for _ in range(tries - 1))


def adaptive(
    target: TorchTarget, x: torch.Tensor | np.ndarray, *, draws: int = 20
) -> tuple[TorchTarget, list[str]]:
    """Wrap ``target`` for an adaptive evaluation: BPDA if gradient blockers are found, EOT if it is randomized.

    Probes the first 64 examples of ``x`` with :func:`find_gradient_blockers` (then :func:`with_bpda`,
    straight-through on what was found) and :func:`is_randomized` (then :func:`with_eot` with ``draws``). The audit
    uses it to retry gradient attacks when its sanity checks suspect gradient masking.

    Args:
        target: the white-box target.
        x: valid inputs to probe (a few dozen real examples are enough).
        draws: EOT draws per example if the model is randomized.

    Returns:
        ``(wrapped, notes)``: the target to attack (``target`` itself when nothing applies) and one human-readable
        note per wrapper applied (empty when nothing applies).

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.adaptive import adaptive
        >>> target = zoo.load("digits-cnn")
        >>> wrapped, notes = adaptive(target, zoo.data("digits-cnn").x_test[:32])
        >>> wrapped is target, notes
        (True, [])
    """
    t = _check_target(target, "adaptive")
    check_positive_int(draws, "draws")
    xt = _probe(t, x)[:_ADAPTIVE_POINTS]
    wrapped, notes = t, []
    blockers = find_gradient_blockers(t, xt)
    if blockers:
        wrapped = with_bpda(t, modules=blockers)
        names = ", ".join(f"{n} ({type(m).__name__})" for n, m in blockers)
        notes.append(
            f"BPDA: gradient blocked (zero or disconnected) at {names}; the backward pass treats "
            f"{'it' if len(blockers) == 1 else 'them'} as the identity (straight-through), the forward is unchanged"
        )
    if is_randomized(t, xt):
        wrapped = with_eot(wrapped, draws=draws)
        notes.append(
            f"EOT: the model is randomized (scores differ between passes); gradients and predictions are the mean "
            f"logits over {draws} draws per example (costs {draws} queries per example)"
        )
    return wrapped, notes


# ---------------------------------------------------------------------------------------------------- helpers
def _check_target(target: object, fn: str) -> TorchTarget:
    if not isinstance(target, TorchTarget):
        raise ParameterError(
            f"{fn} needs a TorchTarget (a white-box PyTorch model); got {type(target).__name__}. Wrap the model "
            "with TorchTarget(model, spec), or evaluate a black-box target with a gradient-free attack (Square, "
            "HopSkipJump)."
        )
    return target


def _probe(t: TorchTarget, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    xt, _ = t.spec.validate(x)
    return xt.to(t.device, t.dtype)


def _uniform_points(t: TorchTarget, n: int) -> torch.Tensor:
    gen = torch.Generator(device=t.device)
    gen.manual_seed(0)
    lo, hi = t.spec.bounds_tensors(t.device, t.dtype)
    u = torch.rand((n, *t.spec.shape), generator=gen, device=t.device, dtype=t.dtype)
    return lo + (hi - lo) * u

