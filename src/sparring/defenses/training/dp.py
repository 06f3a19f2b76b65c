"""Differentially private training with DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") through
Opacus, and the empirical check that membership attacks respect the guarantee.

:func:`train_dp` clips every per-example gradient to ``max_grad_norm``, adds Gaussian noise of standard deviation
``noise_multiplier · max_grad_norm`` to each Poisson-sampled batch's sum, and accounts the privacy loss with Rényi DP
(Mironov 2017), returning ``(ε, δ)``.

:func:`check_dp_bound` tests the hypothesis-testing view of (ε, δ)-DP (Kairouz, Oh, Viswanath 2015): any
membership test's operating point satisfies all four of ``TPR ≤ e^ε·FPR + δ``, ``1 − FPR ≤ e^ε·(1 − TPR) + δ``,
and the symmetric ``FPR ≤ e^ε·TPR + δ``, ``1 − TPR ≤ e^ε·(1 − FPR) + δ`` (neighbouring datasets swap roles, so an
attack that ranks members *below* non-members witnesses ε as well). Finite samples make raw points noisy, so, as in
DP auditing (Jagielski, Ullman, Oprea 2020; Nasr et al. 2021), a point violates only when one-sided Clopper–Pearson
bounds do (e.g. the TPR's *lower* bound above ``e^ε ·`` the FPR's *upper* bound ``+ δ``), and the largest ε the
bounds support is the empirical lower bound on ε. The confidence holds for the whole curve: every ROC point is a
threshold tested, so the four one-sided bounds of each of the ``m`` non-trivial points are taken at
``(1 − confidence) / (4m)`` (Bonferroni), and with probability at least ``confidence`` every bound holds at once --
no violation is reported for a guarantee that holds, and the maximum over points is a valid lower bound.

Caveat: the guarantee covers one example's inclusion; a membership evaluation over many examples is the usual,
heuristic, average-case audit of it (Carlini et al. 2022 §VII).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sparring.attacks.privacy.metrics import MembershipResult
from sparring.errors import ParameterError
from sparring.targets.spec import InputSpec

__all__ = ["BoundCheck", "DPTrainingResult", "check_dp_bound", "dp_trainer", "train_dp"]


@dataclass
class DPTrainingResult:
    """A DP-SGD-trained model and its guarantee.

    Attributes:
        model: the trained module (plain ``nn.Module``, Opacus hooks removed), in eval mode.
        epsilon, delta: the (ε, δ) guarantee from the RDP accountant.
        noise_multiplier, max_grad_norm, sample_rate, steps, epochs: the mechanism's parameters.
        losses: mean training loss per epoch.
    """

    model: nn.Module
    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    epochs: int
    seconds: float
    losses: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "delta": self.delta, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.max_grad_norm, "sample_rate": self.sample_rate, "steps": self.steps,
                "epochs": self.epochs, "seconds": round(self.seconds, 4), "final_loss": self.losses[-1]}


def _positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number > 0; got {value!r}.")


def _check(x: torch.Tensor, y: torch.Tensor, spec: InputSpec, epochs: int, batch_size: int,
           noise_multiplier: float | None, target_epsilon: float | None, delta: float | None,
           max_grad_norm: float, lr: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    xt, yt = spec.validate(x, y)
    if yt is None:
        raise ParameterError("train_dp needs labels y; got None.")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ParameterError(f"{name} must be an integer >= 1; got {v!r}.")
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ParameterError("give exactly one of noise_multiplier (e.g. 1.1) or target_epsilon (e.g. 3.0); got "
                             f"noise_multiplier={noise_multiplier!r}, target_epsilon={target_epsilon!r}.")
    _positive("noise_multiplier", noise_multiplier, allow_none=True)
    _positive("target_epsilon", target_epsilon, allow_none=True)
    _positive("max_grad_norm", max_grad_norm)
    _positive("lr", lr)
    d = 1.0 / (10 * len(xt)) if delta is None else delta
    if isinstance(d, bool) or not isinstance(d, int | float) or not 0 < d < 1:
        raise ParameterError(f"delta must be in (0, 1), well below 1/n (default 1/(10·n)); got {delta!r}.")
    return xt, yt, float(d)


def train_dp(
    model: nn.Module, x: Any, y: Any, spec: InputSpec, *, epochs: int, batch_size: int = 64, lr: float = 0.05,
    max_grad_norm: float = 1.0, noise_multiplier: float | None = None, target_epsilon: float | None = None,
    delta: float | None = None, seed: int = 0,
) -> DPTrainingResult:
    """Train ``model`` on ``(x, y)`` with DP-SGD (Opacus, Poisson sampling, RDP accounting), in place.

    Args:
        model: a module mapping (normalised, if ``spec`` says so) inputs to logits; re-initialised from ``seed``.
        x, y: training inputs in raw space and labels.
        spec: the input spec (bounds, normalisation).
        epochs: passes over the data; ``batch_size``: the expected Poisson batch size (sample rate
            ``batch_size / n``).
        lr: SGD learning rate.
        max_grad_norm: per-example gradient clipping norm C.
        noise_multiplier: σ (noise std is σ·C); or give ``target_epsilon`` and σ is calibrated to reach it.
        delta: the δ of the guarantee (default ``1/(10·n)``).
        seed: seeds the initialisation, the batch sampling and the noise (not cryptographically secure: for
            audits and experiments; production DP needs Opacus' ``secure_mode``).
    """
    from opacus import PrivacyEngine
    from opacus.accountants.utils import get_noise_multiplier
    from torch.utils.data import DataLoader, TensorDataset

    from sparring._util import reinit_parameters

    xt, yt, d = _check(x, y, spec, epochs, batch_size, noise_multiplier, target_epsilon, delta, max_grad_norm, lr)
    t0 = time.perf_counter()
    norm = spec.norm_tensors()
    inputs = (xt - norm[0]) / norm[1] if norm is not None else xt
    sample_rate = 1.0 / math.ceil(len(xt) / batch_size)  # what Opacus' Poisson loader and accountant use
    sigma = noise_multiplier if noise_multiplier is not None else get_noise_multiplier(
        target_epsilon=target_epsilon, target_delta=d, sample_rate=sample_rate, epochs=epochs, accountant="rdp")
    reinit_parameters(model, seed)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(inputs.cpu(), yt.cpu()), batch_size=batch_size, generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with warnings.catch_warnings():
        # Opacus warns that a seeded noise generator is not secure: intended here (reproducible audits).
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*", category=UserWarning)
        engine = PrivacyEngine(accountant="rdp")
        dp_model, dp_opt, dp_loader = engine.make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=float(sigma),
            max_grad_norm=max_grad_norm, noise_generator=torch.Generator().manual_seed(seed + 1))
        losses, steps = [], 0
        dp_model.train()
        for _ in range(epochs):
            total, count = 0.0, 0
            for xb, yb in dp_loader:
                dp_opt.zero_grad(set_to_none=True)
                if len(xb) == 0:
                    continue
                loss = nn.functional.cross_entropy(dp_model(xb), yb)
                loss.backward()  # type: ignore[no-untyped-call]
                dp_opt.step()
                steps += 1
                total, count = total + float(loss.detach()) * len(xb), count + len(xb)
            losses.append(total / max(count, 1))
        eps = float(engine.get_epsilon(d))
        plain: nn.Module = dp_model.to_standard_module() if hasattr(dp_model, "to_standard_module") else model
    return DPTrainingResult(plain.eval(), eps, d, float(sigma), float(max_grad_norm), sample_rate, steps, epochs,
                            time.perf_counter() - t0, losses)


def dp_trainer(build: Any, spec: InputSpec, **dp_kwargs: Any) -> Any:
    """A membership :data:`~sparring.attacks.privacy.membership.Trainer` training ``build()`` with
    :func:`train_dp` (shadow models for LiRA against a DP-trained target must be trained the same way)."""
    from sparring.targets.torch import TorchTarget

    def train(x: torch.Tensor, y: torch.Tensor, seed: int) -> TorchTarget:
        return TorchTarget(train_dp(build(), x, y, spec, seed=seed, **dp_kwargs).model, spec)

    return train


@dataclass
class BoundCheck:
    """The verdict of :func:`check_dp_bound` on one attack's ROC.

    Attributes:
        epsilon, delta, confidence: the guarantee tested and the Clopper–Pearson confidence.
        n_points: ROC points tested (every threshold; the Bonferroni correction divides by the non-trivial ones).
        violations: points violating one of the four inequalities even after the simultaneous confidence bounds (0
            for a sound guarantee, with probability at least ``confidence``).
        raw_violations: points whose raw TPR/FPR violate one (finite-sample noise can cause these).
        epsilon_lower_bound: the largest ε the data support at this confidence, over all points and all four
            inequalities (0 when none); ≤ ε if the bound holds.
    """

    epsilon: float
    delta: float
    confidence: float
    n_points: int
    violations: int
    raw_violations: int
    epsilon_lower_bound: float

    @property
    def passed(self) -> bool:
        return self.violations == 0

    def summary(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "delta": self.delta, "confidence": self.confidence,
                "n_points": self.n_points, "violations": self.violations, "raw_violations": self.raw_violations,
                "epsilon_lower_bound": self.epsilon_lower_bound, "passed": self.passed}


def check_dp_bound(result: MembershipResult, epsilon: float, delta: float, *,
                   confidence: float = 0.95) -> BoundCheck:
    """Check every ROC point of a membership attack against the four (ε, δ)-DP inequalities, with one confidence
    for the whole curve (Bonferroni over the points); see the module docstring. ``epsilon`` may be 0."""
    from scipy.stats import beta

    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or epsilon < 0 or math.isnan(epsilon):
        raise ParameterError(f"epsilon must be a number >= 0; got {epsilon!r}.")
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 <= delta < 1:
        raise ParameterError(f"delta must be in [0, 1); got {delta!r}.")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 < confidence < 1:
        raise ParameterError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}.")
    fpr, tpr, _ = result.roc()
    n_pos, n_neg = int(result.member.sum()), int((~result.member).sum())
    tp, fp = (tpr * n_pos).round().numpy(), (fpr * n_neg).round().numpy()
    trivial = ((tp == 0) & (fp == 0)) | ((tp == n_pos) & (fp == n_neg))  # (0, 0) and (1, 1) satisfy every bound
    a = (1 - confidence) / (4 * max(int((~trivial).sum()), 1))  # four one-sided bounds per non-trivial point
    t_lo, t_hi = _clopper_pearson(beta, tp, n_pos, a)
    f_lo, f_hi = _clopper_pearson(beta, fp, n_neg, a)
    e = math.exp(epsilon)
    # each inequality "left <= e * right + delta", as (lower bound of left, upper bound of right, raw left, raw right)
    t, f = tpr.numpy(), fpr.numpy()
    sides = ((t_lo, f_hi, t, f), (1 - f_hi, 1 - t_lo, 1 - f, 1 - t),  # TPR vs FPR; 1 - FPR vs 1 - TPR
             (f_lo, t_hi, f, t), (1 - t_hi, 1 - f_lo, 1 - t, 1 - f))  # and the symmetric forms
    viol = np.zeros(len(t), dtype=bool)
    raw = np.zeros(len(t), dtype=bool)
    eps_lb = 0.0
    for left, right, raw_left, raw_right in sides:
        viol |= left > e * right + delta
        raw |= raw_left > e * raw_right + delta + 1e-12
        ok = (left - delta > 0) & (right > 0)
        if ok.any():
            eps_lb = max(eps_lb, float(np.log((left[ok] - delta) / right[ok]).max()))
    return BoundCheck(float(epsilon), float(delta), float(confidence), len(t), int(viol.sum()), int(raw.sum()),
                      eps_lb)


def _clopper_pearson(beta: Any, k: Any, n: int, alpha: float) -> tuple[Any, Any]:
    """One-sided Clopper–Pearson bounds on ``k / n``, each holding with probability ``1 − alpha`` (numpy arrays)."""
    lo = np.where(k == 0, 0.0, beta.ppf(alpha, np.maximum(k, 1), n - k + 1))
    hi = np.where(k == n, 1.0, beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1)))
    return lo, hi
