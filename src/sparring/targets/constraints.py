"""Domain constraints of a tabular feature space: what an attacker can really change, and at what cost.

A :class:`FeatureConstraints` declares, per feature, whether it is mutable, its type (continuous, integer, binary,
ordinal, or a member of a one-hot group), its bounds, an allowed direction (increase-only / decrease-only) and a cost
per unit of change; plus linear relations between features: *derived* features (``total = prior + amount``) and
linear inequalities (``sum(coef * x) <= rhs``). Tabular attacks take it as an explicit argument
(``CPGD(constraints=c)``); the checker :meth:`FeatureConstraints.check` is independent of every attack, so each
returned example is verified, not assumed feasible.

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
from typing import Any, Literal

import numpy as np
import torch

from sparring.errors import InputSpecError, ParameterError

__all__ = ["Derived", "Feature", "FeatureConstraints", "LinearInequality", "OneHotGroup", "Violations"]

FeatureType = Literal["continuous", "integer", "binary", "ordinal"]
Direction = Literal["any", "increase", "decrease"]
_TYPES = ("continuous", "integer", "binary", "ordinal")
_DIRS = ("any", "increase", "decrease")


@dataclass(frozen=True)
class Feature:
    """One feature: its name, type, bounds, whether and how it may change, and its cost per unit of change."""

    name: str
    low: float
    high: float
    type: FeatureType = "continuous"
    mutable: bool = True
    direction: Direction = "any"
    cost: float | None = None
    levels: tuple[float, ...] | None = None
    """Allowed values of an ordinal feature, ascending."""

    @property
    def unit_cost(self) -> float:
        return float(self.cost) if self.cost is not None else 1.0 / (self.high - self.low)


@dataclass(frozen=True)
class OneHotGroup:
    """Features that together encode one category (exactly one is 1). Switching category costs ``cost``."""

    name: str
    features: tuple[str, ...]
    mutable: bool = True
    cost: float = 1.0


@dataclass(frozen=True)
class Derived:
    """``feature = constant + sum(coef * part)``: a feature computed from others (never changed on its own)."""

    feature: str
    terms: Mapping[str, float]
    constant: float = 0.0


@dataclass(frozen=True)
class LinearInequality:
    """``sum(coef * x) <= rhs`` must hold on every example."""

    name: str
    terms: Mapping[str, float]
    rhs: float


@dataclass
class Violations:
    """Which rule each row breaks: ``matrix[i, k]`` is True when row ``i`` violates ``rules[k]``."""

    matrix: torch.Tensor
    rules: list[str]

    @property
    def ok(self) -> torch.Tensor:
        """Per row, True when every constraint holds."""
        return ~self.matrix.any(dim=1)

    @property
    def counts(self) -> torch.Tensor:
        """Per row, the number of violated rules."""
        return self.matrix.sum(dim=1)

    def by_rule(self) -> dict[str, int]:
        """Rows violating each rule (rules nobody violates are left out)."""
        per = self.matrix.sum(dim=0).tolist()
        return {r: int(n) for r, n in zip(self.rules, per, strict=True) if n}

    def describe(self, row: int) -> list[str]:
        return [r for r, bad in zip(self.rules, self.matrix[row].tolist(), strict=True) if bad]


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
        _validate(self)

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
            out = out + (_lin(self, x, q.terms, 0.0) - q.rhs).clamp_min(0) / span
        return out

    def check(self, x0: torch.Tensor | np.ndarray, x_adv: torch.Tensor | np.ndarray) -> Violations:
        """Check every constraint on every row of ``x_adv`` (changes measured from ``x0``)."""
        a, b = self._as_batch(x0, "x0"), self._as_batch(x_adv, "x_adv")
        if a.shape != b.shape:
            raise InputSpecError(f"x0 has shape {tuple(a.shape)} but x_adv {tuple(b.shape)}; they must match.")
        return _check(self, a, b.to(a.device))

    def project(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Continuous projection used inside gradient attacks: immutables reset, directions and bounds enforced,
        derived features recomputed. Integer and one-hot values may still be fractional (see :meth:`repair`)."""
        return _project(self, x0, x, discrete=False)

    def repair(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:meth:`project` plus rounding of integer, binary and ordinal features and argmax of one-hot groups.
        The result satisfies every constraint except, possibly, the linear inequalities (check it)."""
        return _project(self, x0, x, discrete=True)

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
        from sparring.targets.constraints_io import parse_constraints

        return parse_constraints(d)

    @classmethod
    def load(cls, path: str | Path, *, n_features: int | None = None,
             columns: Sequence[str] | None = None) -> FeatureConstraints:
        """Read a constraints file: ``.json``, or ``.yaml``/``.yml``; with ``n_features`` (the model's) and
        ``columns`` (the data's feature names) also check that they match (see :mod:`.constraints_io`)."""
        from sparring.targets.constraints_io import load_constraints

        return load_constraints(path, n_features=n_features, columns=columns)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")



# ---------------------------------------------------------------------- validation and parsing
def _bad(msg: str) -> ParameterError:
    return ParameterError(msg)


def _known(c: FeatureConstraints, name: str, where: str) -> None:
    if name not in c._index:
        raise _bad(f"{where} uses unknown feature {name!r}; declared features: {', '.join(c.names)}. Fix the name "
                   "or declare the feature under 'features'.")


def _validate(c: FeatureConstraints) -> None:
    if not c.features:
        raise _bad("FeatureConstraints needs at least one feature; got none. Declare one entry per input column.")
    if len(c._index) != len(c.features):
        dup = sorted({f.name for f in c.features if [g.name for g in c.features].count(f.name) > 1})
        raise _bad(f"feature names must be unique; {dup} appear more than once.")
    for f in c.features:
        if not (np.isfinite(f.low) and np.isfinite(f.high)) or f.low >= f.high:
            raise _bad(f"feature {f.name!r}: bounds must be finite with low < high; got low={f.low}, high={f.high}.")
        if f.type not in _TYPES:
            raise _bad(f"feature {f.name!r}: type {f.type!r} is unknown; use one of {', '.join(_TYPES)}.")
        if f.direction not in _DIRS:
            raise _bad(f"feature {f.name!r}: direction {f.direction!r} is unknown; use one of {', '.join(_DIRS)}.")
        if f.cost is not None and (not np.isfinite(f.cost) or f.cost < 0):
            raise _bad(f"feature {f.name!r}: cost must be a finite number >= 0; got {f.cost}.")
        if f.type == "binary" and (f.low, f.high) != (0.0, 1.0):
            raise _bad(f"feature {f.name!r}: a binary feature has bounds [0, 1]; got [{f.low}, {f.high}].")
        if f.type == "ordinal":
            lv = f.levels
            if not lv or len(lv) < 2 or list(lv) != sorted(set(lv)) or lv[0] < f.low or lv[-1] > f.high:
                raise _bad(f"feature {f.name!r}: an ordinal feature needs >= 2 ascending distinct 'levels' within "
                           f"[{f.low}, {f.high}]; got {lv}.")
    seen: set[str] = set()
    for g in c.groups:
        if len(g.features) < 2:
            raise _bad(f"one-hot group {g.name!r} needs at least 2 features; got {list(g.features)}.")
        for n in g.features:
            _known(c, n, f"one-hot group {g.name!r}")
            if c.features[c.index(n)].type != "binary":
                raise _bad(f"one-hot group {g.name!r}: member {n!r} must be declared type 'binary'.")
            if n in seen:
                raise _bad(f"feature {n!r} belongs to two one-hot groups; a feature may be in one group only.")
            seen.add(n)
        if not np.isfinite(g.cost) or g.cost < 0:
            raise _bad(f"one-hot group {g.name!r}: cost must be a finite number >= 0; got {g.cost}.")
    done: set[str] = set()
    for d in c.derived:
        _known(c, d.feature, "'derived'")
        if d.feature in done or d.feature in seen:
            raise _bad(f"derived feature {d.feature!r} is derived twice or is a one-hot member; derive it once.")
        if not d.terms or d.feature in d.terms:
            raise _bad(f"derived feature {d.feature!r} needs terms that do not include itself; got {dict(d.terms)}.")
        for n in d.terms:
            _known(c, n, f"derived feature {d.feature!r}")
        done.add(d.feature)
    for q in c.inequalities:
        if not q.terms:
            raise _bad(f"inequality {q.name!r} has no terms; give {{feature: coefficient}}.")
        for n in q.terms:
            _known(c, n, f"inequality {q.name!r}")
    if not c.tol > 0:
        raise _bad(f"tol must be > 0; got {c.tol}.")


# ---------------------------------------------------------------------- checker and projection
def _lin(c: FeatureConstraints, x: torch.Tensor, terms: Mapping[str, float], const: float) -> torch.Tensor:
    out = torch.full_like(x[:, 0], const)
    for n, coef in terms.items():
        out = out + coef * x[:, c.index(n)]
    return out


def _check(c: FeatureConstraints, x0: torch.Tensor, xa: torch.Tensor) -> Violations:
    tol, rules, cols = c.tol, [], []
    x0, xa = x0.double(), xa.double()
    mut, derived = c.vector("mutable", xa.device, xa.dtype), c.derived_names()
    for j, f in enumerate(c.features):
        v, v0 = xa[:, j], x0[:, j]
        rules.append(f"{f.name}: bounds")
        cols.append((v < f.low - tol) | (v > f.high + tol))
        if not mut[j] and f.name not in derived:
            rules.append(f"{f.name}: immutable")
            cols.append((v - v0).abs() > tol)
        if f.direction != "any":
            rules.append(f"{f.name}: {f.direction} only")
            cols.append(v < v0 - tol if f.direction == "increase" else v > v0 + tol)
        if f.type in ("integer", "binary"):
            rules.append(f"{f.name}: {f.type}")
            cols.append((v - v.round()).abs() > tol)
        elif f.type == "ordinal" and f.levels:
            lv = torch.tensor(f.levels, device=xa.device, dtype=xa.dtype)
            rules.append(f"{f.name}: ordinal level")
            cols.append((v[:, None] - lv).abs().min(dim=1).values > tol)
    for g in c.groups:
        idx = [c.index(n) for n in g.features]
        rules.append(f"{g.name}: one-hot")
        cols.append((xa[:, idx].sum(dim=1) - 1).abs() > tol)
    for d in c.derived:
        want = _lin(c, xa, d.terms, d.constant)
        rules.append(f"{d.feature}: derived")
        cols.append((xa[:, c.index(d.feature)] - want).abs() > tol * (1 + want.abs()))
    for q in c.inequalities:
        rules.append(f"{q.name}: inequality")
        cols.append(_lin(c, xa, q.terms, 0.0) > q.rhs + tol * (1 + abs(q.rhs)))
    return Violations(torch.stack(cols, dim=1), rules)


def _project(c: FeatureConstraints, x0: torch.Tensor, x: torch.Tensor, *, discrete: bool) -> torch.Tensor:
    dev, dt = x.device, x.dtype
    x0 = x0.to(dev, dt)
    low, high = c.vector("low", dev, dt), c.vector("high", dev, dt)
    x = torch.where(c.vector("mutable", dev, dt).bool(), x, x0)
    x = torch.where(c.vector("increase", dev, dt).bool(), torch.maximum(x, x0), x)
    x = torch.where(c.vector("decrease", dev, dt).bool(), torch.minimum(x, x0), x)
    x = torch.maximum(torch.minimum(x, high), low)
    if discrete:
        x = x.clone()
        for j, f in enumerate(c.features):
            if f.type == "integer":
                r = x[:, j].round().clamp(float(np.ceil(f.low)), float(np.floor(f.high)))
                x[:, j] = r if f.direction == "any" else (
                    torch.maximum(r, x0[:, j]) if f.direction == "increase" else torch.minimum(r, x0[:, j]))
            elif f.type == "binary":
                x[:, j] = (x[:, j] > 0.5).to(dt)
            elif f.type == "ordinal" and f.levels:
                lv = torch.tensor(f.levels, device=dev, dtype=dt)
                dist = (x[:, j, None] - lv).abs()
                if f.direction == "increase":
                    dist = dist.masked_fill(lv < x0[:, j, None] - c.tol, float("inf"))
                elif f.direction == "decrease":
                    dist = dist.masked_fill(lv > x0[:, j, None] + c.tol, float("inf"))
                x[:, j] = lv[dist.argmin(dim=1)]
        for g in c.groups:
            if g.mutable:
                idx = torch.tensor([c.index(n) for n in g.features], device=dev)
                x[:, idx] = torch.nn.functional.one_hot(x[:, idx].argmax(dim=1), len(idx)).to(dt)
    if c.derived:
        x = x.clone()
        for d in c.derived:
            x[:, c.index(d.feature)] = _lin(c, x, d.terms, d.constant)
    return x
