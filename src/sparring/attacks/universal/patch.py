"""The universal adversarial patch (Brown, Mané, Roy, Abadi & Gilmer 2017, "Adversarial Patch"), trained with
expectation over transformation (Athalye, Engstrom, Ilyas & Kwok 2018) over random placements, scales and rotations so
it works wherever it is pasted. Threat model: white-box (gradients), targeted, unbounded in a region of the image.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from sparring._progress import progress_bar
from sparring.attacks.base import _as_input_kind, _generator
from sparring.attacks.evasion._checks import check_positive_int
from sparring.attacks.result import AttackResult, Cost
from sparring.attacks.universal._common import from_chw, number, params_of, to_chw
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access, InputSpec
from sparring.targets.torch import TorchTarget

__all__ = ["PatchResult", "UniversalPatch"]


@dataclass
class PatchResult(AttackResult):
    """A trained adversarial patch and how to paste it.

    Attributes:
        patch: ``(C, h, w)`` (channels first whatever the layout), within the spec's bounds, on the model's device.
        target_class: the class the patch pushes predictions to.
        spec: the input spec of the target it was trained on (layout and bounds used when pasting).
        side: side of the pasted square in pixels at scale 1 (``sqrt(size · H · W)``).
        scale, rotation, brightness, region: the transformation ranges used in training (and by default when
            pasting).
        history: per training step, ``"loss"`` (mean cross-entropy to the target class) and ``"success"`` (share of
            the step's batch predicted as the target class).
    """

    patch: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    target_class: int = 0
    spec: InputSpec | None = None
    side: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    rotation: float = 0.0
    brightness: float = 0.0
    region: float = 1.0
    history: dict[str, list[float]] = field(default_factory=dict)

    def apply(
        self, x: Any, *, generator: torch.Generator | None = None, scale: tuple[float, float] | None = None,
        rotation: float | None = None, brightness: float | None = None, region: float | None = None,
    ) -> Any:
        """Paste the patch on each input at a random position, scale, rotation and brightness.

        ``scale``/``rotation``/``brightness`` override the training ranges (e.g. ``scale=(1, 1)`` pastes exactly
        ``size`` of the image). Returns the same kind (tensor/numpy) and device as ``x``.
        """
        return _as_input_kind(self._paste(x, generator, scale, rotation, brightness, region)[0], x)

    def evaluate(
        self, target: Target, x: Any, y: Any, *, generator: torch.Generator | None = None,
        scale: tuple[float, float] | None = None, rotation: float | None = None, brightness: float | None = None,
        region: float | None = None,
    ) -> dict[str, float]:
        """Measure the patch on (held-out) data, one random placement per input.

        Returns ``targeted_success_rate`` (among inputs whose true class is not ``target_class``, the share
        predicted as ``target_class``), ``error_rate`` (share predicted wrongly with the patch), ``clean_accuracy``,
        ``area_fraction`` (mean share of the image the patch covers) and ``n``.
        """
        assert self.spec is not None
        xt, yt = self.spec.validate(x, y)
        assert yt is not None
        patched, mask = self._paste(xt, generator, scale, rotation, brightness, region)
        pred, clean = target.query_labels(patched).cpu(), target.query_labels(xt).cpu()
        other = yt.cpu() != self.target_class
        hit = (pred == self.target_class)[other]
        return {
            "targeted_success_rate": float(hit.float().mean()) if hit.numel() else 0.0,
            "error_rate": float((pred != yt.cpu()).float().mean()),
            "clean_accuracy": float((clean == yt.cpu()).float().mean()),
            "area_fraction": float(mask.mean()),
            "n": float(xt.shape[0]),
        }

    def _paste(
        self, x: Any, generator: torch.Generator | None, scale: tuple[float, float] | None,
        rotation: float | None, brightness: float | None, region: float | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.spec
        assert spec is not None
        xt, _ = spec.validate(x)
        dev, dt = self.patch.device, self.patch.dtype
        gen = _generator(generator, self.params.get("seed"), dev)
        sc = _check_scale(self.scale if scale is None else scale, self.side**2 / _area(spec))
        rot = number(self.rotation if rotation is None else rotation, "rotation", 0, 180)
        bri = number(self.brightness if brightness is None else brightness, "brightness", 0, 1)
        reg = number(self.region if region is None else region, "region", 0, 1)
        lower, upper = spec.bounds_tensors(dev, dt)
        p_lo, p_hi = _patch_bounds(spec, dev, dt)
        with torch.no_grad():
            out, mask = _render(
                to_chw(xt.to(dev, dt), spec), self.patch, self.side, sc, rot, bri * spec.range_width, p_lo, p_hi, gen,
                reg,
            )
            out = torch.clamp(from_chw(out, spec), lower, upper)
        return out.to(xt.dtype), mask.flatten(1).mean(1)


def _area(spec: InputSpec) -> int:
    h, w = (spec.shape[1], spec.shape[2]) if spec.layout == "chw" else (spec.shape[0], spec.shape[1])
    return h * w


def _check_scale(scale: object, size: float) -> tuple[float, float]:
    if not isinstance(scale, tuple | list) or len(scale) != 2:
        raise ParameterError(f"scale must be a pair (smallest, largest), e.g. (0.8, 1.2); got {scale!r}.")
    lo = number(scale[0], "scale[0]", 0, 10, open_lo=True)
    hi = number(scale[1], "scale[1]", lo, math.sqrt(1 / size), hint=" (at least scale[0]; the patch must fit)")
    return lo, hi


def _patch_bounds(spec: InputSpec, dev: torch.device, dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(C, 1, 1)`` bounds valid at every pixel (the intersection for per-feature bounds)."""
    lo, hi = (to_chw(b.expand(1, *spec.shape), spec) for b in spec.bounds_tensors(dev, dt))
    p_lo, p_hi = lo.amax(dim=(0, 2, 3)).view(-1, 1, 1), hi.amin(dim=(0, 2, 3)).view(-1, 1, 1)
    if bool((p_lo >= p_hi).any()):
        raise ParameterError(
            "the spec's per-feature bounds leave no value valid at every pixel of a channel, so no patch can be "
            "pasted anywhere; declare per-channel bounds in InputSpec(bounds=...)."
        )
    return p_lo, p_hi


def _render(
    x: torch.Tensor, patch: torch.Tensor, side: float, scale: tuple[float, float], rotation: float,
    brightness: float, p_lo: torch.Tensor, p_hi: torch.Tensor, gen: torch.Generator, region: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``patch`` (C, h, w) on every image of ``x`` (N, C, H, W), each with its own random transformation.

    Differentiable in ``patch``. The square (side ``side · scale`` pixels, rotated by up to ``±rotation`` degrees)
    lies wholly inside the image wherever it fits; its centre is uniform over the central ``region`` share (per axis)
    of the positions where it does (1: anywhere it fits; 0: always the image centre). Returns
    the composites and the coverage masks ``(N, 1, H, W)`` (1 under the patch, fractional on its anti-aliased edge).
    """
    n, c, height, width = x.shape
    u = torch.rand(n, 5, generator=gen, device=x.device, dtype=x.dtype)
    half = side * (scale[0] + (scale[1] - scale[0]) * u[:, 0]) / 2  # pixels
    angle = (2 * u[:, 1] - 1) * math.radians(rotation)
    cos, sin = angle.cos(), angle.sin()
    ext = half * (cos.abs() + sin.abs())  # half the side of the rotated square's bounding box
    cx = width / 2 + (width / 2 - ext).clamp_min(0) * region * (2 * u[:, 2] - 1)
    cy = height / 2 + (height / 2 - ext).clamp_min(0) * region * (2 * u[:, 3] - 1)
    # Image coordinates p in [-1, 1] (align_corners=False) -> patch coordinates q = A (p - c), A = R(-angle)·D / half
    # with D converting normalised offsets to pixels; the patch spans q in [-1, 1].
    a = torch.stack([
        torch.stack([cos * width / 2, sin * height / 2], 1), torch.stack([-sin * width / 2, cos * height / 2], 1),
    ], 1) / half.view(n, 1, 1)
    centre = torch.stack([2 * cx / width - 1, 2 * cy / height - 1], 1).unsqueeze(2)
    theta = torch.cat([a, -(a @ centre)], 2)
    grid = F.affine_grid(theta, [n, c, height, width], align_corners=False)
    shift = ((2 * u[:, 4] - 1) * brightness).view(n, 1, 1, 1)
    lit = torch.maximum(torch.minimum(patch.unsqueeze(0) + shift, p_hi), p_lo)
    # Zero padding makes the sampled patch premultiplied by its coverage, so compositing is x·(1 - m) + sampled.
    sampled = F.grid_sample(lit, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ones = torch.ones(n, 1, *patch.shape[1:], device=x.device, dtype=x.dtype)
    mask = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x * (1 - mask) + sampled, mask


class UniversalPatch:
    r"""Universal adversarial patch (Brown, Mané, Roy, Abadi, Gilmer 2017, "Adversarial Patch"), trained with
    expectation over transformation (EOT; Athalye, Engstrom, Ilyas, Kwok 2018).

    Threat model: white-box (gradients), targeted, *unbounded* perturbation confined to a square covering ``size``
    of the image, physical-world style: one patch for every image, wherever it lands.

    The patch ``p`` maximises the paper's objective ``E_{x∼X, t∼T} [log Pr(target_class | A(p, x, t))]``, where
    ``A`` pastes ``p`` onto ``x`` under a random transformation ``t``: position (uniform where the patch fits
    wholly in the image), scale (uniform in ``scale``, 1 meaning ``size`` of the image area), rotation (uniform in
    ``±rotation`` degrees) and a brightness shift (uniform in ``±brightness`` of the input range). ``region < 1``
    keeps the patch centre in the central ``region`` share of those positions — a sticker on the object rather than
    anywhere in the scene (the object centred in the frame, as in most classification data). Each step
    draws ``batch_size`` training images and one transformation per image, pastes differentiably (``affine_grid``
    / ``grid_sample`` place the rotated, scaled patch and its mask), and takes an Adam step on ``p``, which is
    then clipped to the input bounds. The patch starts uniformly random.

    Cost: ``steps · batch_size`` queries and gradients (read ``result.cost``).

    Args:
        target_class: class the patch should make the model predict.
        size: fraction of the image area the square patch covers at scale 1, in ``(0, 0.5]``.
        scale: ``(smallest, largest)`` scale factor of the patch side.
        rotation: largest rotation in degrees, in ``[0, 180]``.
        brightness: largest additive brightness shift, as a fraction of the input range, in ``[0, 1]``.
        region: share (per axis, in ``[0, 1]``) of the feasible positions the patch centre is drawn from, around
            the image centre; 1 = anywhere the patch fits.
        steps: optimisation steps.
        lr: Adam learning rate (raw input units per step, roughly).
        batch_size: images (and transformations) per step.
        seed: seed of the default generator (data sampling, transformations, initial patch).

    Shape:
        x_train: ``(N, *spec.shape)`` images (layout ``"chw"`` or ``"hwc"``); ``result.patch``: ``(C, h, w)``.

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.universal import UniversalPatch
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> result = UniversalPatch(target_class=3, size=0.5, steps=40).fit(target, data.x_train)
        >>> result.evaluate(target, data.x_test, data.y_test)["targeted_success_rate"] > 0.7
        True
    """

    name = "universal_patch"

    def __init__(
        self, target_class: int, *, size: float = 0.1, scale: tuple[float, float] = (0.8, 1.2),
        rotation: float = 20.0, brightness: float = 0.1, region: float = 1.0, steps: int = 500, lr: float = 0.05,
        batch_size: int = 64, seed: int | None = 0,
    ) -> None:
        self.target_class = target_class
        self.size = size
        self.scale = scale
        self.rotation = rotation
        self.brightness = brightness
        self.region = region
        self.steps = steps
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return params_of(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def _check_params(self, spec: InputSpec) -> None:
        if spec.layout not in ("chw", "hwc"):
            raise ParameterError(
                f"a patch needs images (InputSpec layout 'chw' or 'hwc'); the target's layout is {spec.layout!r}."
            )
        tc = self.target_class
        if isinstance(tc, bool) or not isinstance(tc, int) or not 0 <= tc < spec.n_classes:
            raise ParameterError(f"target_class must be a class index in 0..{spec.n_classes - 1}; got {tc!r}.")
        size = number(self.size, "size", 0, 0.5, open_lo=True, hint=" (fraction of the image area)")
        _check_scale(self.scale, size)
        number(self.rotation, "rotation", 0, 180, hint=" (degrees)")
        number(self.brightness, "brightness", 0, 1, hint=" (fraction of the input range)")
        number(self.region, "region", 0, 1, hint=" (share of the feasible positions, around the centre)")
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        number(self.lr, "lr", 0, math.inf, open_lo=True)

    def fit(
        self, target: TorchTarget, x_train: Any, *, generator: torch.Generator | None = None, progress: bool = False
    ) -> PatchResult:
        """Train the patch on ``x_train`` (labels are not needed) and return it as a :class:`PatchResult`."""
        spec = target.spec
        self._check_params(spec)
        target.require(Access.GRADIENTS, type(self).__name__)
        if not isinstance(target, TorchTarget):
            raise ParameterError(f"{type(self).__name__} trains through a TorchTarget; got {type(target).__name__}.")
        xt, _ = spec.validate(x_train)
        dev, dt = target.device, target.dtype
        gen = _generator(generator, self.seed, dev)
        x = to_chw(xt.to(dev, dt), spec)
        c, area = x.shape[1], x.shape[2] * x.shape[3]
        side = math.sqrt(float(self.size) * area)
        res = max(1, round(side))
        p_lo, p_hi = _patch_bounds(spec, dev, dt)
        lower, upper = spec.bounds_tensors(dev, dt)
        patch = (p_lo + (p_hi - p_lo) * torch.rand(c, res, res, generator=gen, device=dev, dtype=dt))
        patch.requires_grad_(True)
        opt = torch.optim.Adam([patch], lr=float(self.lr))
        sc = (float(self.scale[0]), float(self.scale[1]))
        shift = float(self.brightness) * spec.range_width
        labels = torch.full((self.batch_size,), self.target_class, device=dev, dtype=torch.long)
        fwd = target.differentiable(type(self).__name__)
        hist = torch.zeros(self.steps, 2, device=dev)
        q0, t0 = target.counter.used, time.perf_counter()
        with target.frozen():
            for step in progress_bar(range(self.steps), total=self.steps, description=self.name, enabled=progress):
                idx = torch.randint(0, x.shape[0], (self.batch_size,), generator=gen, device=dev)
                pasted, _ = _render(x[idx], patch, side, sc, float(self.rotation), shift, p_lo, p_hi, gen,
                                    float(self.region))
                logits = fwd(torch.clamp(from_chw(pasted, spec), lower, upper))
                loss = F.cross_entropy(logits, labels)
                (patch.grad,) = torch.autograd.grad(loss, patch)
                opt.step()
                with torch.no_grad():
                    patch.copy_(torch.maximum(torch.minimum(patch, p_hi), p_lo))
                    hist[step, 0] = loss.detach()
                    hist[step, 1] = (logits.argmax(1) == labels).float().mean()
        h = hist.cpu().tolist()
        cost = Cost(queries=target.counter.used - q0, gradients=self.steps * self.batch_size,
                    seconds=time.perf_counter() - t0)
        return PatchResult(
            attack=self.name, params=self.get_params(), cost=cost, patch=patch.detach(),
            target_class=self.target_class, spec=spec, side=side, scale=sc, rotation=float(self.rotation),
            brightness=float(self.brightness), region=float(self.region),
            history={"loss": [r[0] for r in h], "success": [r[1] for r in h]},
        )
