"""Norms, projections and steepest-ascent directions shared by gradient and black-box attacks.

All functions work on batches ``(N, ...)`` and keep tensors on their device.
"""

from __future__ import annotations

import enum
import math

import torch

from sparring.errors import ParameterError

__all__ = ["Norm", "ball_random", "norm_of", "project", "steepest_direction"]

_TINY = 1e-12


class Norm(enum.Enum):
    """A perturbation norm. Parse user input with :meth:`Norm.parse` (accepts ``"linf"``, ``"inf"``, ``2``, ...)."""

    LINF = "linf"
    L2 = "l2"

    @classmethod
    def parse(cls, value: object) -> Norm:
        if isinstance(value, Norm):
            return value
        key = str(value).strip().lower().replace("∞", "inf")
        aliases = {"linf": cls.LINF, "inf": cls.LINF, "l_inf": cls.LINF, "infinity": cls.LINF,
                   "l2": cls.L2, "2": cls.L2, "2.0": cls.L2}
        if key in aliases:
            return aliases[key]
        if isinstance(value, float) and math.isinf(value):
            return cls.LINF
        raise ParameterError(f"unknown norm {value!r}; use 'linf' or 'l2'.")


def norm_of(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example norm of a batch of perturbations."""
    flat = delta.reshape(delta.shape[0], -1)
    if norm is Norm.LINF:
        return flat.abs().amax(dim=1)
    out: torch.Tensor = torch.linalg.vector_norm(flat, ord=2, dim=1)
    return out


def _per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def steepest_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The unit-norm direction of steepest ascent for a linearised loss: sign for L∞, normalised gradient for L2."""
    if norm is Norm.LINF:
        return grad.sign()
    return grad / _per_example(norm_of(grad, Norm.L2).clamp_min(_TINY), grad)


def project(delta: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """Project perturbations onto the ``eps``-ball of ``norm`` (not the input bounds)."""
    if norm is Norm.LINF:
        return delta.clamp(-eps, eps)
    n = _per_example(norm_of(delta, Norm.L2), delta)
    return delta * (eps / n.clamp_min(_TINY)).clamp(max=1.0)


def ball_random(
    like: torch.Tensor, norm: Norm, eps: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform random points in the ``eps``-ball, one per example, on ``like``'s device and dtype."""
    shape, dev, dt = like.shape, like.device, like.dtype
    if norm is Norm.LINF:
        u = torch.rand(shape, generator=generator, device=dev, dtype=dt)
        return (2 * u - 1) * eps
    d = like[0].numel()
    g = torch.randn(shape, generator=generator, device=dev, dtype=dt)
    g = g / _per_example(norm_of(g, Norm.L2).clamp_min(_TINY), g)
    r = torch.rand(shape[0], generator=generator, device=dev, dtype=dt) ** (1.0 / d)
    return g * _per_example(r * eps, g)
