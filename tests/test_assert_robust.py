"""A sample of robustness checks kept in a project's own test suite, as a team would write them."""

from __future__ import annotations

import pytest
import torch

from sparring import PGD, zoo
from sparring.errors import ParameterError
from sparring.testing import assert_robust

pytestmark = pytest.mark.robustness


def test_digits_model_survives_small_perturbations() -> None:
    result = assert_robust("digits-cnn", zoo.data("digits-cnn"), attack="pgd", eps=0.02, min_accuracy=0.8, n=64,
                           steps=10)
    assert result.robust_accuracy >= 0.8 and result.n == 64


def test_a_too_strict_requirement_fails_with_the_numbers() -> None:
    ds = zoo.data("digits-cnn")
    with pytest.raises(AssertionError, match=r"robust accuracy 0\.\d+ < required 0\.9000 under PGD\(") as e:
        assert_robust(zoo.load("digits-cnn"), (ds.x_test, ds.y_test), eps=0.15, min_accuracy=0.9, n=32, steps=10)
    assert "clean accuracy" in str(e.value)


def test_an_nn_module_with_a_spec_and_a_configured_attack() -> None:
    target = zoo.load("digits-cnn")
    ds = zoo.data("digits-cnn")
    assert isinstance(target.model, torch.nn.Module)
    r = assert_robust(target.model, (ds.x_test[:16], ds.y_test[:16]), spec=target.spec, eps=0.01, min_accuracy=0.5,
                      attack=PGD(eps=0.01, steps=5))
    assert r.params["eps"] == 0.01


def test_misuse_is_a_clear_error() -> None:
    ds = zoo.data("digits-cnn")
    with pytest.raises(ParameterError, match="unknown attack 'pgdd'"):
        assert_robust("digits-cnn", ds, attack="pgdd", eps=0.1, min_accuracy=0.5)
    with pytest.raises(ParameterError, match="spec="):
        assert_robust(torch.nn.Linear(2, 2), ds, eps=0.1, min_accuracy=0.5)
    with pytest.raises(ParameterError, match="min_accuracy"):
        assert_robust("digits-cnn", ds, eps=0.1, min_accuracy=2)
    with pytest.raises(ParameterError, match="differs from the attack's own eps"):
        assert_robust("digits-cnn", ds, eps=0.1, min_accuracy=0.5, attack=PGD(eps=0.2))


def test_the_robustness_marker_is_registered(pytestconfig: pytest.Config) -> None:
    assert any(m.startswith("robustness:") for m in pytestconfig.getini("markers"))
