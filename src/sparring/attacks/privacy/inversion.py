"""Model inversion: MI-Face (Fredrikson, Jha, Ristenpart 2015, "Model Inversion Attacks that Exploit Confidence
Information and Basic Countermeasures", Algorithm 1).

Given white-box access and a class label, MI-Face reconstructs a representative input of that class by gradient
descent on the cost ``c(x) = 1 − f̃_label(x) + AuxTerm(x)`` (here ``AuxTerm = 0``, as in the paper's experiments):

    x₀ ← 0
    for i = 1 … α:  xᵢ ← Process(xᵢ₋₁ − λ ∇c(xᵢ₋₁))
                    stop if c(xᵢ) ≥ max(c(xᵢ₋₁), …, c(xᵢ₋β))  or  c(xᵢ) ≤ γ
    return the best xᵢ

``Process`` projects onto the input bounds and, for images, optionally smooths (the paper's denoising step, here a
3×3 box filter mixed in with weight ``smooth``). All classes are inverted in one batch; each stops on its own.

Threat model: white-box (gradients), one label per reconstruction; recovers an average-looking member of the class,
not a specific training example. :func:`plot_inversions` shows the reconstructions as images.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from sparring.attacks.result import AttackResult, Cost
from sparring.errors import ParameterError
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["InversionResult", "MIFace", "plot_inversions"]


@dataclass
class InversionResult(AttackResult):
    """Reconstructions of class representatives.

    Attributes:
        x: ``(k, *spec.shape)`` one reconstruction per class asked for, in raw input space, on the target's device.
        classes: the class of each reconstruction.
        confidence: the target's probability of that class on the reconstruction.
        iterations: descent steps each reconstruction took.
    """

    x: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    classes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    confidence: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    iterations: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        s.update(classes=self.classes.tolist(), confidence=[round(float(c), 6) for c in self.confidence.cpu()],
                 iterations=self.iterations.tolist())
        return s


class MIFace:
    """MI-Face model inversion (Fredrikson et al. 2015, Alg. 1); see the module docstring.

    Args:
        steps: α, the maximum number of descent steps.
        lr: λ, the step size (raw input units per unit gradient).
        patience: β, stop a class when its cost has not improved on the previous β costs.
        gamma: γ, stop a class once its cost is at most this.
        smooth: weight of the 3×3 box-filter denoising in ``Process`` (images only; 0 disables it).
        cost: ``"probability"`` for the paper's ``1 − p_label``, or ``"log"`` for ``−log p_label`` (same minimiser;
            its gradient does not vanish when the class starts with a tiny probability, as on deep networks).
            ``gamma`` then applies to ``1 − p_label`` in both cases.
    """

    name = "mi-face"
    needs = Access.GRADIENTS

    def __init__(self, *, steps: int = 1000, lr: float = 0.1, patience: int = 100, gamma: float = 0.0,
                 smooth: float = 0.0, cost: str = "probability") -> None:
        self.steps = steps
        self.lr = lr
        self.patience = patience
        self.gamma = gamma
        self.smooth = smooth
        self.cost = cost

    def get_params(self) -> dict[str, Any]:
        return {"steps": self.steps, "lr": self.lr, "patience": self.patience, "gamma": self.gamma,
                "smooth": self.smooth, "cost": self.cost}

    def _check_params(self) -> None:
        if self.cost not in ("probability", "log"):
            raise ParameterError(f"cost must be 'probability' (Fredrikson et al.) or 'log'; got {self.cost!r}.")
        for name in ("steps", "patience"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(f"{name} must be an integer >= 1; got {v!r}.")
        for name, lo, hi, want in (("lr", 0.0, float("inf"), "> 0"), ("gamma", 0.0, 1.0, "in [0, 1)"),
                                   ("smooth", 0.0, 1.0, "in [0, 1]")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not _within(name, float(v), lo, hi):
                raise ParameterError(f"{name} must be a number {want}; got {v!r}.")

    def __call__(self, target: TorchTarget, classes: Sequence[int] | torch.Tensor | None = None) -> InversionResult:
        """Invert ``classes`` (default: every class) of a white-box target."""
        self._check_params()
        if not isinstance(target, TorchTarget):
            raise ParameterError(f"MI-Face needs a white-box TorchTarget; got {type(target).__name__}.")
        target.require(Access.GRADIENTS, self.name)
        n_classes = target.spec.n_classes
        cls = torch.arange(n_classes) if classes is None else torch.as_tensor(classes, dtype=torch.long).reshape(-1)
        if cls.numel() == 0 or bool(((cls < 0) | (cls >= n_classes)).any()):
            raise ParameterError(f"classes must be labels in 0..{n_classes - 1}; got {cls.tolist()}.")
        t0 = time.perf_counter()
        q0 = target.counter.used
        dev, dtype = target.device, target.dtype
        lo, hi = target.spec.bounds_tensors(dev, dtype)
        cls = cls.to(dev)
        x = torch.zeros(len(cls), *target.spec.shape, device=dev, dtype=dtype).clamp(lo, hi)
        best_x, best_c = x.clone(), torch.full((len(cls),), float("inf"), device=dev, dtype=dtype)
        history = torch.full((self.patience, len(cls)), float("inf"), device=dev, dtype=dtype)
        active = torch.ones(len(cls), dtype=torch.bool, device=dev)
        iters = torch.zeros(len(cls), dtype=torch.long, device=dev)
        fwd = target.differentiable(self.name)
        image = target.spec.layout in ("chw", "hwc") and len(target.spec.shape) == 3
        with target.frozen():
            for i in range(self.steps):
                xv = x.detach().requires_grad_(True)
                logp = fwd(xv).log_softmax(dim=1).gather(1, cls.view(-1, 1)).squeeze(1)
                cost = 1.0 - logp.exp()
                (g,) = torch.autograd.grad((cost if self.cost == "probability" else -logp).sum(), xv)
                with torch.no_grad():
                    c = cost.detach()
                    better = active & (c < best_c)
                    best_c = torch.where(better, c, best_c)
                    best_x[better] = xv.detach()[better]
                    stalled = c >= history.max(dim=0).values
                    active &= ~(stalled | (c <= self.gamma))
                    history[i % self.patience] = c
                    iters += active.long()
                    if not bool(active.any()):
                        break
                    step = x - self.lr * g
                    if image and self.smooth > 0:
                        step = (1 - self.smooth) * step + self.smooth * _box_blur(step, target.spec.layout)
                    x = torch.where(active.view(-1, *[1] * (x.dim() - 1)), step.clamp(lo, hi), x)
        with torch.no_grad():
            conf = target.query(best_x).softmax(dim=1) if target.view_output == "logits" else target.query(best_x)
        return InversionResult(self.name, self.get_params(),
                               Cost(target.counter.used - q0, int(iters.sum()) + len(cls), time.perf_counter() - t0),
                               x=best_x, classes=cls, confidence=conf.gather(1, cls.view(-1, 1)).squeeze(1),
                               iterations=iters)


def _within(name: str, v: float, lo: float, hi: float) -> bool:
    if name == "lr":
        return lo < v < hi
    return lo <= v < hi if name == "gamma" else lo <= v <= hi


def _box_blur(x: torch.Tensor, layout: str) -> torch.Tensor:
    xc = x if layout == "chw" else x.permute(0, 3, 1, 2)
    ch = xc.shape[1]
    kernel = torch.full((ch, 1, 3, 3), 1.0 / 9.0, device=x.device, dtype=x.dtype)
    out = F.conv2d(F.pad(xc, (1, 1, 1, 1), mode="replicate"), kernel, groups=ch)
    return out if layout == "chw" else out.permute(0, 2, 3, 1)


def plot_inversions(result: InversionResult, *, class_names: Sequence[str] | None = None,
                    layout: str = "chw") -> Any:
    """The reconstructions as a row of images (a matplotlib Figure; object API, no pyplot state)."""
    from matplotlib.figure import Figure

    x = result.x.detach().cpu().float()
    if x.dim() == 4 and layout == "chw":
        x = x.permute(0, 2, 3, 1)
    if x.dim() == 2:  # feature vectors: show as one-row heat maps
        x = x[:, None, :, None]
    k = x.shape[0]
    fig = Figure(figsize=(1.3 * k, 1.6), dpi=100, layout="constrained")
    for i in range(k):
        ax = fig.add_subplot(1, k, i + 1)
        img = x[i]
        lo, hi = float(img.min()), float(img.max())
        shown = ((img - lo) / (hi - lo if hi > lo else 1.0)).numpy()
        ax.imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray" if shown.shape[-1] == 1 else None)
        c = int(result.classes[i])
        label = class_names[c] if class_names is not None else str(c)
        ax.set_title(f"{label}\np={float(result.confidence[i]):.2f}", fontsize=8)
        ax.set_axis_off()
    return fig
