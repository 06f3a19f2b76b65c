"""Label flipping: the simplest poisoning, inputs untouched, labels changed (Biggio, Nelson, Laskov 2012 study
its effect on SVMs; Xiao, Xiao, Eckert 2012 the random and adversarial variants).

* random: a share of the training set gets a uniformly drawn wrong label;
* class-targeted: a share of ``source_class`` examples is relabelled ``target_class`` (the model learns to confuse
  the two, e.g. "malignant" read as "benign").
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import torch

from sparring.attacks.poisoning import _common as C
from sparring.attacks.poisoning.result import PoisonResult
from sparring.attacks.result import Cost
from sparring.errors import ParameterError
from sparring.targets.spec import InputSpec

__all__ = ["LabelFlip"]


class LabelFlip:
    """Flip labels of a share of the training set.

    Args:
        poison_share: fraction to flip: of the whole training set (random mode) or of ``source_class``'s
            examples (targeted mode).
        mode: ``"random"`` or ``"targeted"``.
        source_class, target_class: for targeted mode, relabel ``source_class`` examples as ``target_class``.
        seed: seed of the default generator.

    Example:
        >>> import torch
        >>> from sparring.attacks.poisoning import LabelFlip
        >>> from sparring.data.datasets import load_breast_cancer
        >>> ds = load_breast_cancer()
        >>> res = LabelFlip(poison_share=0.4, mode="targeted", source_class=0, target_class=1)(
        ...     ds.x_train, ds.y_train, spec=ds.spec)
        >>> bool((res.y[res.indices] == 1).all()), bool((ds.y_train[res.indices] == 0).all())
        (True, True)
    """

    name = "label-flip"

    def __init__(self, *, poison_share: float = 0.1, mode: Literal["random", "targeted"] = "random",
                 source_class: int | None = None, target_class: int | None = None, seed: int = 0) -> None:
        self.poison_share = poison_share
        self.mode = mode
        self.source_class = source_class
        self.target_class = target_class
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return dict(vars(self))

    def __call__(self, x: Any, y: Any, *, spec: InputSpec, generator: torch.Generator | None = None) -> PoisonResult:
        t0 = time.perf_counter()
        C.check_share(self.poison_share)
        _, yt = C.validate(spec, x, y)
        gen = C.generator(generator, self.seed)
        yp = yt.clone().cpu()
        if self.mode == "random":
            idx = C.choose(torch.arange(len(yp)), max(1, round(self.poison_share * len(yp))), gen, "label flipping")
            shift = torch.randint(1, spec.n_classes, (idx.numel(),), generator=gen)
            yp[idx] = (yp[idx] + shift) % spec.n_classes  # uniform over the other classes
            tc = None
        elif self.mode == "targeted":
            src = C.check_class(self.source_class, spec, "source_class")
            tc = C.check_class(self.target_class, spec, "target_class")
            if src == tc:
                raise ParameterError(f"source_class and target_class are both {src}; pick two different classes.")
            pool = torch.nonzero(yp == src).reshape(-1)
            idx = C.choose(pool, max(1, round(self.poison_share * pool.numel())), gen, "targeted label flipping")
            yp[idx] = tc
        else:
            raise ParameterError(f"mode must be 'random' or 'targeted'; got {self.mode!r}.")
        y_out = yp.numpy() if isinstance(x, np.ndarray) else yp.to(yt.device)
        return PoisonResult(attack=self.name, params=self.get_params(), cost=Cost(seconds=time.perf_counter() - t0),
                            x=x, y=y_out, indices=idx, trigger=None, target_class=tc)
