"""The one input specification (shape, bounds, layout, normalisation, classes) and the access levels.

Every budget in sparring (``eps``) is measured in *raw input space*: the space the data arrive in, bounded by
``InputSpec.bounds``. Normalisation (``mean``/``std``) is applied inside the target, never by the attack.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from sparring.errors import InputSpecError, LabelError

__all__ = ["Access", "InputSpec", "Layout"]

Layout = Literal["chw", "hwc", "features"]


class Access(enum.IntEnum):
    """What a target gives an attacker, from least to most. A target with more access also gives less."""

    LABELS = 1
    """Only the predicted class (decision-based attacks)."""
    SCORES = 2
    """Class scores: probabilities or logits, possibly rounded or top-k (score-based attacks)."""
    GRADIENTS = 3
    """Gradients of any loss with respect to the input (white-box attacks)."""

    def describe(self) -> str:
        return {1: "labels only", 2: "scores", 3: "gradients (white-box)"}[int(self)]


def _as_tuple(value: float | Sequence[float] | np.ndarray | torch.Tensor, name: str) -> tuple[float, ...]:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise InputSpecError(f"InputSpec.{name} must be finite numbers; got {arr.tolist()[:8]}.")
    return tuple(float(v) for v in arr)


@dataclass(frozen=True)
class InputSpec:
    """What a target accepts, declared once.

    Args:
        shape: shape of one example, without the batch axis, e.g. ``(1, 28, 28)`` or ``(30,)``.
        n_classes: number of output classes (>= 2).
        bounds: ``(low, high)`` of valid raw values: two numbers (e.g. pixel range ``(0, 1)``), or two sequences
            with one value per feature (tabular data; length ``prod(shape)``).
        layout: ``"chw"`` (channels first), ``"hwc"`` (channels last) or ``"features"`` (flat vector).
        mean, std: per-channel normalisation applied *inside* the target: the model sees ``(x - mean) / std``.
            One value, or one per channel. ``None`` means the model takes raw inputs.
        class_names: optional names of the classes, for reports.

    Example:
        >>> spec = InputSpec(shape=(1, 28, 28), n_classes=10, bounds=(0.0, 1.0), mean=(0.3,), std=(0.4,))
        >>> spec.range_width
        1.0
    """

    shape: tuple[int, ...]
    n_classes: int
    bounds: tuple[Any, Any] = (0.0, 1.0)
    layout: Layout = "chw"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None
    _low: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _high: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if not shape or any(s <= 0 for s in shape):
            raise InputSpecError(f"InputSpec.shape must be positive sizes, e.g. (1, 28, 28); got {self.shape!r}.")
        object.__setattr__(self, "shape", shape)
        if int(self.n_classes) < 2:
            raise InputSpecError(f"InputSpec.n_classes must be >= 2; got {self.n_classes!r}.")
        object.__setattr__(self, "n_classes", int(self.n_classes))
        if self.layout not in ("chw", "hwc", "features"):
            raise InputSpecError(f"InputSpec.layout must be 'chw', 'hwc' or 'features'; got {self.layout!r}.")
        if self.layout in ("chw", "hwc") and len(shape) != 3:
            raise InputSpecError(
                f"layout {self.layout!r} needs a 3-d shape (channels, height, width or height, width, channels); "
                f"got {shape}. Use layout='features' for flat vectors."
            )
        try:
            low_raw, high_raw = self.bounds
        except (TypeError, ValueError):
            raise InputSpecError(f"InputSpec.bounds must be (low, high); got {self.bounds!r}.") from None
        low, high = _as_tuple(low_raw, "bounds[0]"), _as_tuple(high_raw, "bounds[1]")
        n_feat = math.prod(shape)
        for name, vals in (("low", low), ("high", high)):
            if len(vals) not in (1, n_feat):
                raise InputSpecError(
                    f"InputSpec.bounds {name} has {len(vals)} values; give one number or one per feature "
                    f"({n_feat} for shape {shape})."
                )
        if len(low) != len(high) and 1 not in (len(low), len(high)):
            raise InputSpecError("InputSpec.bounds low and high must have the same length.")
        lo_arr, hi_arr = np.broadcast_arrays(np.asarray(low), np.asarray(high))
        if np.any(lo_arr >= hi_arr):
            bad = int(np.argmax(lo_arr >= hi_arr))
            raise InputSpecError(
                f"InputSpec.bounds must have low < high everywhere; feature {bad} has low={lo_arr[bad]} "
                f"high={hi_arr[bad]}."
            )
        object.__setattr__(self, "_low", low)
        object.__setattr__(self, "_high", high)
        n_ch = self.n_channels
        for name in ("mean", "std"):
            val = getattr(self, name)
            if val is None:
                continue
            tup = _as_tuple(val, name)
            if len(tup) not in (1, n_ch):
                raise InputSpecError(
                    f"InputSpec.{name} needs 1 or {n_ch} values (one per channel, or per feature for flat "
                    f"features); got {len(tup)}."
                )
            object.__setattr__(self, name, tup)
        if (self.mean is None) != (self.std is None):
            raise InputSpecError("InputSpec.mean and InputSpec.std go together: give both or neither.")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise InputSpecError(f"InputSpec.std must be > 0; got {self.std}.")
        if self.class_names is not None:
            names = tuple(str(c) for c in self.class_names)
            if len(names) != self.n_classes:
                raise InputSpecError(f"class_names has {len(names)} names for {self.n_classes} classes.")
            object.__setattr__(self, "class_names", names)

    # ------------------------------------------------------------------ derived facts
    @property
    def n_channels(self) -> int:
        if self.layout == "chw":
            return self.shape[0]
        if self.layout == "hwc":
            return self.shape[-1]
        return self.shape[0] if len(self.shape) == 1 else 1  # flat features: per-feature normalisation

    @property
    def n_features(self) -> int:
        return math.prod(self.shape)

    @property
    def range_width(self) -> float:
        """Largest ``high - low`` over features: the largest meaningful L∞ budget."""
        lo, hi = np.broadcast_arrays(np.asarray(self._low), np.asarray(self._high))
        return float(np.max(hi - lo))

    def bounds_tensors(
        self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)`` as tensors broadcastable against a batch ``(N, *shape)``."""
        out = []
        for vals in (self._low, self._high):
            t = torch.tensor(vals, device=device, dtype=dtype)
            out.append(t.reshape(1, *self.shape) if t.numel() > 1 else t.reshape([1] * (1 + len(self.shape))))
        return out[0], out[1]

    def norm_tensors(
        self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(mean, std)`` shaped to broadcast along the channel axis of a batch, or ``None``."""
        if self.mean is None or self.std is None:
            return None
        view = [1] * (1 + len(self.shape))
        axis = {"chw": 1, "hwc": len(self.shape), "features": 1}[self.layout]
        res = []
        for vals in (self.mean, self.std):
            t = torch.tensor(vals, device=device, dtype=dtype)
            if t.numel() > 1:
                v = list(view)
                v[axis] = t.numel()
                t = t.reshape(v)
            else:
                t = t.reshape(view)
            res.append(t)
        return res[0], res[1]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (for reports and for saving alongside a model)."""
        return {
            "shape": list(self.shape),
            "n_classes": self.n_classes,
            "bounds": [list(self._low) if len(self._low) > 1 else self._low[0],
                       list(self._high) if len(self._high) > 1 else self._high[0]],
            "layout": self.layout,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            "class_names": list(self.class_names) if self.class_names is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        known = {"shape", "n_classes", "bounds", "layout", "mean", "std", "class_names"}
        unknown = set(d) - known
        if unknown:
            raise InputSpecError(f"unknown InputSpec keys {sorted(unknown)}; allowed: {sorted(known)}.")
        if "shape" not in d or "n_classes" not in d:
            raise InputSpecError("an InputSpec needs at least 'shape' and 'n_classes'.")
        kw = dict(d)
        kw["shape"] = tuple(kw["shape"])
        if kw.get("bounds") is not None:
            kw["bounds"] = tuple(kw["bounds"])
        else:
            kw.pop("bounds", None)
        for k in ("mean", "std", "class_names"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    # ------------------------------------------------------------------ validation of data
    def validate(
        self,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray | Sequence[int] | None = None,
        *,
        check_bounds: bool = True,
        atol: float = 1e-6,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Check a batch against the spec and return it as float tensors (no copy when already fine).

        Raises :class:`InputSpecError` for wrong shape/dtype, NaN/inf, empty batch, values outside the bounds,
        and :class:`LabelError` for labels that are not integers in ``0..n_classes-1`` or of the wrong length.
        """
        xt = _to_tensor(x, "x")
        if xt.dtype.is_complex or xt.dtype == torch.bool:
            raise InputSpecError(f"inputs must be real numbers; got dtype {xt.dtype}.")
        if not xt.is_floating_point():
            xt = xt.float()
        if xt.ndim == len(self.shape):
            raise InputSpecError(
                f"got one example of shape {tuple(xt.shape)} but a batch is expected: shape (N, "
                f"{', '.join(map(str, self.shape))}). Add a batch axis, e.g. x[None]."
            )
        if tuple(xt.shape[1:]) != self.shape:
            hint = ""
            if self.layout == "chw" and tuple(xt.shape[1:]) == (*self.shape[1:], self.shape[0]):
                hint = (" It looks channels-last: permute to channels-first (torch: x.permute(0, 3, 1, 2); numpy, "
                        "before saving the .npz given to --data: x.transpose(0, 3, 1, 2)).")
            elif self.layout == "hwc" and tuple(xt.shape[1:]) == (self.shape[-1], *self.shape[:-1]):
                hint = (" It looks channels-first: permute to channels-last (torch: x.permute(0, 2, 3, 1); numpy, "
                        "before saving the .npz given to --data: x.transpose(0, 2, 3, 1)).")
            raise InputSpecError(
                f"inputs have shape {tuple(xt.shape)}; the target expects (N, {', '.join(map(str, self.shape))})."
                + hint
            )
        if xt.shape[0] == 0:
            raise InputSpecError("the batch is empty (0 examples); pass at least one example.")
        if not self._fast_check(xt, check_bounds, atol):
            finite = torch.isfinite(xt)
            if not bool(finite.all()):
                n_bad = int((~finite).reshape(xt.shape[0], -1).any(1).sum())
                raise InputSpecError(f"{n_bad} example(s) contain NaN or inf values; clean or drop them first.")
            lo_s = self._low[0] if len(self._low) == 1 else "per-feature lows"
            hi_s = self._high[0] if len(self._high) == 1 else "per-feature highs"
            raise InputSpecError(
                f"inputs fall outside the declared bounds [{lo_s}, {hi_s}]: min {float(xt.min()):.4g}, max "
                f"{float(xt.max()):.4g}. Scale the data to the declared range (e.g. divide 0-255 pixels by "
                f"255) or declare the range the model really takes in InputSpec(bounds=...)."
            )
        yt = None if y is None else self.validate_labels(y, n=xt.shape[0], device=xt.device)
        return xt, yt

    def _fast_check(self, xt: torch.Tensor, check_bounds: bool, atol: float) -> bool:
        """One pass that is True when every value is finite (and within bounds if asked). NaN fails every
        comparison and the bounds are finite, so a passing bounds check also proves finiteness."""
        if not check_bounds:
            return bool(torch.isfinite(xt).all())
        if len(self._low) == 1 and len(self._high) == 1:
            lo_v, hi_v = torch.aminmax(xt)
            return bool(lo_v >= self._low[0] - atol) and bool(hi_v <= self._high[0] + atol)
        lo, hi = self.bounds_tensors(xt.device, xt.dtype)
        return bool(((xt >= lo - atol) & (xt <= hi + atol)).all())

    def validate_labels(
        self, y: torch.Tensor | np.ndarray | Sequence[int], *, n: int | None = None,
        device: torch.device | str | None = None, name: str = "labels",
    ) -> torch.Tensor:
        yt = _to_tensor(y, name)
        if yt.is_floating_point():
            if not bool(torch.all(yt == yt.round())):
                raise LabelError(f"{name} must be integer class indices; got non-integer floats.")
            yt = yt.long()
        elif yt.dtype == torch.bool:
            raise LabelError(f"{name} must be integer class indices, not booleans.")
        yt = yt.long()
        if yt.ndim != 1:
            raise LabelError(
                f"{name} must be a 1-d vector of class indices; got shape {tuple(yt.shape)}"
                + (" (one-hot? use y.argmax(1))." if yt.ndim == 2 else ".")
            )
        if n is not None and yt.shape[0] != n:
            raise LabelError(f"got {yt.shape[0]} {name} for {n} inputs; they must match one to one.")
        if yt.numel() and (int(yt.min()) < 0 or int(yt.max()) >= self.n_classes):
            raise LabelError(
                f"{name} range over [{int(yt.min())}, {int(yt.max())}] but the target has {self.n_classes} classes "
                f"(valid: 0..{self.n_classes - 1})."
            )
        return yt if device is None else yt.to(device)


def _to_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise InputSpecError(f"{name} is an object array; convert it to numbers first.")
        return torch.from_numpy(np.ascontiguousarray(x))
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as exc:
        raise InputSpecError(f"{name} must be a torch tensor or numpy array; got {type(x).__name__}.") from exc
