"""What :class:`~sparring.targets.constraints.FeatureConstraints` does with its declaration: validate it when it is
built (:func:`validate_constraints`: every name known, bounds, types, groups, relations), check rows against every
rule (:func:`check_rows`) and project rows into the feasible set (:func:`project_rows`: immutables reset, directions
and bounds enforced, optionally integers/levels/one-hot rounded, derived features recomputed).

Plain functions of a ``FeatureConstraints``; the class's ``check``, ``project`` and ``repair`` call them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

from sparring.errors import ParameterError
from sparring.targets.constraints_parts import DIRECTIONS, FEATURE_TYPES, Violations

if TYPE_CHECKING:
    from sparring.targets.constraints import FeatureConstraints

__all__ = ["check_rows", "linear_form", "project_rows", "validate_constraints"]


def _bad(msg: str) -> ParameterError:
    return ParameterError(msg)


def _known(c: FeatureConstraints, name: str, where: str) -> None:
    if name not in c._index:
        raise _bad(f"{where} uses unknown feature {name!r}; declared features: {', '.join(c.names)}. Fix the name "
                   "or declare the feature under 'features'.")


def validate_constraints(c: FeatureConstraints) -> None:
    if not c.features:
        raise _bad("FeatureConstraints needs at least one feature; got none. Declare one entry per input column.")
    if len(c._index) != len(c.features):
        dup = sorted({f.name for f in c.features if [g.name for g in c.features].count(f.name) > 1})
        raise _bad(f"feature names must be unique; {dup} appear more than once.")
    for f in c.features:
        if not (np.isfinite(f.low) and np.isfinite(f.high)) or f.low >= f.high:
            raise _bad(f"feature {f.name!r}: bounds must be finite with low < high; got low={f.low}, high={f.high}.")
        if f.type not in FEATURE_TYPES:
            raise _bad(f"feature {f.name!r}: type {f.type!r} is unknown; use one of {', '.join(FEATURE_TYPES)}.")
        if f.direction not in DIRECTIONS:
            raise _bad(f"feature {f.name!r}: direction {f.direction!r} is unknown; use one of {', '.join(DIRECTIONS)}.")
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


def linear_form(c: FeatureConstraints, x: torch.Tensor, terms: Mapping[str, float], const: float) -> torch.Tensor:
    out = torch.full_like(x[:, 0], const)
    for n, coef in terms.items():
        out = out + coef * x[:, c.index(n)]
    return out


def check_rows(c: FeatureConstraints, x0: torch.Tensor, xa: torch.Tensor) -> Violations:
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
        want = linear_form(c, xa, d.terms, d.constant)
        rules.append(f"{d.feature}: derived")
        cols.append((xa[:, c.index(d.feature)] - want).abs() > tol * (1 + want.abs()))
    for q in c.inequalities:
        rules.append(f"{q.name}: inequality")
        cols.append(linear_form(c, xa, q.terms, 0.0) > q.rhs + tol * (1 + abs(q.rhs)))
    return Violations(torch.stack(cols, dim=1), rules)


def project_rows(c: FeatureConstraints, x0: torch.Tensor, x: torch.Tensor, *, discrete: bool) -> torch.Tensor:
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
            x[:, c.index(d.feature)] = linear_form(c, x, d.terms, d.constant)
    return x
