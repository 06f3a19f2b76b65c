"""Synthetic traffic signs: a bundled, generated stand-in for a road-sign classifier (the "sticker on a stop sign"
case of physical-world patch attacks).

No traffic-sign dataset (GTSRB, LISA) is available offline here, so sparring draws its own: eight sign classes, each
a coloured shape with a white/black symbol, rendered into 3×32×32 RGB images in ``[0, 1]`` at a random position,
size and rotation, over a smooth random background (sky, foliage, wall), with brightness/contrast jitter, a colour
cast and pixel noise. It is *synthetic*: results on it show that an attack or defence works on a road-sign-like
task, not how a real sign classifier behaves. The drawing is deterministic for a seed (numpy's PCG64), identical on
every machine.

Classes: ``stop`` (red octagon, white bar), ``yield`` (inverted white triangle, red rim), ``speed-limit`` (white
disc, red ring, black numerals), ``no-entry`` (red disc, white bar), ``priority`` (yellow diamond, white rim),
``warning`` (white triangle, red rim, black exclamation mark), ``mandatory`` (blue disc, white arrow), ``parking``
(blue square, white P).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sparring.data.datasets import Dataset
from sparring.errors import ParameterError
from sparring.targets.spec import InputSpec

__all__ = ["SIGN_CLASSES", "load_signs", "render_signs"]

SIGN_CLASSES = ("stop", "yield", "speed-limit", "no-entry", "priority", "warning", "mandatory", "parking")
_SIDE = 32
_RED, _WHITE, _BLACK = (0.80, 0.08, 0.10), (0.95, 0.95, 0.95), (0.05, 0.05, 0.05)
_BLUE, _YELLOW = (0.10, 0.30, 0.75), (0.97, 0.80, 0.10)

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (u, v) sign coordinates in [-1, 1] -> bool mask


def _polygon(n: int, r: float, phase: float) -> Mask:
    """Regular n-gon of circumradius r: inside every edge's half-plane (apothem r·cos(π/n))."""
    apothem = r * math.cos(math.pi / n)
    normals = [(math.cos(phase + (2 * k + 1) * math.pi / n), math.sin(phase + (2 * k + 1) * math.pi / n))
               for k in range(n)]
    return lambda u, v: np.all([u * a + v * b <= apothem for a, b in normals], axis=0)


def _disc(r: float) -> Mask:
    return lambda u, v: u * u + v * v <= r * r


def _box(u0: float, u1: float, v0: float, v1: float) -> Mask:
    return lambda u, v: (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _union(*masks: Mask) -> Mask:
    return lambda u, v: np.any([m(u, v) for m in masks], axis=0)


_UP, _DOWN = -math.pi / 2, math.pi / 2  # image v grows downwards: a vertex at angle -π/2 points up
_Layer = tuple[Mask, tuple[float, float, float]]
_SIGNS: dict[str, list[_Layer]] = {
    "stop": [(_polygon(8, 1.0, math.pi / 8), _RED), (_box(-0.62, 0.62, -0.16, 0.16), _WHITE)],
    "yield": [(_polygon(3, 1.0, _DOWN), _RED), (_polygon(3, 0.62, _DOWN), _WHITE)],
    "speed-limit": [(_disc(1.0), _RED), (_disc(0.74), _WHITE),
                    (_union(_box(-0.45, -0.08, -0.38, 0.38), _box(0.08, 0.45, -0.38, 0.38)), _BLACK),
                    (_union(_box(-0.33, -0.2, -0.26, 0.26), _box(0.2, 0.33, -0.26, 0.26)), _WHITE)],
    "no-entry": [(_disc(1.0), _RED), (_box(-0.66, 0.66, -0.18, 0.18), _WHITE)],
    "priority": [(_polygon(4, 1.0, 0.0), _WHITE), (_polygon(4, 0.78, 0.0), _YELLOW)],
    "warning": [(_polygon(3, 1.0, _UP), _RED), (_polygon(3, 0.66, _UP), _WHITE),
                (_union(_box(-0.07, 0.07, -0.3, 0.12), _box(-0.07, 0.07, 0.2, 0.32)), _BLACK)],
    "mandatory": [(_disc(1.0), _BLUE),
                  (_union(_box(-0.12, 0.12, -0.1, 0.62), _polygon(3, 0.42, _UP)), _WHITE)],
    "parking": [(_box(-0.9, 0.9, -0.9, 0.9), _BLUE),
                (_union(_box(-0.4, -0.18, -0.6, 0.6), _box(-0.4, 0.3, -0.6, -0.4), _box(-0.4, 0.3, -0.1, 0.1),
                        _box(0.16, 0.36, -0.6, 0.1)), _WHITE)],
}


def _background(rng: np.random.Generator) -> np.ndarray:
    """A smooth random scene: a vertical colour gradient plus low-frequency colour noise, (3, 32, 32)."""
    top, bottom = rng.uniform(0.1, 0.9, 3), rng.uniform(0.05, 0.7, 3)
    t = np.linspace(0.0, 1.0, _SIDE)[None, :, None]
    grad = top[:, None, None] * (1 - t) + bottom[:, None, None] * t
    coarse = torch.from_numpy(rng.normal(0.0, 0.12, (1, 3, 4, 4)).astype(np.float32))
    noise = F.interpolate(coarse, size=(_SIDE, _SIDE), mode="bicubic", align_corners=False)[0].numpy()
    out: np.ndarray = np.broadcast_to(grad, (3, _SIDE, _SIDE)) + noise
    return out


def _draw(label: int, rng: np.random.Generator) -> np.ndarray:
    img = _background(rng)
    radius = rng.uniform(9.0, 13.5)
    cx, cy = _SIDE / 2 + rng.uniform(-3.5, 3.5, 2)
    angle = math.radians(rng.uniform(-12.0, 12.0))
    aspect = rng.uniform(0.85, 1.0)  # seen slightly from the side
    yy, xx = np.mgrid[0:_SIDE, 0:_SIDE].astype(np.float64) + 0.5
    dx, dy = (xx - cx) / radius, (yy - cy) / radius
    u = (math.cos(angle) * dx + math.sin(angle) * dy) / aspect
    v = -math.sin(angle) * dx + math.cos(angle) * dy
    # 4× supersampling of the mask edges for anti-aliasing: average masks at sub-pixel offsets
    offsets = [(-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25)]
    for mask, colour in _SIGNS[SIGN_CLASSES[label]]:
        cover = np.mean([mask(u + ou / radius, v + ov / radius) for ou, ov in offsets], axis=0)
        tint = np.asarray(colour)[:, None, None] * rng.uniform(0.9, 1.05)
        img = img * (1 - cover) + tint * cover
    gain, bias = rng.uniform(0.6, 1.15), rng.uniform(-0.1, 0.1)
    cast = rng.uniform(0.9, 1.1, 3)[:, None, None]
    img = img * gain * cast + bias + rng.normal(0.0, 0.03, img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def render_signs(labels: np.ndarray | list[int], *, seed: int = 0) -> torch.Tensor:
    """Draw one sign image (3×32×32, values in ``[0, 1]``) per label, deterministically for ``seed``."""
    ys = np.asarray(labels, dtype=np.int64).reshape(-1)
    if ys.size and (ys.min() < 0 or ys.max() >= len(SIGN_CLASSES)):
        raise ParameterError(f"sign labels must be in 0..{len(SIGN_CLASSES) - 1} ({', '.join(SIGN_CLASSES)}); "
                             f"got values {ys.min()}..{ys.max()}.")
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([_draw(int(y), rng) for y in ys])) if ys.size else torch.empty(0, 3, 32, 32)


def load_signs(*, n_train: int = 2400, n_test: int = 800, seed: int = 0) -> Dataset:
    """The synthetic traffic-sign dataset: balanced classes, train and test drawn from independent streams.

    Args:
        n_train, n_test: images per split (rounded down to a multiple of the 8 classes).
        seed: the drawing seed (the test split uses ``seed + 1``, so no image appears in both).
    """
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n < len(SIGN_CLASSES):
            raise ParameterError(f"{name} must be an integer >= {len(SIGN_CLASSES)}; got {n!r}.")
    k = len(SIGN_CLASSES)

    def labels(n: int, s: int) -> np.ndarray:
        y = np.repeat(np.arange(k), n // k)
        np.random.default_rng(s).shuffle(y)
        return y

    y_tr, y_te = labels(n_train, seed + 100), labels(n_test, seed + 101)
    spec = InputSpec(shape=(3, _SIDE, _SIDE), n_classes=k, bounds=(0.0, 1.0), layout="chw", class_names=SIGN_CLASSES)
    return Dataset("signs-32", render_signs(y_tr, seed=seed), torch.from_numpy(y_tr),
                   render_signs(y_te, seed=seed + 1), torch.from_numpy(y_te), spec)
