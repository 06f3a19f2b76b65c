"""The classic black-box pipeline: steal a surrogate, craft evasion examples on it, send them to the victim.

Papernot, McDaniel, Goodfellow, Jha, Celik, Swami, "Practical Black-Box Attacks against Machine Learning"
(AsiaCCS 2017), §5: adversarial examples crafted white-box on a substitute trained through the victim's API
*transfer* to the victim. The baseline that shows transfer is more than chance is random noise of the same size:
for every example, a random direction scaled to the norm of that example's adversarial perturbation.

Threat model: black-box victim (labels suffice: ``3·n`` victim queries for clean, adversarial and noisy inputs);
white-box surrogate; untargeted; the surrogate attack's norm and budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from sparring.attacks.base import EvasionAttack
from sparring.attacks.norms import Norm, norm_of
from sparring.attacks.result import AttackResult, Cost
from sparring.errors import ParameterError
from sparring.targets.base import Target

__all__ = ["TransferResult", "transfer_attack"]


@dataclass
class TransferResult(AttackResult):
    """Transfer of surrogate-crafted examples to the victim, against same-norm random noise.

    Rates are over the examples the victim classifies correctly when clean (``n_correct`` of them).

    Attributes:
        transfer_rate: fraction of those the adversarial examples make the victim misclassify.
        noise_rate: fraction that random noise of the same per-example norm makes it misclassify.
        surrogate_success: white-box success rate on the surrogate itself.
        x_adv, x_noise: the inputs sent (tensors, on the victim's device).
        norms: per-example perturbation norms (identical for both, before clipping to the input bounds).
    """

    transfer_rate: float = 0.0
    noise_rate: float = 0.0
    surrogate_success: float = 0.0
    n_correct: int = 0
    x_adv: Any = None
    x_noise: Any = None
    norms: Any = None
    norm: str = "linf"

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        s.update(transfer_rate=self.transfer_rate, noise_rate=self.noise_rate,
                 surrogate_success=self.surrogate_success, n_correct=self.n_correct, norm=self.norm)
        return s


def transfer_attack(
    surrogate: Target, victim: Target, x: torch.Tensor | Any, y: torch.Tensor | Any, *,
    attack: EvasionAttack | None = None, seed: int = 0,
) -> TransferResult:
    """Craft ``attack`` (default PGD, L∞ eps 0.1, 20 steps) on ``surrogate`` and measure transfer to ``victim``.

    Args:
        surrogate: a white-box target (e.g. ``KnockoffNets(...)(victim).surrogate``) with the victim's spec shape.
        victim: the black-box model (any access; only labels are read).
        x, y: inputs and true labels.
        attack: an evasion attack run on the surrogate.
        seed: seed of the random-noise baseline.

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.extraction import KnockoffNets
        >>> victim, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> stolen = KnockoffNets(budget=300, rounds=1, epochs=10)(victim, data.x_train).surrogate
        >>> res = transfer_attack(stolen, victim, data.x_test[:100], data.y_test[:100])
        >>> res.transfer_rate > res.noise_rate
        True
    """
    if tuple(surrogate.spec.shape) != tuple(victim.spec.shape) or surrogate.spec.n_classes != victim.spec.n_classes:
        raise ParameterError(
            f"the surrogate takes {surrogate.spec.shape} with {surrogate.spec.n_classes} classes but the victim "
            f"{victim.spec.shape} with {victim.spec.n_classes}; steal a surrogate with the victim's spec first."
        )
    if attack is None:
        from sparring.attacks.evasion.pgd import PGD

        attack = PGD(eps=0.1, steps=20)
    t0, q0 = time.perf_counter(), victim.counter.used
    xt, yt = victim.spec.validate(x, y)
    assert yt is not None
    dev = victim.device
    xt, yt = xt.to(dev), yt.to(dev)
    adv = attack(surrogate, xt, yt)
    x_adv = torch.as_tensor(adv.x_adv).to(dev, xt.dtype)
    norm = Norm.parse(adv.norm)
    delta = x_adv - xt
    size = norm_of(delta, norm)
    gen = torch.Generator(device=dev).manual_seed(seed)
    x_noise = _same_norm_noise(xt, size, norm, gen, victim)
    clean = victim.query_labels(xt) == yt
    fooled_adv = (victim.query_labels(x_adv) != yt) & clean
    fooled_noise = (victim.query_labels(x_noise) != yt) & clean
    n_correct = int(clean.sum())
    denom = max(n_correct, 1)
    return TransferResult(
        attack=f"transfer-{adv.attack}", params={"surrogate_attack": adv.params, "seed": seed},
        cost=Cost(queries=victim.counter.used - q0, gradients=adv.cost.gradients, seconds=time.perf_counter() - t0),
        transfer_rate=int(fooled_adv.sum()) / denom, noise_rate=int(fooled_noise.sum()) / denom,
        surrogate_success=adv.success_rate, n_correct=n_correct, x_adv=x_adv, x_noise=x_noise, norms=size,
        norm=norm.value,
    )


def _same_norm_noise(
    x: torch.Tensor, size: torch.Tensor, norm: Norm, gen: torch.Generator, victim: Target
) -> torch.Tensor:
    """Random perturbations with ``size[i]`` as their ``norm`` (random signs for L∞, Gaussian direction for L2),
    clipped to the input bounds like the adversarial examples."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    if norm is Norm.LINF:
        direction = torch.randint(0, 2, x.shape, generator=gen, device=x.device).to(x.dtype) * 2 - 1
    else:
        g = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        direction = g / norm_of(g, Norm.L2).clamp_min(1e-12).reshape(shape)
    lo, hi = victim.spec.bounds_tensors(x.device, x.dtype)
    return torch.max(torch.min(x + direction * size.reshape(shape), hi), lo)
