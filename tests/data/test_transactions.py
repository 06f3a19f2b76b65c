"""The synthetic transactions: deterministic, realistic constraints that hold on every row, a learnable label."""

from __future__ import annotations

import numpy as np
import pytest

from sparring.data import load_breast_cancer
from sparring.data.transactions import (
    TRANSACTION_FEATURES,
    breast_cancer_constraints,
    generate_transactions,
    load_transactions,
    transactions_constraints,
)
from sparring.errors import ParameterError


def test_generator_is_seeded_and_every_row_is_feasible() -> None:
    x, y = generate_transactions(3000, seed=1)
    x2, y2 = generate_transactions(3000, seed=1)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, generate_transactions(3000, seed=2)[0])
    assert x.shape == (3000, len(TRANSACTION_FEATURES)) and x.dtype == np.float32
    assert 0.10 < y.mean() < 0.14
    c = transactions_constraints()
    v = c.check(x, x)
    assert bool(v.ok.all()), v.by_rule()
    cats = x[:, 11:]
    assert np.array_equal(cats.sum(1), np.ones(3000)) and set(np.unique(cats)) == {0.0, 1.0}
    assert np.array_equal(x[:, 7], x[:, 6] + x[:, 0])  # the derived total


def test_fraud_label_follows_the_risk_factors() -> None:
    x, y = generate_transactions(6000, seed=0)
    amount, night = x[:, 0], x[:, 2] <= 5
    assert y[amount > np.quantile(amount, 0.9)].mean() > 2 * y.mean()
    assert y[night].mean() > y[~night].mean()


def test_dataset_split_and_spec() -> None:
    ds = load_transactions(n=800)
    assert len(ds.x_train) + len(ds.x_test) == 800
    assert ds.spec.class_names == ("legit", "fraud")
    ds.spec.validate(ds.x_test, ds.y_test)  # within the declared bounds


def test_bad_arguments_raise() -> None:
    with pytest.raises(ParameterError, match="n must be"):
        generate_transactions(10)
    with pytest.raises(ParameterError, match="fraud_rate"):
        generate_transactions(100, fraud_rate=0.9)


def test_breast_cancer_example_spec_holds_on_the_bundled_data() -> None:
    c = breast_cancer_constraints()
    ds = load_breast_cancer()
    assert c.n_features == 30 and len(c.inequalities) == 10
    assert bool(c.check(ds.x_train, ds.x_train).ok.all())
    assert sum(not f.mutable for f in c.features) == 10
