"""Knockoff under a victim budget smaller than its own: a partial surrogate flagged budget_exhausted, never a crash."""

from __future__ import annotations

import pytest

from sparring.attacks.extraction import KnockoffNets
from sparring.data import Dataset
from sparring.targets.torch import TorchTarget

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("victim_budget", "rounds_done"), [(200, 2), (150, 1)])
def test_knockoff_stops_at_the_victims_budget_and_says_so(
    digits_cnn: TorchTarget, digits: Dataset, victim_budget: int, rounds_done: int
) -> None:
    victim = TorchTarget(digits_cnn.model, digits_cnn.spec, query_budget=victim_budget)
    res = KnockoffNets(budget=300, rounds=2, epochs=2)(victim, digits.x_train, eval_x=digits.x_test[:50],
                                                      eval_y=digits.y_test[:50])
    assert res.queries == victim_budget == victim.counter.used  # every query the victim allowed, none more
    assert res.extras["budget_exhausted"] is True and res.summary()["budget_exhausted"] is True
    assert res.extras["rounds_done"] == len(res.history) == rounds_done
    assert res.extras["queries_x"].shape[0] == victim_budget
    assert res.history[-1]["queries"] == victim_budget


def test_knockoff_within_the_budget_is_not_flagged(digits_cnn: TorchTarget, digits: Dataset) -> None:
    victim = TorchTarget(digits_cnn.model, digits_cnn.spec, query_budget=300)
    res = KnockoffNets(budget=300, rounds=2, epochs=1)(victim, digits.x_train)
    assert res.queries == 300 and res.summary()["budget_exhausted"] is False
