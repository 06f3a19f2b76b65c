r"""Input-preprocessing defences: transforms applied to the input before the model, each with its BPDA gradient.

Every defence here is a small ``nn.Module`` acting in raw input space on a batch ``(N, C, H, W)``; :func:`defend`
puts one or more of them in front of a :class:`~sparring.targets.TorchTarget`'s model and returns the defended
system as one target with the same spec, so every attack, check and report sees the whole system.

**Preprocessing alone is not a defence against an adaptive attacker.** Athalye, Carlini & Wagner (2018),
"Obfuscated Gradients Give a False Sense of Security", broke bit-depth reduction, JPEG and total-variation
minimisation (the transformations of Guo et al. 2018) with BPDA, and He, Wei, Chen, Carlini & Song (2017) broke
feature squeezing (bit depth and median smoothing): the transforms mostly *shatter* the gradient (rounding has a
zero gradient, a median a sparse one) so that naive gradient attacks fail, while the model behind them is about as
vulnerable as before. Report robustness of a preprocessed model only from an adaptive attack:
each transform's :meth:`Preprocessor.bpda_approx` is its differentiable stand-in on the backward pass, and
:func:`bpda` wraps a defended target with all of them at once::

    defended = defend(target, BitDepth(3), MedianSmoothing(2))
    naive = PGD(eps=0.1)(defended, x, y)          # optimistic: the gradient is shattered
    honest = PGD(eps=0.1)(bpda(defended), x, y)   # the number to report

The transforms:

* :class:`BitDepth`, :class:`MedianSmoothing` — the squeezers of feature squeezing (Xu, Evans, Qi 2018);
* :class:`JpegCompression` — block-DCT quantisation as in baseline JPEG (Dziugaite et al. 2016; Guo et al. 2018),
  computed natively in torch;
* :class:`SpatialSmoothing` — a median or mean window filter;
* :class:`TotalVariation` — total-variation minimisation (Guo, Rana, Cissé, van der Maaten 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from sparring.attacks.adaptive import with_bpda
from sparring.errors import ParameterError
from sparring.targets.spec import InputSpec, Layout
from sparring.targets.torch import Forward, TorchTarget

__all__ = [
    "BitDepth",
    "JpegCompression",
    "MedianSmoothing",
    "Preprocessor",
    "SpatialSmoothing",
    "TotalVariation",
    "bpda",
    "defend",
]

Approx = Callable[[torch.Tensor], torch.Tensor]
Bounds = tuple[float, float]

# The standard JPEG luminance quantisation table (ITU-T T.81, Annex K, Table K.1), in natural (row-major) order.
_LUMINANCE_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_BLOCK = 8
_TINY = 1e-30


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class Preprocessor(nn.Module):
    """Base of the input transforms: a module on raw inputs ``(N, C, H, W)`` with a BPDA approximation.

    Subclasses implement ``forward`` (the exact, possibly non-differentiable transform) and may override
    :meth:`bpda_approx`. The approximation must not call the module itself (BPDA hooks sit on the module).
    """

    def bpda_approx(self) -> Approx:
        """The differentiable function that stands in for this transform on the backward pass of BPDA.

        Default: the identity (straight-through), as Athalye et al. (2018) use for quantisation and JPEG. Use it as
        ``with_bpda(defended, modules=[t], approx=t.bpda_approx())``, or :func:`bpda` for every transform at once.
        """
        return _identity

    def get_params(self) -> dict[str, Any]:
        """The transform's parameters as given (for reports)."""
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())


# ---------------------------------------------------------------------------------------------------- checks
def _check_int(value: object, name: str, lo: int, hi: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ParameterError(f"{name} must be an integer in {lo}..{hi} ({hint}); got {value!r}.")
    return value


def _check_positive(value: object, name: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ParameterError(f"{name} must be a finite number > 0 ({hint}); got {value!r}.")
    return float(value)


def _check_bounds(bounds: object) -> Bounds:
    try:
        lo, hi = (float(b) for b in bounds)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ParameterError(f"bounds must be two numbers (low, high), e.g. (0.0, 1.0); got {bounds!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ParameterError(f"bounds must be finite with low < high, e.g. (0.0, 1.0); got {bounds!r}.")
    return lo, hi


def _check_images(x: torch.Tensor, who: str) -> None:
    if x.ndim != 4:
        raise ParameterError(
            f"{who} takes a batch of images (N, C, H, W); got shape {tuple(x.shape)}. Channels-last images are "
            "permuted by defend(); for a single image add a batch axis with x[None]."
        )


# ---------------------------------------------------------------------------------------------------- squeezing
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
        self.bits = _check_int(bits, "bits", 1, 16, "Xu et al. use 1 on MNIST, 4-5 on colour images")
        self.bounds = _check_bounds(bounds)

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
        self.kernel = _check_int(kernel, "kernel", 2, 7, "Xu et al. use 2 or 3")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "MedianSmoothing")
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
        self.kernel = _check_int(kernel, "kernel", 2, 15, "e.g. 3")
        if mode not in ("median", "mean"):
            raise ParameterError(f"mode must be 'median' or 'mean'; got {mode!r}.")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "SpatialSmoothing")
        return _median_filter(x, self.kernel) if self.mode == "median" else _mean_filter(x, self.kernel)

    def bpda_approx(self) -> Approx:
        kernel = self.kernel
        return lambda x: _mean_filter(x, kernel)

    def get_params(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "mode": self.mode}


# ---------------------------------------------------------------------------------------------------- JPEG
def _dct_matrix() -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix ``D``: coefficients of a block ``B`` are ``D B Dᵀ``."""
    k = torch.arange(_BLOCK, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(_BLOCK, dtype=torch.float64).unsqueeze(0)
    d = torch.cos((2 * n + 1) * k * math.pi / (2 * _BLOCK)) * math.sqrt(2 / _BLOCK)
    d[0] /= math.sqrt(2)
    return d


def _quant_table(quality: int) -> torch.Tensor:
    """The luminance table scaled by quality as libjpeg does (``jpeg_quality_scaling``), baseline range 1..255."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    table = torch.tensor(_LUMINANCE_TABLE, dtype=torch.float64)
    return torch.floor((table * scale + 50) / 100).clamp(1, 255)


class JpegCompression(Preprocessor):
    r"""JPEG compression and decompression, natively in torch (the JPEG defence of Dziugaite, Ghahramani, Roy 2016,
    and of Guo, Rana, Cissé, van der Maaten 2018; the codec is ITU-T T.81 baseline).

    Values are mapped from ``bounds`` to 0..255 and level-shifted by -128; each channel is cut into 8×8 blocks
    (edges padded by replication, cropped after); each block goes through the orthonormal 2-D DCT, its
    coefficients are divided by the standard luminance quantisation table scaled by ``quality`` (libjpeg's
    scaling: ``5000/q`` below 50, ``200 - 2q`` from 50; entries clipped to 1..255), **rounded**, multiplied back
    and inverse-transformed; decoded pixels are rounded and clipped to 0..255 and mapped back to ``bounds``.
    Every channel uses the luminance table; unlike a real codec there is no RGB→YCbCr conversion, no chroma
    subsampling and no entropy coding (lossless, so irrelevant to the output). Quality 100 (all-ones table) is
    nearly the identity; low quality zeroes most high-frequency coefficients.

    The rounding has a zero gradient (:func:`~sparring.attacks.adaptive.find_gradient_blockers` reports it).
    :meth:`bpda_approx` is the identity, as in Athalye et al. (2018): at quality 50 on the zoo digits CNN, PGD at
    L∞ 0.1 through it leaves 22% robust accuracy, against 42-66% through a smooth JPEG (the cubic rounding of
    Shin & Song 2017, "JPEG-resistant Adversarial Images"), whose gradient vanishes near every integer and at the
    clipped black background. JPEG preprocessing falls to adaptive attacks (Athalye et al. 2018; Shin & Song 2017).

    Args:
        quality: JPEG quality 1..100 (libjpeg's default is 75; Guo et al. use 75).
        bounds: ``(low, high)`` raw range of the inputs (the target spec's bounds).

    Example:
        >>> import torch
        >>> from sparring.defenses.preprocess import JpegCompression
        >>> x = torch.rand(2, 1, 28, 28)
        >>> float((JpegCompression(100)(x) - x).abs().max()) < 0.02
        True
    """

    def __init__(self, quality: int = 75, *, bounds: Bounds = (0.0, 1.0)) -> None:
        super().__init__()
        self.quality = _check_int(quality, "quality", 1, 100, "libjpeg's default is 75")
        self.bounds = _check_bounds(bounds)
        self.dct: torch.Tensor
        self.table: torch.Tensor
        self.register_buffer("dct", _dct_matrix().float(), persistent=False)
        self.register_buffer("table", _quant_table(self.quality).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "JpegCompression")
        lo, hi = self.bounds
        n, c, h, w = x.shape
        ph, pw = -h % _BLOCK, -w % _BLOCK
        pix = ((x - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0 - 128.0
        if ph or pw:
            pix = F.pad(pix.reshape(n * c, 1, h, w), (0, pw, 0, ph), mode="replicate").reshape(n, c, h + ph, w + pw)
        bh, bw = (h + ph) // _BLOCK, (w + pw) // _BLOCK
        # (N, C, bh, 8, bw, 8) -> (N, C, bh, bw, 8, 8): one 8×8 block per trailing pair of axes
        blocks = pix.reshape(n, c, bh, _BLOCK, bw, _BLOCK).transpose(3, 4)
        d, table = self.dct.to(x.dtype), self.table.to(x.dtype)
        coef = d @ blocks @ d.T
        coef = torch.round(coef / table) * table
        blocks = d.T @ coef @ d
        pix = blocks.transpose(3, 4).reshape(n, c, h + ph, w + pw)[:, :, :h, :w]
        pix = torch.round(pix + 128.0).clamp(0.0, 255.0)
        return pix / 255.0 * (hi - lo) + lo

    def get_params(self) -> dict[str, Any]:
        return {"quality": self.quality, "bounds": self.bounds}


# ---------------------------------------------------------------------------------------------------- TV
def _grad2d(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along H and W, zero on the last row/column (Chambolle 2004's discrete gradient)."""
    gh = F.pad(u[:, :, 1:] - u[:, :, :-1], (0, 0, 0, 1))
    gw = F.pad(u[:, :, :, 1:] - u[:, :, :, :-1], (0, 1))
    return gh, gw


def _div2d(ph: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
    """The discrete divergence, minus the adjoint of :func:`_grad2d` (``ph``/``pw`` are zero on the last row/col)."""
    return ph - F.pad(ph[:, :, :-1], (0, 0, 1, 0)) + pw - F.pad(pw[:, :, :, :-1], (1, 0))


class TotalVariation(Preprocessor):
    r"""Total-variation minimisation (Guo, Rana, Cissé, van der Maaten 2018, "Countering Adversarial Images using
    Input Transformations"), deterministic variant.

    The output is an approximate solution of the TV-regularised reconstruction (the ROF model)

    .. math:: z^\star = \arg\min_z \tfrac12 \lVert z - x \rVert_2^2 + \lambda \, \mathrm{TV}(z),

    per image and channel, with the isotropic discrete total variation, computed by ``steps`` iterations of
    Chambolle's (2004) projected gradient method on the dual (step 1/8, guaranteed to converge, no smoothing of the
    TV), then clipped to ``bounds``. Variant: Guo et al. first drop pixels at random (a Bernoulli mask in the data
    term) and solve with a special-purpose solver; here every pixel is kept, so the defence is deterministic, and the
    solver is stopped after ``steps`` iterations. The iterations are plain tensor operations, so autograd unrolls
    them and :meth:`bpda_approx` is the transform itself: on the zoo digits CNN (λ 0.05, 30 steps) PGD at L∞ 0.1
    leaves about 20% robust accuracy through the exact gradient, against 25% through the identity Athalye et al.
    (2018) use for this defence (``with_bpda(..., approx=None)``). TV minimisation falls to adaptive attacks.

    Args:
        weight: λ, the strength of the TV term in the units of the inputs (e.g. 0.03 to 0.1 for 0-1 pixels).
        steps: dual iterations (20 to 50 give most of the effect).
        bounds: ``(low, high)`` raw range the output is clipped to (the target spec's bounds).

    Example:
        >>> import torch
        >>> from sparring.defenses.preprocess import TotalVariation
        >>> x = torch.rand(1, 1, 16, 16)
        >>> z = TotalVariation(0.1, steps=30)(x)
        >>> bool((z[..., 1:] - z[..., :-1]).abs().sum() < (x[..., 1:] - x[..., :-1]).abs().sum())
        True
    """

    def __init__(self, weight: float = 0.05, steps: int = 30, *, bounds: Bounds = (0.0, 1.0)) -> None:
        super().__init__()
        self.weight = _check_positive(weight, "weight", "e.g. 0.05 for 0-1 pixels")
        self.steps = _check_int(steps, "steps", 1, 10_000, "e.g. 30")
        self.bounds = _check_bounds(bounds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "TotalVariation")
        lam, tau = self.weight, 1.0 / 8.0
        ph, pw = torch.zeros_like(x), torch.zeros_like(x)
        for _ in range(self.steps):
            gh, gw = _grad2d(_div2d(ph, pw) - x / lam)
            # clamp_min: the same value up to 1e-15, and a zero (not NaN) gradient where the field is flat
            scale = 1.0 + tau * torch.sqrt((gh * gh + gw * gw).clamp_min(_TINY))
            ph, pw = (ph + tau * gh) / scale, (pw + tau * gw) / scale
        lo, hi = self.bounds
        return (x - lam * _div2d(ph, pw)).clamp(lo, hi)

    def bpda_approx(self) -> Approx:
        return self.forward  # differentiable as it is (the bound method: BPDA hooks on the module do not fire)

    def get_params(self) -> dict[str, Any]:
        return {"weight": self.weight, "steps": self.steps, "bounds": self.bounds}


# ---------------------------------------------------------------------------------------------------- defend
class _Defended(nn.Module):
    """``transforms`` on raw inputs, then the spec's normalisation, then the model.

    ``forward`` takes what a :class:`TorchTarget` feeds its model (normalised inputs when the spec normalises, so a
    plain ``TorchTarget(defended.model, spec)`` runs the whole system, exact up to the float rounding of undoing
    the normalisation); :meth:`forward_raw` takes raw inputs and is exact (the defended target uses it)."""

    def __init__(
        self, transforms: Sequence[nn.Module], model: nn.Module, norm: tuple[torch.Tensor, torch.Tensor] | None,
        layout: Layout,
    ) -> None:
        super().__init__()
        self.transforms: nn.Sequential = nn.Sequential(*transforms)
        self.model: nn.Module = model
        self.channels_last = layout == "hwc"
        self.mean: torch.Tensor | None
        self.std: torch.Tensor | None
        self.register_buffer("mean", None if norm is None else norm[0], persistent=False)
        self.register_buffer("std", None if norm is None else norm[1], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_raw(x if self.mean is None or self.std is None else x * self.std + self.mean)

    def forward_raw(self, raw: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            out = self.transforms(raw.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        else:
            out = self.transforms(raw)
        if self.mean is not None and self.std is not None:
            out = (out - self.mean) * (1.0 / self.std)  # exactly as TorchTarget normalises
        return self.model(out)  # type: ignore[no-any-return]


class _DefendedTarget(TorchTarget):
    """A TorchTarget whose model is a :class:`_Defended`, fed raw inputs directly (no normalisation round trip)."""

    def _raw_forward(self) -> Forward:
        model = self.model
        assert isinstance(model, _Defended)
        return model.forward_raw


def image_bounds(spec: InputSpec, what: str, who: str) -> Bounds:
    """The one (low, high) pixel range of an image spec; ParameterError naming ``what``/``who`` otherwise."""
    if spec.layout not in ("chw", "hwc"):
        raise ParameterError(
            f"{what} works on images; the target's spec has layout {spec.layout!r}. Declare the "
            "spec with layout='chw' or 'hwc'."
        )
    lo, hi = spec.bounds_tensors()
    if lo.numel() != 1 or hi.numel() != 1:
        raise ParameterError(f"{who} needs one low and one high bound for all pixels; the spec has per-feature bounds.")
    return (float(lo), float(hi))


def check_transforms(transforms: Sequence[object], bounds: Bounds, device: torch.device, *, noun: str,
                     example: str) -> None:
    """Every transform is an ``nn.Module`` whose own ``bounds`` (if any) match the target's; move them to ``device``.

    ``noun`` names an item in messages (``"transform"``, ``"squeezer"``), ``example`` shows a valid one.
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, nn.Module):
            raise ParameterError(f"{noun} {i} must be a torch.nn.Module (e.g. {example}); got {type(t).__name__}.")
        own = getattr(t, "bounds", None)
        if own is not None and not all(math.isclose(a, b) for a, b in zip(own, bounds, strict=True)):
            raise ParameterError(
                f"{noun} {i} ({type(t).__name__}) has bounds {tuple(own)} but the target's inputs lie in "
                f"{bounds}; build it with bounds={bounds}."
            )
        t.to(device=device)


def defend(target: TorchTarget, *transforms: nn.Module) -> TorchTarget:
    """The defended system: ``transforms`` applied, in order, to raw inputs in front of ``target``'s model.

    Returns a :class:`~sparring.targets.TorchTarget` with the same spec, access, output, batch size and query counter
    as ``target`` (the original is unchanged). On raw inputs it computes exactly what the original target computes
    on the transformed inputs: ``model(normalise(transforms(x)))``. Its model (``defended.model``, with the parts
    ``.transforms`` and ``.model``) takes normalised inputs like the original model, so ``TorchTarget(defended.model,
    spec)`` runs the same system, up to the float rounding of undoing the normalisation. Channels-last images are
    permuted so that the transforms always see ``(N, C, H, W)``. Defending a defended target appends to its chain.

    Attacks on the result are *naive* unless wrapped: non-differentiable transforms shatter the gradient, so wrap the
    defended target with :func:`bpda` (or :func:`~sparring.attacks.adaptive.with_bpda`) before trusting any number.

    Args:
        target: an undefended white-box target on images (layout ``"chw"`` or ``"hwc"``, one low and one high
            bound); apply BPDA/EOT wrappers after :func:`defend`, not before.
        transforms: one or more ``nn.Module`` transforms on raw ``(N, C, H, W)`` batches that keep the shape, e.g.
            the :class:`Preprocessor` classes of this module. Their ``bounds`` (if any) must equal the spec's.

    Example:
        >>> from sparring import PGD, zoo
        >>> from sparring.defenses.preprocess import BitDepth, MedianSmoothing, bpda, defend
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> defended = defend(target, BitDepth(3), MedianSmoothing(2))
        >>> x, y = data.x_test[:32], data.y_test[:32]
        >>> naive, honest = PGD(eps=0.1)(defended, x, y), PGD(eps=0.1)(bpda(defended), x, y)
        >>> honest.robust_accuracy < naive.robust_accuracy
        True
    """
    if not isinstance(target, TorchTarget):
        raise ParameterError(
            f"defend needs a TorchTarget (a white-box PyTorch model); got {type(target).__name__}. Wrap the model "
            "with TorchTarget(model, spec) first."
        )
    if type(target) not in (TorchTarget, _DefendedTarget) and not _plain_onnx(target):
        raise ParameterError(
            f"defend got a wrapped target ({type(target).__name__}, e.g. from with_bpda or with_eot); defend the "
            "plain target first, then wrap the defended one: with_bpda(defend(target, ...), ...)."
        )
    if not transforms:
        raise ParameterError("defend needs at least one transform, e.g. defend(target, BitDepth(3)).")
    spec = target.spec
    spec_bounds = image_bounds(spec, "input preprocessing", "defend")
    check_transforms(transforms, spec_bounds, target.device, noun="transform", example="BitDepth(3)")
    inner, chain = target.model, list(transforms)
    if isinstance(target, _DefendedTarget) and isinstance(inner, _Defended):  # defended again: one flat chain
        earlier: list[nn.Module] = list(inner.transforms.children())
        inner, chain = inner.model, earlier + chain
    model = _Defended(chain, inner, spec.norm_tensors(target.device, target.dtype), spec.layout)
    defended = _DefendedTarget(
        model, spec, access=target.access, output=target.output, batch_size=target.batch_size,
        top_k=target.top_k, decimals=target.decimals,
    )
    defended.counter = target.counter
    return defended


def _plain_onnx(target: TorchTarget) -> bool:
    """A converted ONNX graph whose forward is its module's (no fixed export batch to feed in chunks): defending
    its module is defending the model."""
    from sparring.targets.onnx_torch import OnnxTorchTarget

    return type(target) is OnnxTorchTarget and target.fixed_batch is None


def bpda(target: TorchTarget) -> TorchTarget:
    """BPDA through every :class:`Preprocessor` of a target made by :func:`defend`, each with its own
    :meth:`~Preprocessor.bpda_approx` (Athalye, Carlini, Wagner 2018, section 4.1).

    The forward pass stays exactly the defended model's; only gradients change. Equivalent to
    ``with_bpda(target, modules=[...], approx={name: t.bpda_approx() for ...})``.

    Args:
        target: a defended target (from :func:`defend`) or any TorchTarget whose model contains
            :class:`Preprocessor` modules.

    Example:
        >>> from sparring import zoo
        >>> from sparring.defenses.preprocess import JpegCompression, bpda, defend
        >>> adaptive = bpda(defend(zoo.load("digits-cnn"), JpegCompression(50)))
        >>> adaptive.describe()["adaptive"]
        ['bpda: transforms.0 (identity)']
    """
    if not isinstance(target, TorchTarget):
        raise ParameterError(f"bpda needs a TorchTarget from defend(); got {type(target).__name__}.")
    found = [(n, m) for n, m in target.model.named_modules() if isinstance(m, Preprocessor)]
    if not found:
        raise ParameterError(
            "bpda found no preprocessing transform (BitDepth, JpegCompression, ...) in the target's model; build "
            "the target with defend(target, ...), or use with_bpda(target, modules=[...]) for other modules."
        )
    approx = {n: a for n, m in found if (a := m.bpda_approx()) is not _identity}  # unnamed: straight-through
    return with_bpda(target, modules=found, approx=approx)
