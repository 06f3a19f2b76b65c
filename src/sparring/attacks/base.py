"""The one base every evasion attack shares: validation, batching, bookkeeping, typed result.

An attack is configuration only (scikit-learn style: keyword arguments stored as given, validated when the attack
is called). Calling it with a target and data runs it::

    result = PGD(eps=0.1, steps=20)(target, x, y)

Subclasses implement :meth:`EvasionAttack._run_batch` on tensors already validated and moved to the model's device.
"""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from sparring._progress import progress_bar
from sparring.attacks.norms import Norm, norm_of
from sparring.attacks.rescore import DEFAULT_DRAWS, chunk_size, detect_randomized, judge_target, majority_votes, vote
from sparring.attacks.result import Cost, EvasionResult
from sparring.errors import ParameterError, QueryBudgetExceeded
from sparring.targets.base import Target, register_attack_access
from sparring.targets.spec import Access

__all__ = ["BatchContext", "EvasionAttack", "attack_names", "get_attack"]

_ATTACKS: dict[str, type[EvasionAttack]] = {}


@dataclass
class BatchContext:
    """What an attack needs while working on one batch (all tensors on the model's device)."""

    target: Target
    lower: torch.Tensor
    upper: torch.Tensor
    generator: torch.Generator
    gradients: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    """Facts an attack wants in the result (e.g. ``{"budget_exhausted": True}``); copied to ``result.extras``."""
    draws: int = 1
    """Fresh draws per prediction when the model is randomized (the base re-scores with this many)."""
    randomized: bool = False
    """The model is randomized: one draw's prediction decides nothing. Attacks then neither stop early nor keep an
    iterate because one draw misclassified it; they return their final iterate, which the base re-scores."""
    unknown: torch.Tensor | None = None
    """Set by an attack for the current batch: per example, True where it could not finish (query budget)."""

    def mark_unknown(self, mask: torch.Tensor) -> None:
        """Record the examples of the current batch the attack could not finish (the query budget ran out)."""
        self.unknown = mask if self.unknown is None else self.unknown | mask
        self.notes["budget_exhausted"] = True


class EvasionAttack(ABC):
    """Base of evasion attacks. Subclasses set the capability tags and implement :meth:`_run_batch`.

    Capability tags (read by the audit planner):
        name: short identifier, e.g. ``"pgd"``.
        needs: the :class:`~sparring.targets.Access` the attack requires.
        norms: the norms it supports.
        supports_targeted: whether ``target_labels`` may be given.
    """

    name: ClassVar[str]
    needs: ClassVar[Access]
    norms: ClassVar[tuple[Norm, ...]]
    supports_targeted: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls) and "name" in cls.__dict__:
            register_attack_access(cls.name, cls.needs)
            _ATTACKS[cls.name] = cls

    # ------------------------------------------------------------------ configuration
    def get_params(self) -> dict[str, Any]:
        """The parameters exactly as set, keyed by ``__init__`` argument name (for reports)."""
        sig = inspect.signature(type(self).__init__)
        out = {}
        for name in sig.parameters:
            if name == "self":
                continue
            v = getattr(self, name)
            out[name] = v.value if isinstance(v, Norm) else v
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @abstractmethod
    def _check_params(self, target: Target) -> None:
        """Validate parameters against the target (called at the start of every run); raise ParameterError."""

    # ------------------------------------------------------------------ running
    def __call__(
        self,
        target: Target,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray | Any,
        *,
        target_labels: torch.Tensor | np.ndarray | Any | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        draws: int | None = None,
    ) -> EvasionResult:
        """Attack ``x`` (true labels ``y``) on ``target``.

        Args:
            target: the model under test.
            x: inputs ``(N, *spec.shape)`` within the spec's bounds (tensor or numpy).
            y: true labels ``(N,)``.
            target_labels: for a targeted attack, the class each example should be pushed to.
            generator: source of randomness; default a fresh generator seeded with the attack's ``seed``.
            progress: show a progress bar over batches.
            draws: fresh draws per prediction for a randomized model (declares it randomized when >= 2; 1 declares
                it deterministic). Default: detected by querying the first 16 inputs twice (targets without a
                query budget), and then :data:`~sparring.attacks.rescore.DEFAULT_DRAWS` (100).

        Returns:
            An :class:`EvasionResult`; ``x_adv`` is the same kind (numpy/tensor) and on the same device as ``x``.
            On a randomized model every prediction in it is the majority over ``result.draws`` fresh draws of the
            clean input and of the attack's final candidate (:mod:`sparring.attacks.rescore`); the attack itself
            neither stops early nor keeps an iterate because one draw misclassified it. Examples the attack could
            not finish because the target's query budget ran out are ``result.unknown``, never robust.
        """
        self._check_params(target)
        target.require(self.needs, type(self).__name__)
        xt, yt = target.spec.validate(x, y)
        assert yt is not None
        tl = None
        if target_labels is not None:
            if not self.supports_targeted:
                raise ParameterError(f"{type(self).__name__} is untargeted only; drop target_labels.")
            tl = target.spec.validate_labels(target_labels, n=xt.shape[0], name="target_labels")
            if bool((tl == yt).any()):
                raise ParameterError(
                    f"{int((tl == yt).sum())} target label(s) equal the true label; a targeted attack needs a "
                    "different class for every example."
                )
        if draws is not None and (isinstance(draws, bool) or not isinstance(draws, int) or draws < 1):
            raise ParameterError(f"draws must be a positive integer (1: deterministic model; 100 is the default for "
                                 f"a randomized one); got {draws!r}.")
        dev = target.device
        dtype = getattr(target, "dtype", torch.float32)
        gen = _generator(generator, getattr(self, "seed", 0), dev)
        lower, upper = target.spec.bounds_tensors(dev, dtype)
        q0, t0 = target.counter.used, time.perf_counter()
        how, n_draws = _randomness(target, xt.to(dev, dtype), draws)
        ctx = BatchContext(target=target, lower=lower, upper=upper, generator=gen, draws=n_draws,
                           randomized=n_draws > 1)
        xs, clean, advp, unk = [], [], [], []
        for xb, yb, tb in progress_bar(
            _batches(xt, yt, tl, target.batch_size, dev, dtype),
            total=-(-xt.shape[0] // target.batch_size), description=self.name, enabled=progress,
        ):
            xa, cp, ap = self._run_batch(ctx, xb, yb, tb)
            xs.append(xa)
            clean.append(cp)
            advp.append(ap)
            unk.append(torch.zeros(xb.shape[0], dtype=torch.bool, device=dev) if ctx.unknown is None
                       else ctx.unknown.to(dev))
            ctx.unknown = None
        x_adv = torch.cat(xs)
        clean_pred, adv_pred, unknown = torch.cat(clean), torch.cat(advp), torch.cat(unk)
        y_dev = yt.to(dev)
        tl_dev = None if tl is None else tl.to(dev)
        x_dev = xt.to(dev, dtype)
        success = adv_pred != y_dev if tl_dev is None else adv_pred == tl_dev
        goal_fraction = None
        if n_draws > 1:
            ctx.notes["randomized"] = how
            ctx.notes["single_draw_success"] = float(success.float().mean())
            x_adv, clean_pred, adv_pred, goal_fraction, unknown = _rescore(
                ctx, x_dev, x_adv, y_dev, tl_dev, n_draws, unknown)
            success = adv_pred != y_dev if tl_dev is None else adv_pred == tl_dev
        unknown = unknown & ~success
        norm = self.norms[0] if not hasattr(self, "norm") else Norm.parse(self.norm)
        norms = norm_of(x_adv - x_dev, norm)
        cost = Cost(queries=target.counter.used - q0, gradients=ctx.gradients, seconds=time.perf_counter() - t0)
        return EvasionResult(
            attack=self.name, params=self.get_params(), cost=cost,
            x_adv=_as_input_kind(x_adv.to(xt.dtype), x), y=_as_input_kind(yt, x),
            success=_as_input_kind(success, x), clean_correct=_as_input_kind(clean_pred == y_dev, x),
            adv_pred=_as_input_kind(adv_pred, x), norms=_as_input_kind(norms, x),
            target_labels=None if tl is None else _as_input_kind(tl, x), norm=norm.value, extras=dict(ctx.notes),
            unknown=_as_input_kind(unknown, x), draws=n_draws,
            goal_fraction=None if goal_fraction is None else _as_input_kind(goal_fraction, x),
        )

    @abstractmethod
    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attack one batch. Returns ``(x_adv, clean_pred, adv_pred)``, all on the model's device."""


def _randomness(target: Target, x: torch.Tensor, draws: int | None) -> tuple[str | None, int]:
    """How the model's randomness is known (``"declared"``, ``"detected"`` or None) and the draws per prediction."""
    if draws is not None:
        return ("declared", draws) if draws > 1 else (None, 1)
    try:
        found = detect_randomized(judge_target(target), x)
    except QueryBudgetExceeded:
        found = False
    return ("detected", DEFAULT_DRAWS) if found else (None, 1)


def _rescore(
    ctx: BatchContext, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, tl: torch.Tensor | None, draws: int,
    unknown: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Majority predictions over ``draws`` fresh draws of the clean inputs and the final candidates.

    Where the clean majority already meets the goal the clean input is the adversarial example (zero perturbation).
    Examples the budget leaves unscored stay at the true class and become unknown.
    """
    judge = judge_target(ctx.target)
    n = x.shape[0]
    clean_pred, adv_pred = y.clone(), y.clone()
    frac = torch.zeros(n, dtype=torch.float32, device=x.device)
    step = chunk_size(x, draws)
    for s in range(0, n, step):
        sl = slice(s, s + step)
        try:
            cv = majority_votes(judge, x[sl], draws)
            av = majority_votes(judge, x_adv[sl], draws)
        except QueryBudgetExceeded:
            unknown[s:] = True
            ctx.notes["budget_exhausted"] = True
            break
        t = None if tl is None else tl[sl]
        cp, ap = vote(cv, y[sl], t), vote(av, y[sl], t)
        already = cp != y[sl] if t is None else cp == t

        def share(c: torch.Tensor, t: torch.Tensor | None = t, sl: slice = sl) -> torch.Tensor:
            hit = draws - c.gather(1, y[sl][:, None])[:, 0] if t is None else c.gather(1, t[:, None])[:, 0]
            return hit.float() / draws

        clean_pred[sl] = cp
        adv_pred[sl] = torch.where(already, cp, ap)
        frac[sl] = torch.where(already, share(cv), share(av))
        x_adv[sl] = torch.where(already.view(-1, *[1] * (x.ndim - 1)), x[sl], x_adv[sl])
    return x_adv, clean_pred, adv_pred, frac, unknown


def _generator(gen: torch.Generator | None, seed: int | None, device: torch.device) -> torch.Generator:
    if gen is not None:
        if gen.device.type != device.type:
            raise ParameterError(
                f"the generator lives on {gen.device} but the model on {device}; create it with "
                f"torch.Generator(device='{device}')."
            )
        return gen
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g


def _batches(
    x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, size: int, dev: torch.device, dtype: torch.dtype
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    for s in range(0, x.shape[0], size):
        yield (
            x[s : s + size].to(dev, dtype),
            y[s : s + size].to(dev),
            None if t is None else t[s : s + size].to(dev),
        )


def _as_input_kind(v: torch.Tensor, ref: Any) -> Any:
    if isinstance(ref, np.ndarray):
        return v.detach().cpu().numpy()
    if isinstance(ref, torch.Tensor):
        return v.detach().to(ref.device)
    return v.detach().cpu()


def attack_names() -> list[str]:
    """Names of the evasion attacks (``EvasionAttack.name``), e.g. ``["fgsm", "pgd", ...]``.

    An attack registers itself when its class is defined. The built-in ones are all defined by then: Python runs
    ``sparring/attacks/__init__.py``, which imports :mod:`sparring.attacks.evasion`, before this module can be used.
    """
    return sorted(_ATTACKS)


def get_attack(name: str) -> type[EvasionAttack]:
    """The evasion attack class registered under ``name``; :class:`ParameterError` listing the names otherwise."""
    names = attack_names()
    try:
        return _ATTACKS[name]
    except KeyError:
        raise ParameterError(f"unknown attack {name!r}; choose one of {', '.join(names)}.") from None
