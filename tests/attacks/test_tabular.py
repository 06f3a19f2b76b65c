"""Constrained tabular evasion on the synthetic transactions: fraud-mlp (CPGD/CAPGD) and fraud-gbm (search, MILP).

Every adversarial row is re-checked here with the constraint checker, separately from the attacks' own check.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparring import zoo
from sparring.attacks.tabular import CAPGD, CPGD, ConstrainedResult, CostSearch, TreeEvasion
from sparring.data.transactions import transactions_constraints
from sparring.errors import AccessError, InputSpecError, ParameterError
from sparring.targets import SklearnTarget
from sparring.targets.base import Target
from sparring.targets.constraints import FeatureConstraints
from sparring.targets.spec import Access

C = transactions_constraints()


def _detected_fraud(target: Target, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = zoo.data("fraud-gbm")
    pred = target.predict(ds.x_test)
    keep = (pred == 1) & (ds.y_test == 1)
    return ds.x_test[keep][:n], ds.y_test[keep][:n]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: see conftest


@pytest.fixture(scope="module")
def mlp() -> Target:
    return zoo.load("fraud-mlp")


@pytest.fixture(scope="module")
def gbm() -> Target:
    return zoo.load("fraud-gbm")


def _all_feasible(r: ConstrainedResult, x: torch.Tensor) -> None:
    v = C.check(x, torch.as_tensor(r.x_adv))
    assert bool(v.ok.all()), v.by_rule()  # 100 % of the returned rows, checked independently


@pytest.mark.parametrize("attack_cls", [CPGD, CAPGD])
def test_cpgd_evades_fraud_mlp_within_constraints(mlp: Target, attack_cls: type[CPGD]) -> None:
    x, y = _detected_fraud(mlp, 48)
    r = attack_cls(constraints=C, steps=20)(mlp, x, y)
    _all_feasible(r, x)
    assert r.success_rate >= 0.8
    assert r.median_cost is not None and 0 < r.median_cost < 2
    assert r.cost.gradients > 0 and r.summary()["violations"] == {}


def test_unconstrained_success_breaks_constraints(mlp: Target) -> None:
    x, y = _detected_fraud(mlp, 32)
    r = CPGD(constraints=C, steps=20, constrained=False, refine=False)(mlp, x, y)
    assert r.success_rate >= 0.9  # the "fantasy" success ...
    assert float(torch.as_tensor(r.feasible).float().mean()) < 0.5  # ... mostly on rows no attacker can produce
    assert r.violations and "total_24h: derived" in r.violations


@pytest.mark.parametrize("access", [Access.SCORES, Access.LABELS])
def test_cost_search_evades_fraud_gbm(gbm: Target, access: Access) -> None:
    x, y = _detected_fraud(gbm, 32)
    t = SklearnTarget(gbm.estimator, gbm.spec, access=access)  # type: ignore[attr-defined]
    r = CostSearch(constraints=C, boundary_steps=3 if access == Access.LABELS else 0)(t, x, y)
    _all_feasible(r, x)
    assert r.success_rate >= 0.9
    assert r.median_cost is not None and r.median_cost < 1.5


def test_tree_milp_is_never_costlier_than_the_black_box_search(gbm: Target) -> None:
    x, y = _detected_fraud(gbm, 5)
    search = CostSearch(constraints=C)(gbm, x, y)
    exact = TreeEvasion(constraints=C)(gbm, x, y)
    _all_feasible(exact, x)
    assert exact.extras["proven_optimal"] == exact.extras["solved"] == 5
    assert bool((exact.success >= search.success).all())
    both = exact.success & search.success
    assert int(both.sum()) >= 4
    assert bool((exact.costs[both] <= search.costs[both] + 1e-4).all())


def test_tree_milp_handles_random_forests() -> None:
    from sklearn.ensemble import RandomForestClassifier

    ds = zoo.data("fraud-gbm")
    rf = RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0).fit(ds.x_train[:1500], ds.y_train[:1500])
    t = SklearnTarget(rf, ds.spec)
    x, y = _detected_fraud(t, 4)
    r = TreeEvasion(constraints=C)(t, x, y)
    _all_feasible(r, x)
    assert r.success_rate == 1.0


def test_errors_are_typed(mlp: Target, gbm: Target) -> None:
    x, y = _detected_fraud(gbm, 4)
    with pytest.raises(AccessError, match="CPGD"):
        CPGD(constraints=C)(gbm, x, y)
    with pytest.raises(ParameterError, match="eps"):
        CPGD(constraints=C, eps=2.0)(mlp, x, y)
    with pytest.raises(ParameterError, match="beam_width"):
        CostSearch(constraints=C, beam_width=0)(gbm, x, y)
    with pytest.raises(ParameterError, match="boundary_steps"):
        CostSearch(constraints=C, boundary_steps=-1)(gbm, x, y)
    with pytest.raises(ParameterError, match="CostSearch"):
        TreeEvasion(constraints=C)(mlp, x, y)
    with pytest.raises(ParameterError, match="max_nodes"):
        TreeEvasion(constraints=C, max_nodes=10)(gbm, x, y)
    small = FeatureConstraints.from_dict({"features": [{"name": "a", "low": 0, "high": 1}]})
    with pytest.raises(InputSpecError, match="declare 1"):
        CostSearch(constraints=small)(gbm, x, y)
    bad = x.clone()
    bad[0, 7] += 5.0  # the derived total no longer matches: clean data must be feasible
    with pytest.raises(InputSpecError, match="total_24h: derived"):
        CostSearch(constraints=C)(gbm, bad, y)


def test_numpy_in_numpy_out(gbm: Target) -> None:
    x, y = _detected_fraud(gbm, 6)
    r = CostSearch(constraints=C, samples=64)(gbm, x.numpy(), y.numpy())
    assert isinstance(r.x_adv, np.ndarray) and isinstance(r.costs, np.ndarray) and r.x_adv.dtype == np.float32
    assert bool(C.check(x.numpy(), r.x_adv).ok.all())
    assert r.summary()["median_cost"] == r.median_cost


@pytest.mark.slow
def test_tree_milp_against_search_on_40_points(gbm: Target) -> None:
    """The benchmark's claim (benchmarks/bench_tabular.py): never costlier on any of 40 detected fraud rows."""
    x, y = _detected_fraud(gbm, 40)
    search = CostSearch(constraints=C)(gbm, x, y)
    exact = TreeEvasion(constraints=C)(gbm, x, y)
    _all_feasible(exact, x)
    assert exact.success_rate == 1.0
    assert bool((exact.costs <= search.costs + 1e-4).all())
    assert float(exact.costs.median()) < float(search.costs.median())


def _one_mutable(name: str) -> FeatureConstraints:
    """Only ``name`` may change (no relations): most detected fraud rows cannot be evaded."""
    d = C.to_dict()
    for f in d["features"]:
        f["mutable"] = f["name"] == name
    d["one_hot"] = [dict(g, mutable=False) for g in d["one_hot"]]
    d["derived"] = []
    return FeatureConstraints.from_dict(d)


@pytest.mark.parametrize("access", [Access.SCORES, Access.LABELS])
def test_cost_search_out_of_budget_marks_unfinished_rows_unknown(gbm: Target, access: Access) -> None:
    x, y = _detected_fraud(gbm, 80)  # two chunks of the search (64 + 16)
    c = _one_mutable("distance_km")
    est = gbm.estimator  # type: ignore[attr-defined]
    full = CostSearch(constraints=c)(SklearnTarget(est, gbm.spec, access=access), x, y)
    assert full.n_unknown == 0 and full.robust_accuracy >= 0.8 and not full.summary()["budget_exhausted"]
    budget = full.cost.queries // 2
    t = SklearnTarget(est, gbm.spec, access=access, query_budget=budget)
    part = CostSearch(constraints=c)(t, x, y)  # used to raise QueryBudgetExceeded
    s = part.summary()
    assert s["budget_exhausted"] and part.cost.queries <= budget and t.counter.used <= budget
    unknown, robust, broken = part.unknown_mask, part.robust_mask, np.asarray(part.success, dtype=bool)
    assert part.n_unknown >= 16 and not (unknown & robust).any() and not (unknown & broken).any()
    assert bool((unknown | robust | broken).all())
    assert s["robust_accuracy"] < full.robust_accuracy  # the unfinished rows are not counted as robust
    assert s["n_unknown"] == part.n_unknown
    assert s["robust_accuracy"] + s["unknown_rate"] + s["success_rate"] == pytest.approx(1.0)
    assert bool((robust <= full.robust_mask).all()) and bool((broken <= np.asarray(full.success, dtype=bool)).all())
    _all_feasible(part, x)
    none = CostSearch(constraints=c)(SklearnTarget(est, gbm.spec, access=access, query_budget=10), x, y)
    assert none.n_unknown == len(x) and none.robust_accuracy == 0.0 and none.extras["unattacked"] == len(x)


def test_cost_search_evasions_found_before_the_budget_ran_out_are_kept(gbm: Target) -> None:
    x, y = _detected_fraud(gbm, 32)
    full = CostSearch(constraints=C)(gbm, x, y)
    t = SklearnTarget(gbm.estimator, gbm.spec, query_budget=full.cost.queries - 5)  # type: ignore[attr-defined]
    part = CostSearch(constraints=C)(t, x, y)  # no queries left to re-check: the search's own answers stand
    assert part.summary()["budget_exhausted"] and part.success_rate == full.success_rate >= 0.9
    assert bool((torch.as_tensor(gbm.predict(part.x_adv)) != y)[torch.as_tensor(part.success)].all())
    _all_feasible(part, x)


def test_white_box_and_milp_attacks_out_of_budget_report_unknown_not_robust(mlp: Target, gbm: Target) -> None:
    from sparring.targets import TorchTarget

    x, y = _detected_fraud(mlp, 32)
    c = _one_mutable("distance_km")  # most rows stay robust
    full = CPGD(constraints=c, steps=10)(TorchTarget(mlp.model, mlp.spec, batch_size=8), x, y)  # type: ignore[attr-defined]
    assert full.robust_accuracy >= 0.5 and full.n_unknown == 0
    t = TorchTarget(mlp.model, mlp.spec, batch_size=8, query_budget=full.cost.queries // 2)  # type: ignore[attr-defined]
    r = CPGD(constraints=c, steps=10)(t, x, y)  # used to raise QueryBudgetExceeded
    unknown, robust, broken = r.unknown_mask, r.robust_mask, np.asarray(r.success, dtype=bool)
    assert r.summary()["budget_exhausted"] and 8 <= r.n_unknown < len(x)  # the batches of 8 finished stay measured
    assert not (unknown & robust).any() and bool((unknown | robust | broken).all())
    assert bool((robust <= full.robust_mask).all()) and r.robust_accuracy < full.robust_accuracy
    x, y = _detected_fraud(gbm, 3)
    g = SklearnTarget(gbm.estimator, gbm.spec, query_budget=3)  # type: ignore[attr-defined]
    exact = TreeEvasion(constraints=C)(g, x, y)  # the clean predictions only: no query left to verify an evasion
    assert exact.summary()["budget_exhausted"] and exact.n_unknown == 3 and exact.robust_accuracy == 0.0
    _all_feasible(exact, x)
