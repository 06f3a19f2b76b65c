"""DP-SGD through Opacus: (ε, δ) is reported and membership attacks' ROC points respect TPR ≤ e^ε·FPR + δ."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sparring.attacks.privacy import LiRA, LossThreshold, MembershipResult, torch_trainer
from sparring.attacks.privacy.membership import random_halves
from sparring.attacks.result import Cost
from sparring.data.datasets import Dataset, load_digits
from sparring.defenses.training.dp import DPTrainingResult, check_dp_bound, dp_trainer, train_dp
from sparring.errors import ParameterError
from sparring.targets import TorchTarget

DP = {"epochs": 8, "batch_size": 128, "lr": 0.5, "target_epsilon": 2.0}


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: see conftest


@pytest.fixture(scope="module")
def universe() -> tuple[Dataset, torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = load_digits(8)
    x, y = torch.cat([ds.x_train, ds.x_test])[:1000], torch.cat([ds.y_train, ds.y_test])[:1000]
    return ds, x, y, random_halves(1, len(x), torch.Generator().manual_seed(123))[0]


@pytest.fixture(scope="module")
def dp_model(universe: tuple[Dataset, torch.Tensor, torch.Tensor, torch.Tensor]) -> DPTrainingResult:
    ds, x, y, member = universe
    return train_dp(_mlp(), x[member], y[member], ds.spec, seed=0, **DP)  # type: ignore[arg-type]


def test_dp_training_reports_epsilon_delta_and_learns(
        universe: tuple[Dataset, torch.Tensor, torch.Tensor, torch.Tensor], dp_model: DPTrainingResult) -> None:
    ds, x, y, member = universe
    assert 1.5 < dp_model.epsilon <= 2.05  # calibrated to the target ε by the RDP accountant
    assert dp_model.delta == pytest.approx(1 / (10 * int(member.sum())))
    assert dp_model.noise_multiplier > 0.5 and dp_model.steps > 0
    acc = TorchTarget(dp_model.model, ds.spec).accuracy(x[~member], y[~member])
    assert acc > 0.5  # private but useful (chance is 0.1)
    assert not hasattr(dp_model.model, "_module")  # a plain module, Opacus hooks removed


def test_attacks_on_dp_model_respect_the_epsilon_bound(
        universe: tuple[Dataset, torch.Tensor, torch.Tensor, torch.Tensor], dp_model: DPTrainingResult) -> None:
    ds, x, y, member = universe
    target = TorchTarget(dp_model.model, ds.spec)
    loss = LossThreshold()(target, x, y, member)
    lira = LiRA(n_shadow=2, online=False)(target, x, y, member, train=dp_trainer(_mlp, ds.spec, **DP))
    for res in (loss, lira):
        check = check_dp_bound(res, dp_model.epsilon, dp_model.delta)
        assert check.passed, check.summary()
        assert check.epsilon_lower_bound <= dp_model.epsilon
        assert check.n_points > 100


def test_bound_check_catches_a_leaky_model_claiming_small_epsilon(
        universe: tuple[Dataset, torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    ds, x, y, member = universe
    leaky = torch_trainer(_mlp, ds.spec, epochs=100, lr=1e-2, batch_size=500)(x[member], y[member], 999)
    res = LossThreshold()(leaky, x, y, member)
    check = check_dp_bound(res, 0.0, 0.0)
    assert not check.passed and check.violations > 0 and check.epsilon_lower_bound > 0


def test_bound_check_on_a_perfect_attack_gives_large_epsilon_lower_bound() -> None:
    member = torch.arange(400) < 200
    res = MembershipResult("oracle", {}, Cost(),
                           scores=member.double(), member=member)
    check = check_dp_bound(res, 2.0, 1e-5)
    assert not check.passed and check.epsilon_lower_bound > 3.0


def test_bound_check_confidence_holds_for_the_whole_curve() -> None:
    # informationless scores satisfy ε = 0, δ = 0: a 95% check may report a violation in at most 5% of evaluations
    # (testing each of the ~1,000 ROC points at 95% without a correction reported one in 7% of these 300)
    rng = np.random.default_rng(0)
    member = torch.arange(1000) < 500
    flagged = 0
    for _ in range(300):
        res = MembershipResult("noise", {}, Cost(), scores=torch.as_tensor(rng.standard_normal(1000)), member=member)
        check = check_dp_bound(res, 0.0, 0.0)
        flagged += not check.passed
    assert flagged / 300 <= 0.05


def test_bound_check_tests_the_symmetric_inequalities() -> None:
    # an attack that ranks every member below every non-member is as informative as the perfect one (flip it):
    # FPR <= e^ε·TPR + δ is what it violates
    member = torch.arange(400) < 200
    inverted = MembershipResult("inverted", {}, Cost(), scores=-member.double(), member=member)
    check = check_dp_bound(inverted, 2.0, 1e-5)
    assert not check.passed and check.violations == 1 and check.epsilon_lower_bound > 3.0


def test_dp_parameters_are_validated(universe: tuple[Dataset, torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    ds, x, y, member = universe
    with pytest.raises(ParameterError, match="exactly one of noise_multiplier"):
        train_dp(_mlp(), x, y, ds.spec, epochs=1)
    with pytest.raises(ParameterError, match="max_grad_norm must be a finite number > 0"):
        train_dp(_mlp(), x, y, ds.spec, epochs=1, noise_multiplier=1.0, max_grad_norm=0)
    with pytest.raises(ParameterError, match="delta must be in"):
        train_dp(_mlp(), x, y, ds.spec, epochs=1, noise_multiplier=1.0, delta=1.5)
    res = LossThreshold()(TorchTarget(_mlp(), ds.spec), x, y, member)
    with pytest.raises(ParameterError, match="epsilon must be a number >= 0"):
        check_dp_bound(res, -1.0, 1e-5)
