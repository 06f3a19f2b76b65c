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

The transforms (in :mod:`.squeeze`, :mod:`.jpeg` and :mod:`.tv` on the base :mod:`.base`; re-exported here):

* :class:`BitDepth`, :class:`MedianSmoothing` — the squeezers of feature squeezing (Xu, Evans, Qi 2018);
* :class:`JpegCompression` — block-DCT quantisation as in baseline JPEG (Dziugaite et al. 2016; Guo et al. 2018),
  computed natively in torch;
* :class:`SpatialSmoothing` — a median or mean window filter;
* :class:`TotalVariation` — total-variation minimisation (Guo, Rana, Cissé, van der Maaten 2018).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from sparring.attacks.adaptive import with_bpda
from sparring.defenses.preprocess.base import Bounds, Preprocessor, identity
from sparring.defenses.preprocess.jpeg import JpegCompression
from sparring.defenses.preprocess.squeeze import BitDepth, MedianSmoothing, SpatialSmoothing
from sparring.defenses.preprocess.tv import TotalVariation
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
    approx = {n: a for n, m in found if (a := m.bpda_approx()) is not identity}  # unnamed: straight-through
    return with_bpda(target, modules=found, approx=approx)
