"""Per-feature budget units: "eps 0.1" is a tenth of every feature's range (or standard deviation, or the unit a
scale file gives), for white-box and black-box targets alike, on the same model and the same query counter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sparring import zoo
from sparring.attacks.evasion.pgd import PGD
from sparring.attacks.evasion.square import Square
from sparring.errors import DataLoadError, InputSpecError, ParameterError
from sparring.targets import SklearnTarget, TorchTarget
from sparring.targets.base import Target
from sparring.targets.units import FeatureScale, in_units

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mlp() -> Target:
    return zoo.load("breast-cancer-mlp")


@pytest.fixture(scope="module")
def rows() -> tuple[torch.Tensor, torch.Tensor]:
    ds = zoo.data("breast-cancer-mlp")
    return ds.x_test[:80], ds.y_test[:80]


def _widths(t: Target) -> torch.Tensor:
    lo, hi = t.spec.bounds_tensors()
    return (hi - lo).reshape(-1)


def test_range_units_give_every_feature_the_same_share_of_its_range(
    mlp: Target, rows: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = rows
    w = _widths(mlp)
    assert float(w.max() / w.min()) > 1e4  # breast cancer: one raw eps cannot fit every feature
    s = FeatureScale.from_range(mlp.spec)
    u = in_units(mlp, s)
    assert isinstance(u, TorchTarget) and u.counter is mlp.counter
    z = s.to_units(x)
    assert float(z.min()) >= 0 and float(z.max()) <= 1
    assert bool((u.predict(z) == mlp.predict(x)).all())  # the same model, unit for unit
    r = PGD(eps=0.05, steps=20)(u, z, y)
    xa = s.from_units(torch.as_tensor(r.x_adv))
    frac = (xa - x).abs() / w
    assert float(frac.max()) <= 0.05 + 1e-5 and float(frac.max()) >= 0.049  # every feature may move 5 % of its range
    assert int((frac.amax(0) > 0.04).sum()) >= 20  # and most of them do (a raw eps from one feature frees 25 of 30)
    lo, hi = mlp.spec.bounds_tensors()
    assert bool((xa >= lo - 1e-3 * w).all() and (xa <= hi + 1e-3 * w).all())
    assert bool((mlp.predict(xa) == torch.as_tensor(r.adv_pred)).all())
    assert 0.2 < r.robust_accuracy < r.clean_accuracy  # a budget that means something: neither 0 nor untouched
    raw = PGD(eps=0.01 * float(w.max()), steps=20)(mlp, x, y)  # the old template's smallest budget, 41.0
    assert raw.robust_accuracy == 0.0


def test_black_box_targets_in_units_share_the_counter_and_budget(rows: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = rows
    logreg = zoo.load("breast-cancer-logreg")
    t = SklearnTarget(logreg.estimator, logreg.spec, query_budget=400)  # type: ignore[attr-defined]
    s = FeatureScale.from_range(t.spec)
    u = in_units(t, s)
    assert not isinstance(u, TorchTarget) and u.access == t.access and u.counter is t.counter
    z = s.to_units(x[:20])
    np.testing.assert_allclose(u.scores(z), t.scores(x[:20]), rtol=1e-4, atol=1e-6)
    assert t.counter.used == 40  # 20 + 20: each query counted once
    r = Square(eps=0.1, n_queries=100, seed=0)(u, z, y[:20])
    assert r.summary()["budget_exhausted"] and t.counter.used <= 400
    frac = (s.from_units(torch.as_tensor(r.x_adv)) - x[:20]).abs() / _widths(t)
    assert float(frac.max()) <= 0.1 + 1e-5


def test_std_units_and_scale_files(mlp: Target, rows: tuple[torch.Tensor, torch.Tensor], tmp_path: Path) -> None:
    x, _ = rows
    s = FeatureScale.from_std(mlp.spec, x)
    np.testing.assert_allclose(s.to_units(x).std(0, unbiased=False).numpy(), 1.0, rtol=1e-4)
    assert s.kind == "std" and FeatureScale.resolve("raw", mlp.spec) is None
    names = [f"f{j}" for j in range(30)]
    (tmp_path / "list.json").write_text(json.dumps([1.0] * 30))
    (tmp_path / "named.json").write_text(json.dumps({"scale": {n: 2.0 for n in names}}))
    assert FeatureScale.resolve(str(tmp_path / "list.json"), mlp.spec).scale == (1.0,) * 30
    assert FeatureScale.load(tmp_path / "named.json", mlp.spec, names).scale == (2.0,) * 30
    (tmp_path / "short.json").write_text(json.dumps([1.0] * 29))
    (tmp_path / "zero.json").write_text(json.dumps([0.0] * 30))
    (tmp_path / "typo.json").write_text(json.dumps({"scale": {**{n: 1 for n in names[1:]}, "F0": 1}}))
    with pytest.raises(ParameterError, match="30 numbers"):
        FeatureScale.load(tmp_path / "short.json", mlp.spec)
    with pytest.raises(ParameterError, match="> 0"):
        FeatureScale.load(tmp_path / "zero.json", mlp.spec)
    with pytest.raises(ParameterError, match=r"without a unit \['f0'\].*unknown features \['F0'\]"):
        FeatureScale.load(tmp_path / "typo.json", mlp.spec, names)
    with pytest.raises(ParameterError, match="names its features"):
        FeatureScale.load(tmp_path / "named.json", mlp.spec)
    with pytest.raises(DataLoadError, match="does not exist"):
        FeatureScale.resolve(str(tmp_path / "none.json"), mlp.spec)
    with pytest.raises(InputSpecError, match="flat feature vectors"):
        FeatureScale.from_range(zoo.entry("digits-cnn").spec())
