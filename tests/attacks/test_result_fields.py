"""EvasionResult's bookkeeping: unknown points, robust intervals, medians of real successes, plain-JSON summaries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from sparring.attacks.result import Cost, EvasionResult, clopper_pearson


def _result(**kw: object) -> EvasionResult:
    base: dict[str, object] = dict(
        attack="x", params={}, cost=Cost(),
        y=np.array([0, 1, 2, 3]), adv_pred=np.array([0, 1, 0, 3]), success=np.array([False, False, True, False]),
        clean_correct=np.array([True, True, True, True]), norms=np.array([0.0, 0.0, 0.3, 0.0]),
    )
    base.update(kw)
    return EvasionResult(**base)  # type: ignore[arg-type]


def test_unknown_points_are_not_robust_and_are_counted_apart() -> None:
    r = _result(unknown=np.array([False, True, False, True]))
    assert r.robust_accuracy == 0.25  # only point 0 finished unbroken
    assert (r.n_unknown, r.unknown_rate) == (2, 0.5)
    s = r.summary()
    assert s["robust_accuracy"] == 0.25 and s["n_unknown"] == 2 and s["unknown_rate"] == 0.5
    json.dumps(s)  # plain JSON
    assert _result().robust_accuracy == 0.75 and _result().n_unknown == 0  # no unknown field: nothing unknown


def test_robust_interval_is_clopper_pearson() -> None:
    r = _result()
    lo, hi = r.robust_interval
    ref = binomtest(3, 4).proportion_ci(0.95, method="exact")
    assert lo == pytest.approx(ref.low) and hi == pytest.approx(ref.high)
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0
    assert r.summary()["robust_interval"] == [lo, hi]


def test_median_perturbation_excludes_points_already_misclassified() -> None:
    # points 0 and 1 were wrong when clean (successes with norm 0); the one real success moved 0.3
    r = _result(success=np.array([True, True, True, False]), clean_correct=np.array([False, False, True, True]),
                adv_pred=np.array([1, 0, 0, 3]))
    assert r.summary()["median_norm_of_successes"] == pytest.approx(0.3)
    only_clean_wrong = _result(success=np.array([True, False, False, False]),
                               clean_correct=np.array([False, True, True, True]), norms=np.zeros(4))
    assert only_clean_wrong.summary()["median_norm_of_successes"] is None
