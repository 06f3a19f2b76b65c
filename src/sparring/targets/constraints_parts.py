"""The pieces a :class:`~sparring.targets.constraints.FeatureConstraints` is declared from: one :class:`Feature` per
column (type, bounds, mutability, direction, cost), :class:`OneHotGroup`, :class:`Derived` features and
:class:`LinearInequality` relations, and the checker's answer, :class:`Violations` (which row breaks which rule).

All are re-exported by :mod:`sparring.targets.constraints`, where users import them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["DIRECTIONS", "FEATURE_TYPES", "Derived", "Direction", "Feature", "FeatureType", "LinearInequality",
           "OneHotGroup", "Violations"]

FeatureType = Literal["continuous", "integer", "binary", "ordinal"]
Direction = Literal["any", "increase", "decrease"]
FEATURE_TYPES = ("continuous", "integer", "binary", "ordinal")
DIRECTIONS = ("any", "increase", "decrease")


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
