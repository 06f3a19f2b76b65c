"""Per-feature budget units for tabular models: "eps 0.1" means the same for every feature.

In raw input space one L∞ budget is one number for every feature, so on tabular data with ranges from 0.05 to
4000 (breast cancer) a budget set from the widest feature leaves the narrow ones entirely free, and one set from
the narrowest moves nothing else. A :class:`FeatureScale` declares each feature's unit instead,
``z_j = (x_j - origin_j) / scale_j``:

* ``"range"``: ``scale_j = high_j - low_j`` from the spec's bounds (``z`` in ``[0, 1]``; eps 0.1 = a tenth of each
  feature's range, the convention of constrained tabular attacks, Simonetto et al. 2022, and of CPGD here);
* ``"std"``: ``scale_j`` = the feature's standard deviation over the given rows ("standardised units", as in the
  feature-scaled budgets of Ballet et al. 2019, "Imperceptible adversarial attacks on tabular data"); a constant
  feature falls back to its range;
* a JSON file: one positive number per feature, a list in column order or ``{"scale": {name: value}}``.

:func:`in_units` gives a target that takes ``z`` (same model, same query counter), so every attack runs unchanged
with a per-feature budget: ``PGD(eps=0.1)(in_units(t, s), s.to_units(x), y)``; :meth:`FeatureScale.from_units`
maps the adversarial rows back. A white-box :class:`~sparring.targets.TorchTarget` stays one (gradients flow through
the affine map, folded into the spec's normalisation); any other target keeps its access, budget and output view.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from sparring.errors import DataLoadError, InputSpecError, ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access, InputSpec

__all__ = ["UNITS", "FeatureScale", "in_units"]

UNITS = ("raw", "range", "std")
"""Named units (``"raw"``: the input's own units, one budget for all features); anything else is a scale file."""

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


@dataclass(frozen=True)
class FeatureScale:
    """Per-feature units ``z_j = (x_j - origin_j) / scale_j`` (see the module docstring).

    Attributes:
        scale: one positive unit per feature (raw units per budget unit).
        origin: the raw value of ``z = 0`` per feature (the lower bound).
        kind: ``"range"``, ``"std"`` or ``"file"``, for reports.
    """

    scale: tuple[float, ...]
    origin: tuple[float, ...]
    kind: str = "range"

    def __post_init__(self) -> None:
        s = np.asarray(self.scale, dtype=np.float64)
        if s.ndim != 1 or not len(s) or not np.all(np.isfinite(s)) or np.any(s <= 0):
            bad = int(np.argmax(~np.isfinite(s) | (s <= 0))) if s.ndim == 1 and len(s) else 0
            raise ParameterError(f"every feature's scale must be a finite number > 0; feature {bad} has "
                                 f"{s.tolist()[bad] if s.ndim == 1 and len(s) else s.tolist()}.")
        if len(self.origin) != len(self.scale):
            raise ParameterError(f"scale has {len(self.scale)} values but origin {len(self.origin)}; give one each.")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_range(cls, spec: InputSpec) -> FeatureScale:
        lo, hi = _bounds(spec)
        return cls(tuple((hi - lo).tolist()), tuple(lo.tolist()), "range")

    @classmethod
    def from_std(cls, spec: InputSpec, x: Any) -> FeatureScale:
        """Standard deviation of each feature over the rows ``x`` (a constant feature keeps its range)."""
        lo, hi = _bounds(spec)
        xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double().reshape(-1, len(lo))
        if xt.shape[0] < 2:
            raise InputSpecError(f"standardised units need at least 2 rows to measure each feature's spread; got "
                                 f"{xt.shape[0]}. Give more data or use units 'range'.")
        std = xt.std(dim=0, unbiased=False).cpu().numpy()
        std = np.where(std > 1e-12 * (hi - lo), std, hi - lo)
        return cls(tuple(std.tolist()), tuple(lo.tolist()), "std")

    @classmethod
    def load(cls, path: str | Path, spec: InputSpec, names: Sequence[str] | None = None) -> FeatureScale:
        """A JSON scale file: a list of one unit per feature, or ``{"scale": [...]}``, or ``{"scale": {name: unit}}``
        naming every feature (``names``: the feature names in column order, from the constraints or the CSV)."""
        p = Path(path)
        if not p.is_file():
            raise DataLoadError(f"scale file {str(p)!r} does not exist; give units 'range', 'std' or the path of a "
                                "JSON file with one unit per feature.")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataLoadError(f"scale file {str(p)!r} is not valid JSON: {exc}") from exc
        vals = data.get("scale") if isinstance(data, Mapping) else data
        d = spec.n_features
        if isinstance(vals, Mapping):
            if names is None:
                raise ParameterError(f"scale file {p.name!r} names its features; give the feature names (a "
                                     "constraints file or CSV header), or write the units as a list in column order.")
            missing = [n for n in names if n not in vals]
            extra = sorted(set(map(str, vals)) - set(names))
            if missing or extra:
                raise ParameterError(f"scale file {p.name!r}: features without a unit {missing[:5]}, unknown "
                                     f"features {extra[:5]}; give one unit per feature, named as the data's columns.")
            vals = [vals[n] for n in names]
        if not isinstance(vals, list) or len(vals) != d or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
            raise ParameterError(f"scale file {p.name!r} must give {d} numbers (one unit per feature, in column "
                                 f"order); got {vals!r:.120}.")
        lo, _ = _bounds(spec)
        return cls(tuple(float(v) for v in vals), tuple(lo.tolist()), "file")

    @classmethod
    def resolve(cls, units: str, spec: InputSpec, x: Any = None,
                names: Sequence[str] | None = None) -> FeatureScale | None:
        """``"raw"`` -> None; ``"range"``; ``"std"`` (measured on ``x``); anything else is a scale file."""
        if units == "raw":
            return None
        if units == "range":
            return cls.from_range(spec)
        if units == "std":
            if x is None:
                raise ParameterError("units 'std' need the rows to measure each feature's spread; pass x.")
            return cls.from_std(spec, x)
        return cls.load(units, spec, names)

    # ------------------------------------------------------------------ mapping
    def to_units(self, x: ArrayT) -> ArrayT:
        o, s = self._tensors(x)
        return (x - o) / s  # type: ignore[no-any-return]

    def from_units(self, z: ArrayT) -> ArrayT:
        o, s = self._tensors(z)
        return z * s + o  # type: ignore[no-any-return]

    def _tensors(self, x: Any) -> tuple[Any, Any]:
        if x.shape[-1] != len(self.scale):
            raise InputSpecError(f"rows have {x.shape[-1]} features but the scale declares {len(self.scale)}.")
        if isinstance(x, torch.Tensor):
            return (torch.tensor(self.origin, device=x.device, dtype=x.dtype),
                    torch.tensor(self.scale, device=x.device, dtype=x.dtype))
        return np.asarray(self.origin, dtype=x.dtype), np.asarray(self.scale, dtype=x.dtype)

    def spec(self, spec: InputSpec) -> InputSpec:
        """``spec`` in these units: bounds mapped, and the normalisation the model expects folded in (so the model
        sees exactly what it saw on raw inputs)."""
        lo, hi = _bounds(spec)
        o, s = np.asarray(self.origin), np.asarray(self.scale)
        if spec.mean is not None and spec.std is not None:
            m = np.broadcast_to(np.asarray(spec.mean), lo.shape)
            sd = np.broadcast_to(np.asarray(spec.std), lo.shape)
            mean, std = tuple(((m - o) / s).tolist()), tuple((sd / s).tolist())
        else:
            mean, std = None, None
        return InputSpec(shape=spec.shape, n_classes=spec.n_classes, bounds=(((lo - o) / s).tolist(),
                         ((hi - o) / s).tolist()), layout="features", mean=mean, std=std,
                         class_names=spec.class_names)

    def describe(self) -> dict[str, Any]:
        """JSON-ready, for reports: the kind and each feature's unit in raw terms."""
        return {"units": self.kind, "scale": [float(f"{v:.6g}") for v in self.scale]}


def in_units(target: Target, scale: FeatureScale) -> Target:
    """``target`` taking inputs in ``scale``'s units: same model, same query counter (and budget), same access."""
    from sparring.targets.torch import TorchTarget

    spec = scale.spec(target.spec)
    if isinstance(target, TorchTarget):
        out: Target = TorchTarget(target.model, spec, access=target.access, output=target.output,
                                  batch_size=target.batch_size, top_k=target.top_k, decimals=target.decimals)
    else:
        out = _UnitsTarget(target, scale, spec)
    out.counter = target.counter  # one budget, one count: the queries are the model's
    return out


class _UnitsTarget(Target):
    """A score- or label-access target seen in per-feature units (queries pass to the inner model uncounted here;
    the shared counter counts them once)."""

    native_access = Access.SCORES

    def __init__(self, inner: Target, scale: FeatureScale, spec: InputSpec) -> None:
        super().__init__(spec, access=min(inner.access, Access.SCORES), output=inner.output,
                         batch_size=inner.batch_size, top_k=inner.top_k, decimals=inner.decimals)
        self.inner, self.scale = inner, scale

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner._scores_batch(self.scale.from_units(x).to(self.inner.device))

    def _labels_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner._labels_batch(self.scale.from_units(x).to(self.inner.device))


def _bounds(spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    if spec.layout != "features" or len(spec.shape) != 1:
        raise InputSpecError(f"per-feature budget units are for flat feature vectors (layout 'features', shape "
                             f"(d,)); this spec has layout {spec.layout!r} and shape {spec.shape}. Use raw units.")
    lo, hi = spec.bounds_tensors(dtype=torch.float64)
    d = spec.n_features
    return lo.reshape(-1).expand(d).numpy().copy(), hi.reshape(-1).expand(d).numpy().copy()
