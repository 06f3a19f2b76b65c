"""Neural Cleanse (Wang, Yao, Shan, Li, Viswanath, Zheng, Zhao 2019, "Neural Cleanse: Identifying and Mitigating
Backdoor Attacks in Neural Networks", IEEE S&P)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparring.attacks.poisoning.triggers import Trigger
from sparring.errors import ParameterError
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["NeuralCleanse", "NeuralCleanseResult", "anomaly_index"]


def anomaly_index(norms: Any) -> torch.Tensor:
    """Wang et al.'s anomaly index of each label: ``(median - norm) / (1.4826 * MAD)``; positive for triggers
    smaller than the median (only those are suspicious), > 2 means an outlier with > 95% confidence."""
    v = np.asarray(torch.as_tensor(norms).detach().cpu(), dtype=np.float64)
    med = float(np.median(v))
    mad = 1.4826 * float(np.median(np.abs(v - med)))
    return torch.from_numpy((med - v) / max(mad, 1e-12))


@dataclass
class NeuralCleanseResult:
    """Per label: the reverse-engineered trigger (mask and pattern), its mask L1 norm, attack success rate on the
    clean data, whether it converged, and the anomaly index. ``flagged`` lists labels with an index above the
    threshold.

    A label *converged* when some trigger reached the scan's ``success_target``; its mask, pattern, norm and success
    are then those of the smallest such trigger. A label that never did has no trigger in the paper's sense (the
    smallest mask that sends inputs there): its mask, pattern, norm and success are the last iterate's, it is left
    out of the median/MAD of the anomaly index (``anomaly`` is NaN there) and it is never flagged; see
    :attr:`not_converged`.
    """

    masks: torch.Tensor
    patterns: torch.Tensor
    norms: torch.Tensor
    success: torch.Tensor
    converged: torch.Tensor
    anomaly: torch.Tensor
    threshold: float
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def flagged(self) -> list[int]:
        return [i for i, a in enumerate(self.anomaly.tolist()) if a > self.threshold]

    @property
    def not_converged(self) -> list[int]:
        """Labels whose trigger never reached the success target (run more ``steps`` to scan them)."""
        return [i for i, c in enumerate(self.converged.tolist()) if not c]

    @property
    def backdoored(self) -> bool:
        return bool(self.flagged)

    def trigger(self, label: int) -> Trigger:
        """The reverse-engineered trigger of ``label`` (apply it to clean inputs to test it)."""
        if not 0 <= label < self.masks.shape[0]:
            raise ParameterError(f"label must be in 0..{self.masks.shape[0] - 1}; got {label!r}.")
        m = self.masks[label].expand_as(self.patterns[label]).clone()
        return Trigger(m, self.patterns[label].clone(), "reverse-engineered", {"label": label})

    def summary(self) -> dict[str, Any]:
        return {"defense": "neural-cleanse", "params": self.params, "flagged": self.flagged,
                "mask_l1": [round(float(v), 3) for v in self.norms],
                "anomaly_index": [None if math.isnan(v) else round(v, 3) for v in self.anomaly.tolist()],
                "not_converged": self.not_converged,
                "trigger_success": [round(float(v), 3) for v in self.success], "seconds": round(self.seconds, 3)}


class NeuralCleanse:
    """Neural Cleanse model scan (Wang et al. 2019, section IV, eq. 2-3).

    Threat model: the defender has white-box access and a small clean set. For every label ``t`` the scan looks
    for the smallest trigger (mask ``m``, pattern ``p``) that sends clean inputs to ``t``:

        min_{m,p}  CE(f((1 - m) ⊙ x + m ⊙ p), t) + λ_t |m|_1

    with ``m`` and ``p`` kept in range by a tanh reparameterisation. λ_t follows the paper's schedule: multiplied by
    ``cost_step`` after ``patience`` steps with success ≥ ``success_target``, divided by ``cost_step ** 1.5`` after
    ``patience`` steps below it; the smallest successful mask is kept. All labels are optimised at once, in one
    batch. A backdoored label needs a much smaller trigger: its anomaly index (:func:`anomaly_index` of the mask
    norms) exceeds ``threshold`` (2 in the paper).

    The outlier test compares the sizes of *minimal triggers*, so only labels whose trigger reached
    ``success_target`` enter the median and MAD; a label that never did is reported in ``not_converged`` with a NaN
    index (its last mask is not a trigger: early in the schedule every mask is still tiny, and such labels used to
    be flagged as outliers of noise on a clean model).

    Blended (image-wide) triggers are not small masks; Neural Cleanse often misses them (BackdoorBench).

    Args:
        steps: optimisation steps (each on a fresh batch of clean inputs for every label).
        batch_size: clean inputs per label per step.
        lr: Adam learning rate (betas 0.5, 0.9 as in the paper's code).
        init_cost: initial λ.
        success_target: attack success a trigger must reach to count (0.99 in the paper).
        patience, cost_step: the λ schedule.
        threshold: anomaly index above which a label is flagged.
        seed: seed of the default generator (batches, initial mask and pattern).
    """

    def __init__(self, *, steps: int = 300, batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3,
                 success_target: float = 0.99, patience: int = 10, cost_step: float = 1.5, threshold: float = 2.0,
                 seed: int = 0) -> None:
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.init_cost = init_cost
        self.success_target = success_target
        self.patience = patience
        self.cost_step = cost_step
        self.threshold = threshold
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return dict(vars(self))

    def _check(self) -> None:
        for name in ("steps", "batch_size", "patience"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(f"{name} must be a positive integer; got {v!r}.")
        for name in ("lr", "init_cost"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and v > 0 and math.isfinite(v)):
                raise ParameterError(f"{name} must be a positive number; got {v!r}.")
        if not 0 < self.success_target <= 1 or not self.cost_step > 1:
            raise ParameterError(f"success_target must be in (0, 1] and cost_step > 1; got {self.success_target!r}, "
                                 f"{self.cost_step!r}.")

    def __call__(self, target: TorchTarget, x_clean: Any, *, generator: torch.Generator | None = None
                 ) -> NeuralCleanseResult:
        """Scan ``target`` with clean inputs ``x_clean`` (a few hundred are enough)."""
        self._check()
        if not isinstance(target, TorchTarget):
            raise ParameterError(f"Neural Cleanse optimises through the model: it needs a TorchTarget; got "
                                 f"{type(target).__name__}.")
        target.require(Access.GRADIENTS, "NeuralCleanse")
        t0 = time.perf_counter()
        spec, dev = target.spec, target.device
        xt, _ = spec.validate(x_clean)
        xt = xt.to(dev, target.dtype)
        gen = generator or torch.Generator(device="cpu").manual_seed(self.seed)
        n_lab = spec.n_classes
        lo, hi = spec.bounds_tensors(dev, target.dtype)
        mshape = _mask_shape(spec.shape, spec.layout)
        m_raw = (torch.randn((n_lab, *mshape), generator=gen) * 0.1 - 2.0).to(dev).requires_grad_(True)
        p_raw = (torch.randn((n_lab, *spec.shape), generator=gen) * 0.1).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([m_raw, p_raw], lr=self.lr, betas=(0.5, 0.9))
        cost = torch.full((n_lab,), float(self.init_cost), device=dev)
        up = torch.zeros(n_lab, device=dev)
        down = torch.zeros(n_lab, device=dev)
        best_norm = torch.full((n_lab,), float("inf"), device=dev)
        best_m = torch.ones((n_lab, *mshape), device=dev)
        best_p = torch.zeros((n_lab, *spec.shape), device=dev)
        best_s = torch.zeros(n_lab, device=dev)
        labels = torch.arange(n_lab, device=dev).repeat_interleave(self.batch_size)
        fwd = target.differentiable("NeuralCleanse")
        with target.frozen():
            for _ in range(self.steps):
                xb = xt[torch.randint(0, xt.shape[0], (self.batch_size,), generator=gen).to(dev)]
                mask = (torch.tanh(m_raw) + 1) / 2
                pattern = lo + (torch.tanh(p_raw) + 1) / 2 * (hi - lo)
                stamped = (1 - mask[:, None]) * xb[None] + (mask * pattern)[:, None]
                logits = fwd(stamped.reshape(-1, *spec.shape))
                ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none").reshape(n_lab, -1).mean(1)
                l1 = mask.reshape(n_lab, -1).sum(1)
                opt.zero_grad(set_to_none=True)
                (ce + cost * l1).sum().backward()  # type: ignore[no-untyped-call]
                opt.step()
                with torch.no_grad():
                    succ = (logits.argmax(1) == labels).float().reshape(n_lab, -1).mean(1)
                    ok = succ >= self.success_target
                    better = ok & (l1 < best_norm)
                    best_norm = torch.where(better, l1, best_norm)
                    best_s = torch.where(better, succ, best_s)
                    best_m[better] = mask[better].detach()
                    best_p[better] = pattern[better].detach()
                    up = torch.where(ok, up + 1, torch.zeros_like(up))
                    down = torch.where(ok, torch.zeros_like(down), down + 1)
                    cost = torch.where(up >= self.patience, cost * self.cost_step, cost)
                    cost = torch.where(down >= self.patience, cost / self.cost_step**1.5, cost)
                    up = torch.where(up >= self.patience, torch.zeros_like(up), up)
                    down = torch.where(down >= self.patience, torch.zeros_like(down), down)
        never = torch.isinf(best_norm)  # never reached the target success: report the last iterate, score nothing
        with torch.no_grad():
            best_m[never] = mask[never].detach()
            best_p[never] = pattern[never].detach()
        norms = torch.where(never, l1.detach(), best_norm).cpu()
        converged = ~never.cpu()
        anomaly = torch.full((n_lab,), float("nan"), dtype=torch.float64)
        if bool(converged.any()):
            anomaly[converged] = anomaly_index(norms[converged])
        return NeuralCleanseResult(
            masks=best_m.cpu(), patterns=best_p.cpu(), norms=norms, success=torch.where(never, succ, best_s).cpu(),
            converged=converged, anomaly=anomaly, threshold=float(self.threshold), params=self.get_params(),
            seconds=time.perf_counter() - t0,
        )


def _mask_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """One mask value per pixel (shared by the channels) for images, per feature otherwise."""
    if layout == "chw":
        return (1, *shape[1:])
    if layout == "hwc":
        return (*shape[:-1], 1)
    return shape
