"""Differentially private training with DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") through
Opacus, and the empirical check that membership attacks respect the guarantee.

:func:`train_dp` clips every per-example gradient to ``max_grad_norm``, adds Gaussian noise of standard deviation
``noise_multiplier · max_grad_norm`` to each Poisson-sampled batch's sum, and accounts the privacy loss with Rényi DP
(Mironov 2017), returning ``(ε, δ)``.

:func:`check_dp_bound` tests the hypothesis-testing view of (ε, δ)-DP (Kairouz, Oh, Viswanath 2015): any
membership test's operating point satisfies ``TPR ≤ e^ε · FPR + δ`` (and, symmetrically,
``1 − FPR ≤ e^ε · (1 − TPR) + δ``). Finite samples make raw points noisy, so, as in DP auditing (Jagielski, Ullman,
Oprea 2020; Nasr et al. 2021), each point is judged with Clopper–Pearson intervals: a violation is a point whose TPR
*lower* bound exceeds ``e^ε ·`` its FPR *upper* bound ``+ δ``; the largest ε such points support is the empirical
lower bound on ε.

Caveat: the guarantee covers one example's inclusion; a membership evaluation over many examples is the usual,
heuristic, average-case audit of it (Carlini et al. 2022 §VII).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

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
        n_points: ROC points tested.
        violations: points violating the bound even after the confidence intervals (0 for a sound guarantee).
        raw_violations: points whose raw TPR/FPR violate it (finite-sample noise can cause these).
        epsilon_lower_bound: the largest ε the data support at this confidence (0 when none); ≤ ε if the bound holds.
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
    """Check every ROC point of a membership attack against ``TPR ≤ e^ε·FPR + δ`` (and the symmetric bound);
    see the module docstring. ``epsilon`` may be 0 (perfect privacy)."""
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
    a = (1 - confidence) / 2
    tpr_lo = beta.ppf(a, tp, n_pos - tp + 1)  # Clopper–Pearson bounds (the undefined ends set by hand)
    fpr_hi = beta.ppf(1 - a, fp + 1, n_neg - fp)
    tpr_lo[tp == 0] = 0.0
    fpr_hi[fp == n_neg] = 1.0
    e = math.exp(epsilon)
    viol = (tpr_lo > e * fpr_hi + delta) | ((1 - fpr_hi) > e * (1 - tpr_lo) + delta)
    t, f = tpr.numpy(), fpr.numpy()
    raw = (t > e * f + delta + 1e-12) | ((1 - f) > e * (1 - t) + delta + 1e-12)
    eps_lb = 0.0
    for num, den in ((tpr_lo - delta, fpr_hi), ((1 - fpr_hi) - delta, 1 - tpr_lo)):
        ok = (num > 0) & (den > 0)
        if ok.any():
            eps_lb = max(eps_lb, float((torch.log(torch.as_tensor(num[ok] / den[ok]))).max()))
    return BoundCheck(float(epsilon), float(delta), float(confidence), len(t), int(viol.sum()), int(raw.sum()),
                      eps_lb)
