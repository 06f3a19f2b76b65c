"""FeatureConstraints: validation names the feature, the checker catches each rule, repair makes rows feasible."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sparring.errors import DataLoadError, InputSpecError, ParameterError
from sparring.targets.constraints import FeatureConstraints

SPEC: dict[str, Any] = {
    "features": [
        {"name": "amount", "low": 0, "high": 100, "cost": 0.01},
        {"name": "count", "low": 0, "high": 10, "type": "integer", "direction": "increase"},
        {"name": "age", "low": 18, "high": 99, "type": "integer", "mutable": False},
        {"name": "grade", "type": "ordinal", "levels": [1, 2, 3]},
        {"name": "cat_a", "type": "binary"},
        {"name": "cat_b", "type": "binary"},
        {"name": "prior", "low": 0, "high": 100, "mutable": False},
        {"name": "total", "low": 0, "high": 200},
    ],
    "one_hot": [{"name": "cat", "features": ["cat_a", "cat_b"], "cost": 0.4}],
    "derived": [{"feature": "total", "terms": {"prior": 1, "amount": 1}}],
    "inequalities": [{"name": "cap", "terms": {"total": 1}, "rhs": 150}],
}
X0 = torch.tensor([[10.0, 2, 30, 2, 1, 0, 20, 30], [50.0, 5, 40, 1, 0, 1, 90, 140]])


@pytest.fixture
def c() -> FeatureConstraints:
    return FeatureConstraints.from_dict(SPEC)


def test_clean_rows_pass_and_each_rule_is_caught(c: FeatureConstraints) -> None:
    assert bool(c.check(X0, X0).ok.all())
    cases = {
        "amount: bounds": (0, 120.0), "count: increase only": (1, 1.0), "count: integer": (1, 2.5),
        "age: immutable": (2, 31.0), "grade: ordinal level": (3, 2.5), "cat: one-hot": (5, 1.0),
        "total: derived": (7, 35.0), "prior: immutable": (6, 21.0),
    }
    for rule, (col, value) in cases.items():
        xa = X0.clone()
        xa[0, col] = value
        v = c.check(X0, xa)
        assert rule in v.describe(0), (rule, v.describe(0))
        assert not bool(v.ok[0]) and bool(v.ok[1])
    xa = X0.clone()
    xa[1, 0], xa[1, 7] = 70.0, 160.0  # derived kept exact, but above the cap
    assert c.check(X0, xa).describe(1) == ["cap: inequality"]


def test_repair_rounds_resets_and_recomputes(c: FeatureConstraints) -> None:
    wild = X0 + torch.tensor([[33.3, -1.6, 5.0, 0.4, -0.7, 0.9, 3.0, 0.0], [-20.0, 2.4, -4.0, 1.2, 0.2, 0.1, 0, 0]])
    fixed = c.repair(X0, wild)
    v = c.check(X0, fixed)
    assert bool(v.ok.all()), [v.describe(i) for i in range(2)]
    assert fixed[0, 1] == 2 and fixed[0, 2] == 30 and fixed[0, 5] == 1  # count may not decrease; age fixed
    assert fixed[0, 7] == pytest.approx(20 + 43.3, abs=1e-4)


def test_cost_weights_units_and_groups(c: FeatureConstraints) -> None:
    xa = X0.clone()
    xa[0, 0] += 10  # 10 units at 0.01
    xa[0, 4], xa[0, 5] = 0, 1  # category switch at 0.4
    xa[0, 7] += 10  # derived: free
    assert c.cost(X0, xa).tolist() == pytest.approx([0.5, 0.0])


def test_dict_json_and_yaml_round_trip(c: FeatureConstraints, tmp_path: Path) -> None:
    assert FeatureConstraints.from_dict(c.to_dict()) == c
    c.save(tmp_path / "c.json")
    assert FeatureConstraints.load(tmp_path / "c.json") == c
    yaml = pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(SPEC))
    assert FeatureConstraints.load(tmp_path / "c.yaml") == c


def test_relaxed_keeps_only_bounds(c: FeatureConstraints) -> None:
    r = c.relaxed()
    assert not r.groups and not r.derived and not r.inequalities
    assert all(f.mutable and f.type == "continuous" and f.direction == "any" for f in r.features)


@pytest.mark.parametrize(("patch", "needle"), [
    ({"features": [{"name": "a", "low": 1, "high": 0}]}, "'a'"),
    ({"features": [{"name": "a", "low": 0, "high": 1, "type": "float"}]}, "'float'"),
    ({"features": [{"name": "a", "low": 0, "high": 1, "direction": "up"}]}, "'up'"),
    ({"features": [{"name": "a", "low": 0, "high": 1, "cost": -1}]}, "'a'"),
    ({"features": [{"name": "a", "low": 0}]}, "'high'"),
    ({"features": [{"name": "a", "low": 0, "high": 1, "colour": 1}]}, "colour"),
    ({"features": [{"name": "a", "type": "ordinal", "levels": [3, 1]}]}, "'a'"),
    ({"features": [{"name": "a", "low": 0, "high": 1}, {"name": "a", "low": 0, "high": 1}]}, "'a'"),
    ({"features": [{"name": "a", "low": 0, "high": 1}], "derived": [{"feature": "a", "terms": {"b": 1}}]}, "'b'"),
    ({"features": [{"name": "a", "low": 0, "high": 2}, {"name": "b", "type": "binary"}],
      "one_hot": [{"name": "g", "features": ["a", "b"]}]}, "'a'"),
    ({"features": [{"name": "a", "low": 0, "high": 1}], "extra": 1}, "extra"),
])
def test_invalid_specs_name_the_problem(patch: dict[str, Any], needle: str) -> None:
    with pytest.raises(ParameterError, match=needle):
        FeatureConstraints.from_dict(patch)


def test_shape_and_file_errors(c: FeatureConstraints, tmp_path: Path) -> None:
    with pytest.raises(InputSpecError, match="8 features"):
        c.check(X0[:, :5], X0[:, :5])
    with pytest.raises(DataLoadError, match="does not exist"):
        FeatureConstraints.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataLoadError, match="not valid"):
        FeatureConstraints.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    with pytest.raises(DataLoadError, match="mapping"):
        FeatureConstraints.load(tmp_path / "list.json")


@pytest.mark.parametrize(("patch", "needles"), [
    ({"features": [{"name": "amount", "low": "zero", "high": 1}]}, ["'amount'", "'low'", "'zero'", "number"]),
    ({"features": [{"name": "amount", "low": 0, "high": 1, "mutable": "no"}]}, ["'amount'", "'mutable'", "true"]),
    ({"features": [{"name": "amount", "low": 0, "high": 1, "cost": "cheap"}]}, ["'amount'", "'cost'"]),
    ({"features": [{"name": "amount", "low": True, "high": 1}]}, ["'amount'", "'low'"]),
    ({"features": [{"name": "amount", "lo": 0, "high": 1}]}, ["'lo'", "allowed"]),
    ({"features": [{"name": "g", "type": "ordinal", "levels": "1,2,3"}]}, ["'g'", "'levels'", "list"]),
    ({"features": [{"name": "a", "low": 0, "high": 1}], "derived": [{"feature": "a", "terms": {"b": "1"}}]},
     ["derived[0]", "terms.b"]),
    ({"features": [{"name": "a", "low": 0, "high": 1}, {"name": "b", "low": 0, "high": 1}],
      "derived": [{"feature": "a", "terms": {"bb": 1}}]}, ["derived feature 'a'", "'bb'", "declare"]),
    ({"features": [{"name": "a", "low": 0, "high": 1}], "inequalities": [{"terms": {"a": 1}}]}, ["'rhs'"]),
    ({"features": [{"name": "a", "low": 0, "high": 1}], "inequalities": [{"terms": {"z": 1}, "rhs": 1}]},
     ["inequality 'inequality0'", "'z'"]),
    ({"feature": [{"name": "a", "low": 0, "high": 1}]}, ["'feature'", "allowed"]),
    ({"features": []}, ["'features'", "empty"]),
    ({"features": {"name": "a"}}, ["'features'", "list"]),
])
def test_wrong_types_and_names_are_typed_errors(patch: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(ParameterError) as info:  # never a bare ValueError/KeyError, never silently coerced
        FeatureConstraints.from_dict(patch)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_file_errors_name_the_file_and_the_feature(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"features": [{"name": "amount", "low": "zero", "high": 5}]}))
    with pytest.raises(ParameterError, match=r"c\.json.*'amount'.*'low'"):
        FeatureConstraints.load(tmp_path / "c.json")
    with pytest.raises(DataLoadError, match="does not exist"):
        FeatureConstraints.load(tmp_path / "nope.yaml")


def test_constraints_must_match_the_model_and_the_data_columns(c: FeatureConstraints, tmp_path: Path) -> None:
    c.save(tmp_path / "c.json")
    assert FeatureConstraints.load(tmp_path / "c.json", n_features=8, columns=c.names) == c
    with pytest.raises(InputSpecError, match="declares 8 features but the model takes 9"):
        FeatureConstraints.load(tmp_path / "c.json", n_features=9)
    cols = list(c.names)
    cols[3] = "grade_level"
    with pytest.raises(InputSpecError, match="feature 3 is 'grade' but data column 3 is 'grade_level'"):
        FeatureConstraints.load(tmp_path / "c.json", columns=cols)
    cols = list(c.names)
    cols[0], cols[1] = cols[1], cols[0]
    with pytest.raises(InputSpecError, match="column order"):
        FeatureConstraints.load(tmp_path / "c.json", columns=cols)
    with pytest.raises(InputSpecError, match="7 feature columns"):
        FeatureConstraints.load(tmp_path / "c.json", columns=c.names[:7])
