"""Dirty-label backdoors: stamp a trigger on a share of the training set and relabel those examples.

* :class:`BadNets` (Gu, Dolan-Gavitt, Garg 2017, "BadNets: Identifying Vulnerabilities in the Machine Learning
  Model Supply Chain"): a small pixel patch;
* :class:`Blended` (Chen, Liu, Li, Lu, Song 2017, "Targeted Backdoor Attacks on Deep Learning Systems Using Data
  Poisoning", blended injection strategy): a key pattern blended over the whole image;
* :class:`FeatureBackdoor`: the tabular analogue, a few features set to fixed values.

Threat model: the attacker controls a share of the training examples (inputs and labels), not the training code;
all-to-one: every triggered input should be classified as ``target_class``. Examples are drawn uniformly from the
examples not already in the target class and replaced in place.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sparring.attacks.poisoning import _common as C
from sparring.attacks.poisoning.result import PoisonResult
from sparring.attacks.poisoning.triggers import Trigger, blend_trigger, feature_trigger, patch_trigger
from sparring.attacks.result import Cost
from sparring.targets.spec import InputSpec

__all__ = ["BadNets", "Blended", "FeatureBackdoor", "plant_trigger"]


def plant_trigger(
    trigger: Trigger, x: Any, y: Any, *, spec: InputSpec, poison_share: float, target_class: int,
    generator: torch.Generator | None = None, seed: int = 0, attack: str = "backdoor",
    params: dict[str, Any] | None = None,
) -> PoisonResult:
    """Stamp ``trigger`` on ``round(poison_share * N)`` non-target-class examples and relabel them
    ``target_class``. The building block of every dirty-label backdoor here."""
    t0 = time.perf_counter()
    C.check_share(poison_share)
    tc = C.check_class(target_class, spec)
    xt, yt = C.validate(spec, x, y)
    gen = C.generator(generator, seed)
    k = max(1, round(poison_share * xt.shape[0]))
    idx = C.choose(torch.nonzero(yt != tc).reshape(-1).cpu(), k, gen, attack)
    xp, yp = xt.clone(), yt.clone()
    dev_idx = idx.to(xt.device)
    xp[dev_idx] = trigger.apply(xt[dev_idx]).to(xt.dtype)
    yp[dev_idx] = tc
    return PoisonResult(attack=attack, params=dict(params or {}), cost=Cost(seconds=time.perf_counter() - t0),
                        x=C.like(xp, x), y=C.like(yp, x if isinstance(x, np.ndarray) else yt), indices=idx,
                        trigger=trigger, target_class=tc)


class BadNets:
    """BadNets patch backdoor (Gu et al. 2017).

    Args:
        poison_share: fraction of the training set to poison (e.g. 0.05).
        target_class: the class triggered inputs should be sent to.
        size, position, pattern, opacity: the patch (see :func:`~sparring.attacks.poisoning.patch_trigger`).
        seed: seed of the default generator (which examples are poisoned).

    Example:
        >>> from sparring.attacks.poisoning import BadNets
        >>> from sparring.data.datasets import load_digits
        >>> ds = load_digits(8)
        >>> res = BadNets(poison_share=0.05, target_class=0, size=2)(ds.x_train, ds.y_train, spec=ds.spec)
        >>> res.n_poisoned, int(res.y[res.indices].unique())
        (67, 0)
    """

    name = "badnets"

    def __init__(self, *, poison_share: float = 0.05, target_class: int = 0, size: int = 3,
                 position: str | tuple[int, int] = "bottom-right", pattern: str = "checkerboard",
                 opacity: float = 1.0, seed: int = 0) -> None:
        self.poison_share = poison_share
        self.target_class = target_class
        self.size = size
        self.position = position
        self.pattern = pattern
        self.opacity = opacity
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return dict(vars(self))

    def trigger(self, spec: InputSpec) -> Trigger:
        return patch_trigger(spec, size=self.size, position=self.position, pattern=self.pattern,
                             opacity=self.opacity)

    def __call__(self, x: Any, y: Any, *, spec: InputSpec, generator: torch.Generator | None = None) -> PoisonResult:
        return plant_trigger(self.trigger(spec), x, y, spec=spec, poison_share=self.poison_share,
                             target_class=self.target_class, generator=generator, seed=self.seed,
                             attack=self.name, params=self.get_params())


class Blended:
    """Blended-injection backdoor (Chen et al. 2017): ``x' = (1 - alpha) x + alpha k`` for a key image ``k``.

    Args:
        poison_share, target_class, seed: as for :class:`BadNets`.
        alpha: blend ratio of the key (0.1-0.2 are typical).
        pattern: the key image (default: random noise from ``seed``).
    """

    name = "blended"

    def __init__(self, *, poison_share: float = 0.05, target_class: int = 0, alpha: float = 0.15,
                 pattern: torch.Tensor | np.ndarray | None = None, seed: int = 0) -> None:
        self.poison_share = poison_share
        self.target_class = target_class
        self.alpha = alpha
        self.pattern = pattern
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {**vars(self), "pattern": "random" if self.pattern is None else "given"}

    def trigger(self, spec: InputSpec) -> Trigger:
        return blend_trigger(spec, alpha=self.alpha, pattern=self.pattern, seed=self.seed)

    def __call__(self, x: Any, y: Any, *, spec: InputSpec, generator: torch.Generator | None = None) -> PoisonResult:
        return plant_trigger(self.trigger(spec), x, y, spec=spec, poison_share=self.poison_share,
                             target_class=self.target_class, generator=generator, seed=self.seed,
                             attack=self.name, params=self.get_params())


class FeatureBackdoor:
    """Tabular backdoor: a few features set to fixed values act as the trigger (BadNets' idea on feature vectors).

    Args:
        features: indices of the trigger features.
        values: their values (default: each feature's upper bound from the spec, an extreme but valid value).
        poison_share, target_class, seed: as for :class:`BadNets`.
    """

    name = "feature-backdoor"

    def __init__(self, *, features: Sequence[int] = (0,), values: Sequence[float] | None = None,
                 poison_share: float = 0.05, target_class: int = 0, seed: int = 0) -> None:
        self.features = features
        self.values = values
        self.poison_share = poison_share
        self.target_class = target_class
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {**vars(self), "features": list(self.features),
                "values": None if self.values is None else list(self.values)}

    def trigger(self, spec: InputSpec) -> Trigger:
        return feature_trigger(spec, features=self.features, values=self.values)

    def __call__(self, x: Any, y: Any, *, spec: InputSpec, generator: torch.Generator | None = None) -> PoisonResult:
        return plant_trigger(self.trigger(spec), x, y, spec=spec, poison_share=self.poison_share,
                             target_class=self.target_class, generator=generator, seed=self.seed,
                             attack=self.name, params=self.get_params())
