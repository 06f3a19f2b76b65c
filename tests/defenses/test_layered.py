"""Layered defence on 8×8 digits: a PGD-trained MLP, bit-depth reduction and a Mahalanobis detector as one system
with outcomes {correct, wrong, rejected}, attacked adaptively; the table shows what each layer contributes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparring import load_digits
from sparring.data import Dataset
from sparring.defenses.detect.features import MahalanobisDetector, MaxSoftmaxDetector
from sparring.defenses.layered import CORRECT, REJECTED, WRONG, LayeredDefence, LayeredEvaluation, evaluate_layers
from sparring.defenses.preprocess import BitDepth
from sparring.defenses.training import adversarial_train, train_with_noise
from sparring.errors import ParameterError
from sparring.targets import TorchTarget

EPS = 0.2
N = 100


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def digits8() -> Dataset:
    return load_digits(8)


@pytest.fixture(scope="module")
def plain(digits8: Dataset) -> TorchTarget:
    return TorchTarget(train_with_noise(_mlp(), digits8, digits8.spec, sigma=0.0, epochs=10, lr=3e-3), digits8.spec)


@pytest.fixture(scope="module")
def robust(digits8: Dataset) -> TorchTarget:
    t = TorchTarget(_mlp(), digits8.spec)
    adversarial_train(t, digits8, method="pgd", eps=EPS, steps=5, epochs=5, lr=3e-3)
    return t


@pytest.fixture(scope="module")
def evaluation(robust: TorchTarget, plain: TorchTarget, digits8: Dataset) -> LayeredEvaluation:
    det = MahalanobisDetector(robust).fit(digits8.x_train, digits8.y_train).calibrate(digits8.x_test[200:])
    system = LayeredDefence(robust, [BitDepth(2)], det)
    return evaluate_layers(system, digits8.x_test[:N], digits8.y_test[:N], eps=EPS, steps=20, baseline=plain)


def test_outcomes_are_correct_wrong_or_rejected(plain: TorchTarget, digits8: Dataset) -> None:
    x, y = digits8.x_test[:N], digits8.y_test[:N]
    alone = LayeredDefence(plain).outcomes(x, y)
    assert torch.equal(alone == CORRECT, plain.predict(x) == y) and bool((alone != REJECTED).all())
    det = MaxSoftmaxDetector(plain).calibrate(digits8.x_test[200:], fpr=0.2)
    guarded = LayeredDefence(plain, (), det).outcomes(x, y)
    flagged = det.detect(x)
    assert torch.equal(guarded == REJECTED, flagged)
    assert torch.equal(guarded[~flagged], alone[~flagged])
    rates = LayeredDefence(plain, (), det).outcome_rates(x.numpy(), y.numpy())
    assert abs(sum(rates.values()) - 1) < 1e-9 and rates["rejected"] > 0.05
    assert LayeredDefence(plain).outcomes(x.numpy(), y).dtype.kind == "i"  # numpy in, numpy out


def test_layer_table_has_every_configuration_and_rates_sum_to_one(evaluation: LayeredEvaluation) -> None:
    names = [r.name for r in evaluation.rows]
    assert names == ["undefended", "model", "model + preprocessing", "model + detector", "all layers"]
    for r in evaluation.rows:
        assert abs(sum(r.clean.values()) - 1) < 1e-9 and abs(sum(r.attacked.values()) - 1) < 1e-9
        assert r.attacked["correct"] <= r.clean["correct"] + 0.02  # attacks only take points away
    assert evaluation.to_dict()["rows"][0]["name"] == "undefended"
    assert evaluation.table().count("\n") == len(names) + 1


def test_each_layer_contribution_is_measured_honestly(evaluation: LayeredEvaluation) -> None:
    undefended, model = evaluation.row("undefended"), evaluation.row("model")
    pre, det, full = evaluation.row("model + preprocessing"), evaluation.row("model + detector"), evaluation.row(
        "all layers")
    # measured (eps 0.2, 100 points): attacked correct 0.02 undefended, 0.23 PGD-trained, 0.05 with bit depth
    # under BPDA, 0.18 with the detector (10% rejected), 0.04 with all layers
    assert model.attacked["correct"] >= undefended.attacked["correct"] + 0.1  # adversarial training helps
    assert pre.attacked["correct"] <= model.attacked["correct"] + 0.05  # preprocessing adds nothing under BPDA
    assert det.clean["rejected"] <= 0.25  # the detector's price on clean inputs (5% FPR on its calibration set)
    assert det.attacked["rejected"] <= 0.2 and full.attacked["wrong"] >= 0.5  # the adaptive attacker evades it


def test_bad_compositions_raise_typed_errors(plain: TorchTarget, digits8: Dataset) -> None:
    with pytest.raises(ParameterError, match="threshold"):
        LayeredDefence(plain, (), MaxSoftmaxDetector(plain))
    with pytest.raises(ParameterError, match="TorchTarget"):
        LayeredDefence("model")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="score"):
        LayeredDefence(plain, (), object())  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="eps"):
        LayeredDefence(plain).attack(digits8.x_test[:4], digits8.y_test[:4], eps=-1)
    assert WRONG == 1
