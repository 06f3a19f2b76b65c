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
from sparring.attacks.result import Cost, EvasionResult
from sparring.errors import ParameterError
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
    ) -> EvasionResult:
        """Attack ``x`` (true labels ``y``) on ``target``.

        Args:
            target: the model under test.
            x: inputs ``(N, *spec.shape)`` within the spec's bounds (tensor or numpy).
            y: true labels ``(N,)``.
            target_labels: for a targeted attack, the class each example should be pushed to.
            generator: source of randomness; default a fresh generator seeded with the attack's ``seed``.
            progress: show a progress bar over batches.

        Returns:
            An :class:`EvasionResult`; ``x_adv`` is the same kind (numpy/tensor) and on the same device as ``x``.
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
        dev = target.device
        dtype = getattr(target, "dtype", torch.float32)
        gen = _generator(generator, getattr(self, "seed", 0), dev)
        lower, upper = target.spec.bounds_tensors(dev, dtype)
        ctx = BatchContext(target=target, lower=lower, upper=upper, generator=gen)
        q0, t0 = target.counter.used, time.perf_counter()
        xs, clean, advp = [], [], []
        for xb, yb, tb in progress_bar(
            _batches(xt, yt, tl, target.batch_size, dev, dtype),
            total=-(-xt.shape[0] // target.batch_size), description=self.name, enabled=progress,
        ):
            xa, cp, ap = self._run_batch(ctx, xb, yb, tb)
            xs.append(xa)
            clean.append(cp)
            advp.append(ap)
        x_adv = torch.cat(xs)
        clean_pred, adv_pred = torch.cat(clean), torch.cat(advp)
        y_dev = yt.to(dev)
        success = adv_pred != y_dev if tl is None else adv_pred == tl.to(dev)
        norm = self.norms[0] if not hasattr(self, "norm") else Norm.parse(self.norm)
        norms = norm_of(x_adv - xt.to(dev, dtype), norm)
        cost = Cost(queries=target.counter.used - q0, gradients=ctx.gradients, seconds=time.perf_counter() - t0)
        return EvasionResult(
            attack=self.name, params=self.get_params(), cost=cost,
            x_adv=_as_input_kind(x_adv.to(xt.dtype), x), y=_as_input_kind(yt, x),
            success=_as_input_kind(success, x), clean_correct=_as_input_kind(clean_pred == y_dev, x),
            adv_pred=_as_input_kind(adv_pred, x), norms=_as_input_kind(norms, x),
            target_labels=None if tl is None else _as_input_kind(tl, x), norm=norm.value, extras=dict(ctx.notes),
        )

    @abstractmethod
    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attack one batch. Returns ``(x_adv, clean_pred, adv_pred)``, all on the model's device."""


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
    """Names of the evasion attacks (``EvasionAttack.name``), e.g. ``["fgsm", "pgd", ...]``."""
    import sparring.attacks.evasion  # noqa: F401  (defines and so registers the built-in attacks)

    return sorted(_ATTACKS)


def get_attack(name: str) -> type[EvasionAttack]:
    """The evasion attack class registered under ``name``; :class:`ParameterError` listing the names otherwise."""
    names = attack_names()
    try:
        return _ATTACKS[name]
    except KeyError:
        raise ParameterError(f"unknown attack {name!r}; choose one of {', '.join(names)}.") from None
