"""The squeezers of feature squeezing (Xu, Evans & Qi 2018, "Feature Squeezing: Detecting Adversarial Examples in
Deep Neural Networks"): bit-depth reduction and median smoothing, plus a median or mean window filter.

Their gradients are shattered (rounding has a zero gradient, a median a sparse one): report them only under BPDA
(He, Wei, Chen, Carlini & Song 2017 broke feature squeezing so). Re-exported by :mod:`.image`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch.nn import functional as F

from sparring.defenses.preprocess.base import (
    Approx,
    Bounds,
    Preprocessor,
    check_bounds,
    check_images,
    check_int,
)
from sparring.errors import ParameterError

__all__ = ["BitDepth", "MedianSmoothing", "SpatialSmoothing"]


class BitDepth(Preprocessor):
    r"""Colour-depth reduction, a feature squeezer (Xu, Evans, Qi 2018, "Feature Squeezing: Detecting Adversarial
    Examples in Deep Neural Networks", the colour-depth squeezer).

    Each value is rescaled from ``bounds`` to ``[0, 1]``, rounded to ``2**bits`` evenly spaced levels,
    :math:`\mathrm{round}(u (2^b - 1)) / (2^b - 1)`, and rescaled back. The paper uses 1 bit on MNIST and 4-5 bits on
    CIFAR-10 and ImageNet. Rounding has a zero gradient almost everywhere, so naive gradient attacks stall; under
    BPDA (straight-through, the default :meth:`bpda_approx`) the defence falls to adaptive attacks (Athalye et al.
    2018), up to the few pixels the rounding truly pins.

    Args:
        bits: bits per value, 1..16.
        bounds: ``(low, high)`` raw range of the inputs (the target spec's bounds).

    Example:
        >>> import torch
        >>> from sparring.defenses.preprocess import BitDepth
        >>> BitDepth(1)(torch.tensor([[[[0.2, 0.7]]]])).flatten().tolist()
        [0.0, 1.0]
    """

    def __init__(self, bits: int = 3, *, bounds: Bounds = (0.0, 1.0)) -> None:
        super().__init__()
        self.bits = check_int(bits, "bits", 1, 16, "Xu et al. use 1 on MNIST, 4-5 on colour images")
        self.bounds = check_bounds(bounds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.bounds
        levels = (1 << self.bits) - 1
        u = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
        return torch.round(u * levels) / levels * (hi - lo) + lo

    def get_params(self) -> dict[str, Any]:
        return {"bits": self.bits, "bounds": self.bounds}


def _window(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Every ``kernel × kernel`` window of each channel, ``(N, C, kernel², H, W)``, edges replicated.

    Even windows extend one more pixel up/left than down/right (the window of pixel ``i`` is
    ``i - kernel//2 .. i + (kernel-1)//2``)."""
    n, c, h, w = x.shape
    before, after = kernel // 2, (kernel - 1) // 2
    padded = F.pad(x.reshape(n * c, 1, h, w), (before, after, before, after), mode="replicate")
    return F.unfold(padded, kernel).reshape(n, c, kernel * kernel, h, w)


def _median_filter(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Per-channel window median; for even windows, the mean of the two middle values."""
    values = _window(x, kernel).sort(dim=2).values
    k2 = kernel * kernel
    if k2 % 2:
        return values[:, :, k2 // 2]
    return (values[:, :, k2 // 2 - 1] + values[:, :, k2 // 2]) / 2


def _mean_filter(x: torch.Tensor, kernel: int) -> torch.Tensor:
    return _window(x, kernel).mean(dim=2)


class MedianSmoothing(Preprocessor):
    """Median smoothing, a feature squeezer (Xu, Evans, Qi 2018, "Feature Squeezing", local spatial smoothing).

    Each pixel is replaced by the median of the ``kernel × kernel`` window around it, per channel, edges replicated
    (for even windows, which extend one pixel further up/left, the mean of the two middle values). The paper uses
    2×2 on MNIST and CIFAR-10. The median passes gradient to one (or two) input values per window only; for BPDA
    :meth:`bpda_approx` is the mean filter of the same window, the smooth version of the same local averaging (on
    the zoo digits CNN, PGD at L∞ 0.1 through it leaves 17% robust accuracy behind a 2×2 median, against 31% through
    the identity). Like every preprocessing step it falls to adaptive attacks (He et al. 2017).

    Args:
        kernel: window side, 2..7 (the paper: 2 or 3).

    Example:
        >>> import torch
        >>> from sparring.defenses.preprocess import MedianSmoothing
        >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 1.0  # one salt pixel
        >>> float(MedianSmoothing(3)(x).max())
        0.0
    """

    def __init__(self, kernel: int = 2) -> None:
        super().__init__()
        self.kernel = check_int(kernel, "kernel", 2, 7, "Xu et al. use 2 or 3")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, "MedianSmoothing")
        return _median_filter(x, self.kernel)

    def bpda_approx(self) -> Approx:
        kernel = self.kernel
        return lambda x: _mean_filter(x, kernel)

    def get_params(self) -> dict[str, Any]:
        return {"kernel": self.kernel}


class SpatialSmoothing(Preprocessor):
    """A window filter on each channel: median (the local spatial smoothing of Xu, Evans, Qi 2018) or mean (a box
    blur).

    Each pixel becomes the median or mean of the ``kernel × kernel`` window around it, edges replicated (even
    windows extend one pixel further up/left; their median is the mean of the two middle values). The mean filter
    is differentiable and is its own BPDA approximation; the median's :meth:`bpda_approx` is the mean filter.
    Smoothing alone falls to adaptive attacks (Athalye et al. 2018): report robustness under :func:`bpda`.

    Args:
        kernel: window side, 2..15.
        mode: ``"median"`` or ``"mean"``.

    Example:
        >>> import torch
        >>> from sparring.defenses.preprocess import SpatialSmoothing
        >>> SpatialSmoothing(3, mode="mean")(torch.ones(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(self, kernel: int = 3, *, mode: Literal["median", "mean"] = "median") -> None:
        super().__init__()
        self.kernel = check_int(kernel, "kernel", 2, 15, "e.g. 3")
        if mode not in ("median", "mean"):
            raise ParameterError(f"mode must be 'median' or 'mean'; got {mode!r}.")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, "SpatialSmoothing")
        return _median_filter(x, self.kernel) if self.mode == "median" else _mean_filter(x, self.kernel)

    def bpda_approx(self) -> Approx:
        kernel = self.kernel
        return lambda x: _mean_filter(x, kernel)

    def get_params(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "mode": self.mode}
