"""Clean-label backdoor (Turner, Tsipras, Madry 2019, "Label-Consistent Backdoor Attacks").

Threat model: the attacker adds triggered examples of the target class *with their correct labels* (so a human
reviewing labels sees nothing wrong). To force the model to rely on the trigger, the images are first made hard
to classify: an untargeted L∞ PGD perturbation that maximises the surrogate model's loss (Turner et al., section
4.2; all steps run, the last iterate kept) removes their natural features; then the trigger is stamped on. At
test time the trigger alone sends inputs to the target class.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from sparring.attacks.poisoning import _common as C
from sparring.attacks.poisoning.result import PoisonResult
from sparring.attacks.poisoning.triggers import Trigger, patch_trigger
from sparring.attacks.result import Cost
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.torch import TorchTarget

__all__ = ["CleanLabel"]


class CleanLabel:
    """Label-consistent backdoor: adversarially perturbed, triggered target-class images, labels kept.

    Args:
        poison_share: fraction of the whole training set to poison; all are drawn from ``target_class`` (so at most
            that class's share).
        target_class: the class the trigger should send inputs to.
        eps: L∞ budget of the adversarial perturbation, in raw input space (Turner et al. use 8/255-16/255 on
            CIFAR-10; digits need more, e.g. 0.3).
        steps: PGD iterations.
        size, position, opacity: the patch trigger (see :func:`~sparring.attacks.poisoning.patch_trigger`);
            ``opacity`` < 1 is Turner et al.'s reduced-amplitude trigger.
        seed: seed of the default generator (which examples, PGD's random start).
    """

    name = "clean-label"

    def __init__(self, *, poison_share: float = 0.05, target_class: int = 0, eps: float = 0.3, steps: int = 20,
                 size: int = 3, position: str | tuple[int, int] = "bottom-right", opacity: float = 1.0,
                 seed: int = 0) -> None:
        self.poison_share = poison_share
        self.target_class = target_class
        self.eps = eps
        self.steps = steps
        self.size = size
        self.position = position
        self.opacity = opacity
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return dict(vars(self))

    def trigger(self, target: Target) -> Trigger:
        return patch_trigger(target.spec, size=self.size, position=self.position, opacity=self.opacity)

    def __call__(self, surrogate: Target, x: Any, y: Any, *, generator: torch.Generator | None = None) -> PoisonResult:
        """Poison ``(x, y)`` using ``surrogate`` (a model trained on clean data of the same task) for the
        adversarial step."""
        t0 = time.perf_counter()
        spec = surrogate.spec
        C.check_share(self.poison_share)
        tc = C.check_class(self.target_class, spec)
        if not (isinstance(self.eps, int | float) and 0 <= self.eps <= spec.range_width):
            raise ParameterError(f"eps must be in [0, {spec.range_width:g}] (raw input units); got {self.eps!r}.")
        xt, yt = C.validate(spec, x, y)
        gen = C.generator(generator, self.seed)
        pool = torch.nonzero(yt.cpu() == tc).reshape(-1)
        k = max(1, round(self.poison_share * xt.shape[0]))
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ParameterError(f"steps must be a positive integer; got {self.steps!r}.")
        if k > pool.numel():
            raise ParameterError(
                f"a clean-label attack poisons target-class examples only: {k} asked for, class {tc} has "
                f"{pool.numel()}. Lower poison_share to at most {pool.numel() / xt.shape[0]:.3f}."
            )
        idx = C.choose(pool, k, gen, "clean-label poisoning")
        trig = self.trigger(surrogate)
        q0 = surrogate.counter.used
        x_adv = _max_loss_pgd(surrogate, xt[idx], yt[idx], float(self.eps), int(self.steps))
        xp = xt.clone()
        xp[idx.to(xt.device)] = trig.apply(x_adv.to(xt.device)).to(xt.dtype)
        n_grad = surrogate.counter.used - q0
        cost = Cost(queries=n_grad, gradients=n_grad, seconds=time.perf_counter() - t0)
        return PoisonResult(attack=self.name, params=self.get_params(), cost=cost, x=C.like(xp, x),
                            y=y if isinstance(y, np.ndarray | torch.Tensor) else yt, indices=idx, trigger=trig,
                            target_class=tc)


def _max_loss_pgd(target: Target, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """L∞ PGD that runs all ``steps`` and keeps the last iterate (Turner et al. maximise the loss: the image should
    lose its natural features, not merely cross the decision boundary). Starts at ``x``; step ``2.5 eps / steps``."""
    if not isinstance(target, TorchTarget):
        raise ParameterError(f"the clean-label attack needs gradients of a surrogate TorchTarget; got "
                             f"{type(target).__name__}.")
    fwd = target.differentiable("CleanLabel")
    lo, hi = target.spec.bounds_tensors(target.device, target.dtype)
    alpha = 2.5 * eps / steps
    out = []
    with target.frozen():
        for s in range(0, x.shape[0], target.batch_size):
            x0 = x[s : s + target.batch_size].to(target.device, target.dtype)
            yb = y[s : s + target.batch_size].to(target.device)
            xa = x0.clone()
            for _ in range(steps):
                xa.requires_grad_(True)
                (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(fwd(xa), yb, reduction="sum"), xa)
                with torch.no_grad():
                    xa = torch.minimum(torch.maximum(xa + alpha * g.sign(), x0 - eps), x0 + eps)
                    xa = torch.minimum(torch.maximum(xa, lo), hi)
            out.append(xa.detach())
    return torch.cat(out)
