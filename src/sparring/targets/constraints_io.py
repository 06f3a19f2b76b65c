"""Reading feature constraints from dicts and files, strictly: every wrong key, type or name is a typed error.

A constraints file is JSON or YAML holding the mapping :meth:`FeatureConstraints.to_dict` writes;
:meth:`FeatureConstraints.from_dict` and :meth:`FeatureConstraints.load` read it with the functions here
(:func:`read_constraints_file`, :func:`parse_constraint_fields`, :func:`check_constraints_match`). Nothing is
skipped or guessed: an unknown key, a bound that is not a number (``"low": "zero"``), a flag that is not a boolean,
a relation naming an undeclared feature, or a file whose features do not match the model or the data's columns
raises :class:`~sparring.errors.ParameterError` (the content) or :class:`~sparring.errors.InputSpecError` (the
match with the model and data) with the feature and the fix in the message; a missing or unreadable file raises
:class:`~sparring.errors.DataLoadError`. The CLI maps all three to exit code 3.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparring.errors import DataLoadError, InputSpecError, ParameterError
from sparring.targets.constraints_parts import Derived, Feature, LinearInequality, OneHotGroup

if TYPE_CHECKING:
    from sparring.targets.constraints import FeatureConstraints

__all__ = ["ConstraintFields", "check_constraints_match", "parse_constraint_fields", "read_constraints_file"]

ConstraintFields = tuple[tuple[Feature, ...], tuple[OneHotGroup, ...], tuple[Derived, ...],
                         tuple[LinearInequality, ...], float]
"""The arguments of ``FeatureConstraints``: features, one-hot groups, derived features, inequalities, tol."""

_TOP = {"features", "one_hot", "derived", "inequalities", "tol"}
_FEATURE = {"name", "low", "high", "type", "mutable", "direction", "cost", "levels"}


def _keys(d: Any, allowed: set[str], where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ParameterError(f"{where} must be a mapping (an object with keys {sorted(allowed)}); "
                             f"got {type(d).__name__} {d!r}.")
    extra = sorted(str(k) for k in set(d) - allowed)
    if extra:
        raise ParameterError(f"{where}: unknown keys {extra}; allowed: {sorted(allowed)}. Fix the spelling or remove "
                             "them.")
    return d


def _number(v: Any, where: str, key: str, example: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
        raise ParameterError(f"{where}: {key!r} must be a finite number; got {v!r}. Write e.g. {example}.")
    return float(v)


def _flag(v: Any, where: str, key: str) -> bool:
    if not isinstance(v, bool):
        raise ParameterError(f"{where}: {key!r} must be true or false; got {v!r}.")
    return v


def _name(v: Any, where: str, key: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ParameterError(f"{where}: {key!r} must be a non-empty string (a feature name); got {v!r}.")
    return v


def _list(v: Any, where: str, key: str) -> Sequence[Any]:
    if v is None:
        return ()
    if isinstance(v, str | bytes) or not isinstance(v, Sequence):
        raise ParameterError(f"{where}: {key!r} must be a list; got {type(v).__name__} {v!r}.")
    return v


def _terms(v: Any, where: str) -> dict[str, float]:
    if not isinstance(v, Mapping) or not v:
        raise ParameterError(f"{where}: 'terms' must be a non-empty mapping {{feature: coefficient}}; got {v!r}.")
    return {_name(k, where, "terms"): _number(c, where, f"terms.{k}", '{"amount": 1}') for k, c in v.items()}


def parse_constraint_fields(d: Any, source: str = "constraints") -> ConstraintFields:
    """The parts of a :class:`FeatureConstraints` read from a mapping, checking every key and type (see the module
    docstring); ``FeatureConstraints`` then checks how they fit together."""
    d = _keys(d, _TOP, source)
    feats = []
    for i, fd in enumerate(_list(d.get("features"), source, "features")):
        where = f"{source}: features[{i}]"
        fd = _keys(fd, set(fd) if isinstance(fd, Mapping) else _FEATURE, where)
        name = _name(fd.get("name"), where, "name")
        where = f"{source}: feature {name!r} (features[{i}])"
        _keys(fd, _FEATURE, where)
        kind = fd.get("type", "continuous")
        levels = None
        if fd.get("levels") is not None:
            levels = tuple(_number(v, where, "levels", '"levels": [1, 2, 3]')
                           for v in _list(fd["levels"], where, "levels"))
        low, high = fd.get("low"), fd.get("high")
        if kind == "binary":
            low, high = (0.0 if low is None else low), (1.0 if high is None else high)
        elif kind == "ordinal" and levels:
            low, high = (min(levels) if low is None else low), (max(levels) if high is None else high)
        if low is None or high is None:
            missing = [k for k, v in (("low", low), ("high", high)) if v is None]
            raise ParameterError(f"{where} needs {' and '.join(repr(k) for k in missing)} (binary and ordinal "
                                 "features may omit the bounds); add e.g. \"low\": 0, \"high\": 1.")
        cost = fd.get("cost")
        feats.append(Feature(
            name=name, low=_number(low, where, "low", '"low": 0'), high=_number(high, where, "high", '"high": 1'),
            type=kind, mutable=_flag(fd.get("mutable", True), where, "mutable"),
            direction=fd.get("direction", "any"),
            cost=None if cost is None else _number(cost, where, "cost", '"cost": 0.01'), levels=levels))
    if not feats:
        raise ParameterError(f"{source}: 'features' is missing or empty; declare one entry per input column, e.g. "
                             '{"features": [{"name": "amount", "low": 0, "high": 5000}]}.')
    groups = []
    for i, gd in enumerate(_list(d.get("one_hot"), source, "one_hot")):
        where = f"{source}: one_hot[{i}]"
        gd = _keys(gd, {"name", "features", "mutable", "cost"}, where)
        members = tuple(_name(n, where, "features") for n in _list(gd.get("features"), where, "features"))
        groups.append(OneHotGroup(_name(gd.get("name", f"group{i}"), where, "name"), members,
                                  _flag(gd.get("mutable", True), where, "mutable"),
                                  _number(gd.get("cost", 1.0), where, "cost", '"cost": 1')))
    derived = []
    for i, dd in enumerate(_list(d.get("derived"), source, "derived")):
        where = f"{source}: derived[{i}]"
        dd = _keys(dd, {"feature", "terms", "constant"}, where)
        derived.append(Derived(_name(dd.get("feature"), where, "feature"), _terms(dd.get("terms"), where),
                               _number(dd.get("constant", 0.0), where, "constant", '"constant": 0')))
    ineqs = []
    for i, qd in enumerate(_list(d.get("inequalities"), source, "inequalities")):
        where = f"{source}: inequalities[{i}]"
        qd = _keys(qd, {"name", "terms", "rhs"}, where)
        if "rhs" not in qd:
            raise ParameterError(f"{where} needs 'rhs' (the right-hand side of sum(coef * x) <= rhs).")
        ineqs.append(LinearInequality(_name(qd.get("name", f"inequality{i}"), where, "name"),
                                      _terms(qd.get("terms"), where), _number(qd["rhs"], where, "rhs", '"rhs": 100')))
    tol = _number(d.get("tol", 1e-3), source, "tol", '"tol": 0.001')
    return tuple(feats), tuple(groups), tuple(derived), tuple(ineqs), tol


def read_constraints_file(path: str | Path) -> tuple[Mapping[str, Any], str]:
    """The mapping in a constraints file (``.json``, ``.yaml``/``.yml``) and how errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise DataLoadError(f"constraints file {str(p)!r} does not exist; give the path of a .json or .yaml file.")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataLoadError(f"constraints file {str(p)!r} cannot be read as UTF-8 text ({exc}).") from exc
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # JSON and YAML parse errors both become one typed error
        raise DataLoadError(f"constraints file {str(p)!r} is not valid {p.suffix or 'JSON'}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise DataLoadError(f"constraints file {str(p)!r} must hold a mapping with a 'features' list; "
                            f"got {type(data).__name__}.")
    return data, f"constraints file {p.name!r}"


def check_constraints_match(c: FeatureConstraints, *, n_features: int | None = None,
                            columns: Sequence[str] | None = None, source: str = "the constraints") -> None:
    """Raise :class:`InputSpecError` unless ``c`` declares ``n_features`` features and, when the data names its
    columns, the same names in the same order (the first mismatch is named)."""
    if n_features is not None and c.n_features != n_features:
        raise InputSpecError(
            f"{source} declares {c.n_features} features but the model takes {n_features}; declare one entry per "
            f"input column, in column order (declared: {', '.join(c.names[:8])}{', ...' if c.n_features > 8 else ''})."
        )
    if columns is None:
        return
    cols = [str(s) for s in columns]
    if len(cols) != c.n_features:
        raise InputSpecError(f"{source} declares {c.n_features} features but the data has {len(cols)} feature "
                             f"columns ({', '.join(cols[:8])}); declare one entry per column, in column order.")
    for j, (want, got) in enumerate(zip(c.names, cols, strict=True)):
        if want != got:
            hint = (f"the data has {want!r} as column {cols.index(want)}: keep the constraints in column order"
                    if want in cols else f"no data column is named {want!r}: rename it to {got!r} or fix the data")
            raise InputSpecError(f"{source}: feature {j} is {want!r} but data column {j} is {got!r}; {hint}.")
