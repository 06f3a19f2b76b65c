"""SPSA (Uesato, O'Donoghue, van den Oord, Kohli 2018): gradient-free, score-based, L∞ and L2."""

from __future__ import annotations

from typing import ClassVar

import torch

from sparring.attacks.base import BatchContext, EvasionAttack
from sparring.attacks.evasion._zeroth import Search, adam, check_search_params, default_radius, run_search
from sparring.attacks.losses import get_loss
from sparring.attacks.norms import Norm
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access

__all__ = ["SPSA"]


def check_positive(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value) > 0:
        raise ParameterError(f"{name} must be a positive number or None (the default); got {value!r}.")
    return float(value)


class SPSA(EvasionAttack):
    r"""SPSA attack (Uesato, O'Donoghue, van den Oord, Kohli 2018, "Adversarial Risk and the Dangers of Evaluating
    Against Weak Attacks", Algorithm 1; Spall 1992's simultaneous perturbation estimate).

    Threat model: score-based black box (``Access.SCORES``; never gradients), untargeted or targeted, L∞ or L2
    budget ``eps`` in raw input space. Because it only compares the loss at pairs of nearby points, it is immune to
    gradient masking: quantised, thresholded or randomized models give it a usable estimate where their gradient
    is zero, undefined or noise (the paper's point, section 4).

    Each iteration estimates the gradient of the margin loss with ``samples`` queries along ``samples / 2``
    Rademacher directions ``u`` (antithetic pairs ``x ± delta·u``),
    ``g = mean_i (L(x + δu_i) − L(x − δu_i)) / (2δ) · u_i``, takes an Adam step of learning rate ``lr`` on the
    perturbation and projects onto the ``eps``-ball and the input bounds. An example is broken when its margin is
    strictly positive and then leaves the batch (early stop).

    Defaults follow the paper's ratios on [0, 1] images (δ = 0.01 and Adam lr 0.01 at eps 8/255, i.e. about a
    third of the budget): ``delta = delta_fraction · eps`` per coordinate (L2: ``· eps/√d``) and
    ``lr = lr_fraction · eps`` (L2: ``· eps/√d``). A probe size close to the budget sees through input quantisation
    whose step is below ``eps``; the audit's masking retry uses ``delta_fraction=0.5``.

    Cost: one query per example for the clean prediction, then per iteration and unbroken example ``samples`` for
    the estimate and one for the new point, within ``n_queries`` per example. When the target's query budget would
    be crossed the attack stops before sending; examples not broken by then are unfinished
    (``result.extras["budget_exhausted"]``), never robust.

    Args:
        eps: budget (radius of the norm ball).
        norm: ``"linf"`` or ``"l2"``.
        n_queries: queries per example (all iterations together).
        samples: queries per gradient estimate (pairs of antithetic directions: even numbers).
        delta_fraction: probe size as a fraction of ``eps`` (per coordinate).
        lr_fraction: Adam learning rate as a fraction of ``eps`` (per coordinate).
        loss: ``"margin"`` (the paper's logit margin) or ``"ce"``.
        seed: seed of the default generator; pass ``generator=`` at call time to override.

    Shape:
        x: ``(N, *spec.shape)``, y: ``(N,)``; ``result.x_adv`` as x.

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.evasion import SPSA
        >>> target, data = zoo.load("digits-mlp"), zoo.data("digits-mlp")
        >>> r = SPSA(eps=0.2, n_queries=500)(target, data.x_test[:32], data.y_test[:32])
        >>> r.robust_accuracy < r.clean_accuracy
        True
    """

    name: ClassVar[str] = "spsa"
    needs: ClassVar[Access] = Access.SCORES
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)

    def __init__(
        self,
        *,
        eps: float,
        norm: str | Norm = "linf",
        n_queries: int = 2000,
        samples: int = 64,
        delta_fraction: float = 0.33,
        lr_fraction: float = 0.33,
        loss: str = "margin",
        seed: int | None = 0,
    ) -> None:
        self.eps = eps
        self.norm = norm
        self.n_queries = n_queries
        self.samples = samples
        self.delta_fraction = delta_fraction
        self.lr_fraction = lr_fraction
        self.loss = loss
        self.seed = seed

    def _check_params(self, target: Target) -> None:
        check_search_params(target.spec, eps=self.eps, norm=self.norm, n_queries=self.n_queries, samples=self.samples,
                            loss=self.loss,
                            fractions={"delta_fraction": self.delta_fraction, "lr_fraction": self.lr_fraction})

    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        norm, eps, d = Norm.parse(self.norm), float(self.eps), x[0].numel()
        if eps == 0:
            radius, lr = 1e-6, 0.0
        else:
            radius = default_radius(norm, eps, d, float(self.delta_fraction))
            lr = default_radius(norm, eps, d, float(self.lr_fraction))
        s = Search(self.name, norm, eps, self.n_queries, self.samples, radius, "rademacher", get_loss(self.loss))
        return run_search(ctx, s, x, y, target_labels, adam(lr))
