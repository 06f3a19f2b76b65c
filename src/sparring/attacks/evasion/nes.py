"""NES (Ilyas, Engstrom, Athalye, Lin 2018): gradient-free, score-based, L∞ and L2."""

from __future__ import annotations

from typing import ClassVar

import torch

from sparring.attacks.base import BatchContext, EvasionAttack
from sparring.attacks.evasion._zeroth import Search, check_search_params, default_radius, run_search, signed_step
from sparring.attacks.losses import get_loss
from sparring.attacks.norms import Norm
from sparring.targets.base import Target
from sparring.targets.spec import Access

__all__ = ["NES"]


class NES(EvasionAttack):
    r"""NES attack (Ilyas, Engstrom, Athalye, Lin 2018, "Black-box Adversarial Attacks with Limited Queries and
    Information", Algorithm 1: natural evolution strategies gradient estimate, then projected gradient ascent).

    Threat model: score-based black box (``Access.SCORES``; never gradients), untargeted or targeted, L∞ or L2
    budget ``eps`` in raw input space; like SPSA it sees through gradient masking, since it only compares losses.

    Each iteration draws ``samples / 2`` Gaussian directions ``u`` and queries the antithetic pairs ``x ± σu``
    (the paper's variance reduction), estimates ``g = 1/(2σp) Σ_i (L(x + σu_i) − L(x − σu_i)) u_i`` for the margin
    loss, and takes a projected step ``lr·sign(g)`` (L∞) or ``lr·g/‖g‖₂`` (L2). An example is broken when its
    margin is strictly positive and then leaves the batch.

    Defaults: the paper's 50 samples per estimate; ``sigma = sigma_fraction · eps`` per coordinate (L2:
    ``· eps/√d``) and ``lr = lr_fraction · eps`` (L2: ``lr_fraction · eps``, a step of that L2 length). The paper's
    σ = 0.001 on ImageNet is tuned for smooth models; against input quantisation a probe near the budget is needed,
    so the default is a quarter of eps (the audit's masking retry uses half).

    Cost: one query per example for the clean prediction, then per iteration and unbroken example ``samples`` for
    the estimate and one for the new point, within ``n_queries``. An exhausted query budget stops the attack before
    sending; unbroken examples are then unfinished (``result.extras["budget_exhausted"]``), never robust.

    Args:
        eps: budget (radius of the norm ball).
        norm: ``"linf"`` or ``"l2"``.
        n_queries: queries per example.
        samples: queries per gradient estimate (antithetic pairs: even numbers).
        sigma_fraction: search variance σ as a fraction of ``eps`` (per coordinate).
        lr_fraction: step size as a fraction of ``eps``.
        loss: ``"margin"`` or ``"ce"``.
        seed: seed of the default generator.

    Shape:
        x: ``(N, *spec.shape)``, y: ``(N,)``; ``result.x_adv`` as x.

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.evasion import NES
        >>> target, data = zoo.load("digits-mlp"), zoo.data("digits-mlp")
        >>> r = NES(eps=0.2, n_queries=500)(target, data.x_test[:32], data.y_test[:32])
        >>> r.robust_accuracy < r.clean_accuracy
        True
    """

    name: ClassVar[str] = "nes"
    needs: ClassVar[Access] = Access.SCORES
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)

    def __init__(
        self,
        *,
        eps: float,
        norm: str | Norm = "linf",
        n_queries: int = 2000,
        samples: int = 50,
        sigma_fraction: float = 0.25,
        lr_fraction: float = 0.2,
        loss: str = "margin",
        seed: int | None = 0,
    ) -> None:
        self.eps = eps
        self.norm = norm
        self.n_queries = n_queries
        self.samples = samples
        self.sigma_fraction = sigma_fraction
        self.lr_fraction = lr_fraction
        self.loss = loss
        self.seed = seed

    def _check_params(self, target: Target) -> None:
        check_search_params(target.spec, eps=self.eps, norm=self.norm, n_queries=self.n_queries, samples=self.samples,
                            loss=self.loss,
                            fractions={"sigma_fraction": self.sigma_fraction, "lr_fraction": self.lr_fraction})

    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        norm, eps, d = Norm.parse(self.norm), float(self.eps), x[0].numel()
        sigma = default_radius(norm, eps, d, float(self.sigma_fraction)) if eps > 0 else 1e-6
        lr = float(self.lr_fraction) * eps
        s = Search(self.name, norm, eps, self.n_queries, self.samples, sigma, "gaussian", get_loss(self.loss))
        return run_search(ctx, s, x, y, target_labels, signed_step(lr))
