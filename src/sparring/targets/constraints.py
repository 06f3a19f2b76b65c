"""Domain constraints of a tabular feature space: what an attacker can really change, and at what cost.

A :class:`FeatureConstraints` declares, per feature, whether it is mutable, its type (continuous, integer, binary,
ordinal, or a member of a one-hot group), its bounds, an allowed direction (increase-only / decrease-only) and a cost
per unit of change; plus linear relations between features: *derived* features (``total = prior + amount``) and
linear inequalities (``sum(coef * x) <= rhs``). Tabular attacks take it as an explicit argument
(``CPGD(constraints=c)``); the checker :meth:`FeatureConstraints.check` is independent of every attack, so each
returned example is verified, not assumed feasible.

The declared pieces live in :mod:`.constraints_parts`, validation, checking and projection in :mod:`.constraints_ops`,
strict reading of dicts and files in :mod:`.constraints_io`; this module holds the class and re-exports the pieces.

The cost of a change is ``sum_j cost_j * |x_adv_j - x0_j|`` (a weighted L1 in the features' own units). The default
per-unit cost of a feature is ``1 / (high - low)`` (changing a feature across its whole range costs 1); switching a
one-hot group costs the group's ``cost``; derived features cost nothing (they follow their parts).

Example:
    >>> c = FeatureConstraints.from_dict({"features": [
    ...     {"name": "amount", "low": 0, "high": 100},
    ...     {"name": "age", "low": 18, "high": 99, "type": "integer", "mutable": False}]})
    >>> import torch
    >>> c.check(torch.tensor([[10.0, 30.0]]), torch.tensor([[12.5, 31.0]])).counts.tolist()
    [1]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparring.errors import InputSpecError, ParameterError
from sparring.targets.constraints_io import check_constraints_match, parse_constraint_fields, read_constraints_file
from sparring.targets.constraints_ops import check_rows, linear_form, project_rows, validate_constraints
from sparring.targets.constraints_parts import Derived, Feature, LinearInequality, OneHotGroup, Violations

__all__ = ["Derived", "Feature", "FeatureConstraints", "LinearInequality", "OneHotGroup", "Violations"]


@dataclass(frozen=True)
class FeatureConstraints:
    """The feasible set of a tabular feature space. Build it from a dict/JSON/YAML or directly.

    Args:
        features: one :class:`Feature` per input column, in column order.
        groups: one-hot groups (their member features must be declared ``binary``).
        derived: derived features, applied in the order given (a derived feature may use an earlier one).
        inequalities: linear inequalities.
        tol: absolute tolerance of the checker for equalities, bounds and integrality (float32 data).
    """

    features: tuple[Feature, ...]
    groups: tuple[OneHotGroup, ...] = ()
    derived: tuple[Derived, ...] = ()
    inequalities: tuple[LinearInequality, ...] = ()
    tol: float = 1e-3
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "derived", tuple(self.derived))
        object.__setattr__(self, "inequalities", tuple(self.inequalities))
        object.__setattr__(self, "_index", {f.name: i for i, f in enumerate(self.features)})
        validate_constraints(self)

    # ------------------------------------------------------------------ facts
    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise ParameterError(f"unknown feature {name!r}; declared features: {', '.join(self.names)}. Fix the name "
                                 "or declare the feature under 'features'.") from None

    def derived_names(self) -> set[str]:
        return {d.feature for d in self.derived}

    def group_of(self) -> dict[int, int]:
        """Column index -> index of its one-hot group."""
        return {self.index(n): g for g, grp in enumerate(self.groups) for n in grp.features}

    def vector(self, what: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
               ) -> torch.Tensor:
        """A per-feature vector: ``"low"``, ``"high"``, ``"cost"`` (per unit), ``"mutable"`` (1/0),
        ``"increase"`` (1 where only increases are allowed) or ``"decrease"``."""
        groups, derived = self.group_of(), self.derived_names()
        vals: list[float] = []
        for j, f in enumerate(self.features):
            if what in ("low", "high"):
                vals.append(f.low if what == "low" else f.high)
            elif what == "cost":
                g = groups.get(j)
                vals.append(0.0 if f.name in derived else self.groups[g].cost / 2 if g is not None else f.unit_cost)
            elif what == "mutable":
                g = groups.get(j)
                vals.append(float(f.mutable and f.name not in derived and (g is None or self.groups[g].mutable)))
            elif what in ("increase", "decrease"):
                vals.append(float(f.direction == what))
            else:
                raise ParameterError(f"unknown vector {what!r}; use low, high, cost, mutable, increase or decrease.")
        return torch.tensor(vals, device=device, dtype=dtype)

    def relaxed(self) -> FeatureConstraints:
        """The same features with only their bounds kept: every feature mutable, continuous, in any direction, no
        groups or relations. Attacking with it gives the *unconstrained* baseline (check it against ``self``)."""
        w = self.vector("cost").tolist()
        feats = tuple(Feature(f.name, f.low, f.high, cost=w[j] or f.unit_cost) for j, f in enumerate(self.features))
        return FeatureConstraints(feats, tol=self.tol)

    # ------------------------------------------------------------------ checking, cost, repair
    def cost(self, x0: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Per-row cost of going from ``x0`` to ``x_adv``: ``sum_j cost_j |x_adv_j - x0_j|``."""
        w = self.vector("cost", x0.device, x0.dtype)
        return ((x_adv.to(x0.dtype) - x0).abs() * w).sum(dim=1)

    def inequality_excess(self, x: torch.Tensor) -> torch.Tensor:
        """Per row, the summed excess ``max(0, lhs - rhs)`` of the inequalities, each divided by the span of its
        left side over the bounds: a differentiable penalty for gradient attacks (0 when all hold)."""
        out = torch.zeros_like(x[:, 0])
        for q in self.inequalities:
            span = sum(abs(w) * (self.features[self.index(n)].high - self.features[self.index(n)].low)
                       for n, w in q.terms.items())
            out = out + (linear_form(self, x, q.terms, 0.0) - q.rhs).clamp_min(0) / span
        return out

    def check(self, x0: torch.Tensor | np.ndarray, x_adv: torch.Tensor | np.ndarray) -> Violations:
        """Check every constraint on every row of ``x_adv`` (changes measured from ``x0``)."""
        a, b = self._as_batch(x0, "x0"), self._as_batch(x_adv, "x_adv")
        if a.shape != b.shape:
            raise InputSpecError(f"x0 has shape {tuple(a.shape)} but x_adv {tuple(b.shape)}; they must match.")
        return check_rows(self, a, b.to(a.device))

    def project(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Continuous projection used inside gradient attacks: immutables reset, directions and bounds enforced,
        derived features recomputed. Integer and one-hot values may still be fractional (see :meth:`repair`)."""
        return project_rows(self, x0, x, discrete=False)

    def repair(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:meth:`project` plus rounding of integer, binary and ordinal features and argmax of one-hot groups.
        The result satisfies every constraint except, possibly, the linear inequalities (check it)."""
        return project_rows(self, x0, x, discrete=True)

    def _as_batch(self, x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
        t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        if t.ndim != 2 or t.shape[1] != self.n_features:
            raise InputSpecError(
                f"{name} has shape {tuple(t.shape)}; the constraints declare {self.n_features} features, so "
                f"(N, {self.n_features}) was expected. Pass a flat batch of rows."
            )
        return t if t.is_floating_point() else t.double()

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        def feat(f: Feature) -> dict[str, Any]:
            d: dict[str, Any] = {"name": f.name, "low": f.low, "high": f.high, "type": f.type,
                                 "mutable": f.mutable, "direction": f.direction}
            if f.cost is not None:
                d["cost"] = f.cost
            if f.levels is not None:
                d["levels"] = list(f.levels)
            return d

        return {
            "features": [feat(f) for f in self.features],
            "one_hot": [{"name": g.name, "features": list(g.features), "mutable": g.mutable, "cost": g.cost}
                        for g in self.groups],
            "derived": [{"feature": d.feature, "terms": dict(d.terms), "constant": d.constant} for d in self.derived],
            "inequalities": [{"name": q.name, "terms": dict(q.terms), "rhs": q.rhs} for q in self.inequalities],
            "tol": self.tol,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureConstraints:
        """Build from a mapping (the shape :meth:`to_dict` writes), strictly: every unknown key, wrong type or
        undeclared name raises :class:`~sparring.errors.ParameterError` naming the feature and the fix."""
        return cls._parse(d, "constraints")

    @classmethod
    def load(cls, path: str | Path, *, n_features: int | None = None,
             columns: Sequence[str] | None = None) -> FeatureConstraints:
        """Read a constraints file: ``.json``, or ``.yaml``/``.yml``; with ``n_features`` (the model's) and
        ``columns`` (the data's feature names) also check that they match (see :mod:`.constraints_io`)."""
        data, source = read_constraints_file(path)
        c = cls._parse(data, source)
        if n_features is not None or columns is not None:
            check_constraints_match(c, n_features=n_features, columns=columns, source=source)
        return c

    @classmethod
    def _parse(cls, d: Any, source: str) -> FeatureConstraints:
        features, groups, derived, inequalities, tol = parse_constraint_fields(d, source)
        try:
            return cls(features, groups, derived, inequalities, tol)
        except ParameterError as exc:
            raise ParameterError(f"{source}: {exc}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
