"""Adversarial training with constrained examples makes fraud harder to disguise; cost-to-evade reporting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparring import zoo
from sparring.attacks.tabular import CPGD, CostSearch
from sparring.data.datasets import Dataset
from sparring.data.transactions import transactions_constraints
from sparring.defenses.training.constrained import constrained_adversarial_train, cost_to_evade
from sparring.errors import InputSpecError, ParameterError
from sparring.targets import TorchTarget

C = transactions_constraints()


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: see conftest


def _robust_recall(t: TorchTarget, ds: Dataset) -> tuple[float, float]:
    fraud = ds.y_test == 1
    r = CPGD(constraints=C, steps=20, refine=False)(t, ds.x_test[fraud], ds.y_test[fraud])
    return r.robust_accuracy, t.accuracy(ds.x_test, ds.y_test)


def test_constrained_training_raises_robust_fraud_recall() -> None:
    ds = zoo.data("fraud-mlp")
    plain = zoo.load("fraud-mlp")
    assert isinstance(plain, TorchTarget)
    robust = TorchTarget(zoo.entry("fraud-mlp").build(), plain.spec)
    losses = constrained_adversarial_train(robust, ds, C, eps=0.3, steps=5, epochs=4, batch_size=128, seed=0)
    assert len(losses) == 4 and losses[-1] < losses[0]
    rob_plain, acc_plain = _robust_recall(plain, ds)
    rob_at, acc_at = _robust_recall(robust, ds)
    assert rob_at >= rob_plain + 0.1, (rob_plain, rob_at)
    assert acc_at >= 0.9 and acc_plain >= 0.9


def test_cost_to_evade_takes_the_cheapest_feasible_evasion_per_point() -> None:
    t = zoo.load("fraud-mlp")
    ds = zoo.data("fraud-mlp")
    fraud = (ds.y_test == 1) & (t.predict(ds.x_test) == 1)
    x, y = ds.x_test[fraud][:24], ds.y_test[fraud][:24]
    a, b = CPGD(constraints=C, steps=10)(t, x, y), CostSearch(constraints=C)(t, x, y)
    rep = cost_to_evade([a, b])
    both = np.minimum(np.where(a.success.numpy(), a.costs.numpy(), np.inf),
                      np.where(b.success.numpy(), b.costs.numpy(), np.inf))
    assert np.array_equal(rep.costs, both)
    assert rep.evasion_rate >= 0.9
    d = rep.to_dict()
    assert d["n"] == 24 and d["median_cost_of_evasions"] is not None
    assert rep.robust_at(0.0) == 1.0 and rep.robust_at(1e9) == pytest.approx(1 - rep.evasion_rate)


def test_training_errors() -> None:
    ds = zoo.data("fraud-mlp")
    t = TorchTarget(zoo.entry("fraud-mlp").build(), zoo.entry("fraud-mlp").spec())
    with pytest.raises(ParameterError, match="epochs"):
        constrained_adversarial_train(t, ds, C, epochs=0)
    bad = Dataset("bad", torch.full_like(ds.x_train[:10], -1.0), ds.y_train[:10], ds.x_test, ds.y_test, ds.spec)
    with pytest.raises(InputSpecError, match="break the constraints"):
        constrained_adversarial_train(t, bad, C, epochs=1)
    with pytest.raises(ParameterError, match="at least one"):
        cost_to_evade([])
