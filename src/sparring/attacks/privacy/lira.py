"""The Likelihood Ratio Attack, LiRA (Carlini, Chien, Nasr, Song, Terzis, Tramèr 2022, "Membership Inference
Attacks From First Principles", Algorithm 1).

Membership is a hypothesis test per example. Shadow models are trained like the target on random halves of the
attacker's data pool, assigned as in the reference code so that each example is *in* the training set of exactly
half of them and *out* of the rest (:func:`~sparring.attacks.privacy.shadow.balanced_halves`). For
every example the attack fits a Gaussian to the shadow models' logit-scaled confidence ``φ = log(p_y / (1 − p_y))``
(:func:`~sparring.attacks.privacy.shadow.scaled_logit`) when the example was in (``N(μ_in, σ²_in)``) and when
it was out (``N(μ_out, σ²_out)``), and compares the target's ``φ`` under both:

* **online**: ``Λ = log N(φ; μ_in, σ²_in) − log N(φ; μ_out, σ²_out)`` (the likelihood ratio);
* **offline** (only OUT models needed, so shadows can be trained before the examples are known): the one-sided
  test ``Λ = (φ − μ_out) / σ_out`` (a monotone transform of ``Pr[Z < φ]``, ``Z ~ N(μ_out, σ²_out)``).

With few shadow models the paper fits one *global* variance across examples (§VI-B, "fixed variance"); that is the
default below 64 shadow models.

Threat model: score access to the target (one query per example); the attacker holds the candidate examples and
can train models like the target. Not implemented: the paper's query augmentations (mirrored/shifted inputs).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from sparring.attacks.privacy.metrics import MembershipResult
from sparring.attacks.privacy.shadow import (
    Trainer,
    balanced_halves,
    check_membership_inputs,
    log_probs,
    scaled_logit,
)
from sparring.attacks.result import Cost
from sparring.errors import InputSpecError, ParameterError, WorkerLostError
from sparring.executors import Executor, LocalExecutor
from sparring.targets.base import Target
from sparring.targets.spec import Access

__all__ = ["LiRA", "lira_scores"]


def _masked_stats(phi: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example mean, variance (unbiased where possible) and count of ``phi`` over the models in ``mask``."""
    w = mask.double()
    count = w.sum(0)
    mean = (phi * w).sum(0) / count.clamp_min(1)
    var = (((phi - mean) ** 2) * w).sum(0) / (count - 1).clamp_min(1)
    return mean, var, count


def _fill_missing(mean: torch.Tensor, count: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Where no shadow model gave a statistic, use ``ref`` shifted by the average gap seen elsewhere."""
    ok = count > 0
    if bool(ok.all()):
        return mean
    gap = (mean[ok] - ref[ok]).mean() if bool(ok.any()) else torch.zeros((), dtype=mean.dtype)
    return torch.where(ok, mean, ref + gap)


def _gauss_logpdf(v: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((v - mean) ** 2 / var + torch.log(2 * math.pi * var))


def lira_scores(phi_target: torch.Tensor, phi_shadow: torch.Tensor, inside: torch.Tensor, *, online: bool,
                fixed_variance: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """LiRA's test statistic from logit-scaled confidences.

    Args:
        phi_target: ``(n,)`` the target's φ for each example.
        phi_shadow: ``(k, n)`` each shadow model's φ for each example.
        inside: ``(k, n)`` True where the example was in that shadow model's training set.
        online: likelihood ratio of IN vs OUT fits; else the offline one-sided test against OUT only.
        fixed_variance: one variance per population (IN, OUT) across all examples instead of per example.

    Returns:
        The scores (higher = more likely a member) and the fitted parameters (``mu_in``, ``mu_out``, ``var_in``,
        ``var_out``; IN entries only online).
    """
    mu_out, var_out, n_out = _masked_stats(phi_shadow, ~inside)
    mu_in, var_in, n_in = _masked_stats(phi_shadow, inside)
    floor = torch.tensor(1e-6, dtype=torch.float64)
    if fixed_variance:
        var_out = torch.full_like(var_out, float(((phi_shadow - mu_out) ** 2)[~inside].mean()))
        var_in = torch.full_like(var_in, float(((phi_shadow - mu_in) ** 2)[inside].mean()))
    var_out = torch.maximum(var_out, floor)
    var_in = torch.maximum(var_in, floor)
    mu_out = _fill_missing(mu_out, n_out, mu_in)
    if not online:
        return (phi_target - mu_out) / var_out.sqrt(), {"mu_out": mu_out, "var_out": var_out}
    mu_in = _fill_missing(mu_in, n_in, mu_out)
    score = _gauss_logpdf(phi_target, mu_in, var_in) - _gauss_logpdf(phi_target, mu_out, var_out)
    return score, {"mu_in": mu_in, "mu_out": mu_out, "var_in": var_in, "var_out": var_out}


class LiRA:
    """Likelihood Ratio Attack (Carlini et al. 2022), online or offline; see the module docstring.

    Args:
        n_shadow: shadow models to train (online needs ≥ 2 so examples have IN and OUT fits; the paper uses 64-256,
            and a handful already beats the loss threshold on an overfit model).
        online: use IN and OUT fits (True) or OUT fits only (False).
        fixed_variance: one global variance per population; ``None`` (default): when ``n_shadow < 64``.
        seed: seeds the IN/OUT assignment and the shadow models' training (same seed, same assignment).

    Calling ``LiRA(...)(target, x, y, member, train=trainer)`` trains the shadow models on balanced random halves
    of the pool ``(x, y)`` plus ``aux``, the attacker's extra data, if given (every example IN for exactly
    ``n_shadow // 2`` of them), and returns a :class:`~sparring.attacks.privacy.metrics.MembershipResult`.
    """

    name = "lira"
    needs = Access.SCORES

    def __init__(self, *, n_shadow: int = 16, online: bool = True, fixed_variance: bool | None = None,
                 seed: int = 0) -> None:
        self.n_shadow = n_shadow
        self.online = online
        self.fixed_variance = fixed_variance
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {"n_shadow": self.n_shadow, "online": self.online, "fixed_variance": self._fixed(),
                "seed": self.seed}

    def _fixed(self) -> bool:
        return self.n_shadow < 64 if self.fixed_variance is None else bool(self.fixed_variance)

    def _check_params(self) -> None:
        low = 2 if self.online else 1
        if isinstance(self.n_shadow, bool) or not isinstance(self.n_shadow, int) or self.n_shadow < low:
            mode = "online" if self.online else "offline"
            raise ParameterError(f"n_shadow must be an integer >= {low} for {mode} LiRA (16 is a good start); got "
                                 f"{self.n_shadow!r}.")
        if not isinstance(self.online, bool):
            raise ParameterError(f"online must be True or False; got {self.online!r}.")

    def __call__(self, target: Target, x: Any, y: Any, member: Any, *, train: Trainer,
                 aux: tuple[Any, Any] | None = None, executor: Executor | None = None) -> MembershipResult:
        """Train the shadow models (one task each on ``executor``: default in this process, one after the other;
        shadow ``k`` always trains with seed ``seed * 1000 + k``, so the scores do not depend on the executor)."""
        self._check_params()
        target.require(Access.SCORES, self.name)
        t0 = time.perf_counter()
        q0 = target.counter.used
        xt, yt, m = check_membership_inputs(target, x, y, member)
        pool_x, pool_y = xt, yt
        if aux is not None:
            ax, ay = target.spec.validate(*aux)
            if ay is None:
                raise InputSpecError("aux needs labels: give (x_aux, y_aux).")
            pool_x, pool_y = torch.cat([xt, ax.to(xt.device)]), torch.cat([yt, ay.to(yt.device)])
        phi_target = scaled_logit(log_probs(target, xt), yt).cpu()
        queries = target.counter.used - q0
        gen = torch.Generator().manual_seed(self.seed)
        halves = balanced_halves(self.n_shadow, len(pool_x), gen)
        ex = executor if executor is not None else LocalExecutor()
        shared = (train, pool_x.cpu(), pool_y.cpu(), xt.cpu(), yt.cpu())
        outcomes = ex.map(_shadow_phi, [(halves[k], self.seed * 1000 + k) for k in range(self.n_shadow)],
                          shared=shared)
        for k, o in enumerate(outcomes):
            if o.error is not None:
                raise o.error if not isinstance(o.error, WorkerLostError) else WorkerLostError(
                    f"shadow model {k}: {o.error}")
        phis = [o.value for o in outcomes]
        inside = halves[:, : len(xt)]
        phi_shadow = torch.stack(phis)  # type: ignore[arg-type]
        scores, fit = lira_scores(phi_target, phi_shadow, inside, online=self.online, fixed_variance=self._fixed())
        name = f"{self.name}-{'online' if self.online else 'offline'}"
        return MembershipResult(name, self.get_params(), Cost(queries, 0, time.perf_counter() - t0),
                                scores=scores, member=m,
                                extras={"phi_target": phi_target, "phi_shadow": phi_shadow, "inside": inside, **fit})


def _shadow_phi(shared: tuple[Trainer, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                task: tuple[torch.Tensor, int]) -> torch.Tensor:
    """One shadow model as an executor task: train it on its half of the pool with its seed, return its φ."""
    train, pool_x, pool_y, xt, yt = shared
    half, seed = task
    shadow = train(pool_x[half], pool_y[half], seed)
    return scaled_logit(log_probs(shadow, xt), yt).cpu()
