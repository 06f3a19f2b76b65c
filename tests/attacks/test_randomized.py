"""Randomized models are judged by their expected (majority) prediction, never by one draw.

The model under test is made outside sparring: a small MLP that adds Gaussian noise to its input in ``forward``,
trained here with that noise, scripted with TorchScript and saved to ``tmp_path``. The reference is a careful EOT-PGD
written in this file (gradients averaged over 20 draws, no early stop, the last iterate), judged by the majority
over 200 fresh draws.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparring import PGD
from sparring.attacks.adaptive import with_eot
from sparring.attacks.evasion.apgd import APGD
from sparring.attacks.evasion.autoattack import AutoAttack
from sparring.data.datasets import Dataset
from sparring.targets import InputSpec, TorchTarget
from sparring.targets.load import load_target

EPS = 0.1
N = 200


class NoisyMLP(nn.Module):
    def __init__(self, sigma: float = 0.3) -> None:
        super().__init__()
        self.sigma = sigma
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + self.sigma * torch.randn_like(x))


@pytest.fixture(scope="module")
def noisy(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> TorchTarget:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = NoisyMLP()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        x, y = torch.as_tensor(digits.x_train).float(), torch.as_tensor(digits.y_train)
        for _ in range(8):
            for idx in torch.randperm(len(x)).split(64):
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    path = Path(tmp_path_factory.mktemp("noisy")) / "noisy.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is how many users ship models
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model.eval()).save(str(path))
    target = load_target(str(path), spec=InputSpec(shape=(1, 28, 28), n_classes=10, bounds=(0.0, 1.0)))
    assert isinstance(target, TorchTarget)
    return target


def _majority(model: nn.Module, x: torch.Tensor, draws: int = 200) -> torch.Tensor:
    with torch.no_grad():
        many = x.repeat(draws, 1, 1, 1)
        labels = model(many).argmax(dim=1).reshape(draws, len(x))
    return F.one_hot(labels, 10).sum(dim=0).argmax(dim=1)


def _eot_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 60, k: int = 20) -> torch.Tensor:
    xa, alpha = x.clone(), EPS / 8
    for i in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa.repeat(k, 1, 1, 1)), y.repeat(k), reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        step = alpha if i < steps // 2 else alpha / 4
        xa = torch.min(torch.max(xa.detach() + step * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    return xa


@pytest.fixture(scope="module")
def reference(noisy: TorchTarget, digits: Dataset) -> float:
    """Robust accuracy of the careful EOT-PGD, judged by a 200-draw majority (clean and adversarial)."""
    x, y = torch.as_tensor(digits.x_test[:N]).float(), torch.as_tensor(digits.y_test[:N])
    with torch.random.fork_rng():
        torch.manual_seed(1)
        xa = _eot_pgd(noisy.model, x, y)
        robust = (_majority(noisy.model, x) == y) & (_majority(noisy.model, xa) == y)
    return float(robust.float().mean())


def _data(digits: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(digits.x_test[:N]).float(), torch.as_tensor(digits.y_test[:N])


def test_plain_apgd_on_a_noisy_model_is_judged_by_the_majority(noisy: TorchTarget, digits: Dataset,
                                                               reference: float) -> None:
    x, y = _data(digits)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        one_draw = APGD(eps=EPS, steps=50)(noisy, x, y, draws=1)  # declared deterministic: the old verdict
        r = APGD(eps=EPS, steps=50)(noisy, x, y)
    assert r.extras["randomized"] == "detected" and r.draws == 100
    # one draw per iterate finds "adversarial" noise for almost every point; the majority does not
    assert one_draw.robust_accuracy < 0.1
    assert r.robust_accuracy > reference - 0.02 and r.robust_accuracy > 0.2
    assert r.extras["single_draw_success"] >= 0.0
    lo, hi = r.robust_interval
    assert lo < r.robust_accuracy < hi
    s = r.summary()
    assert s["draws"] == 100 and 0.0 < s["single_query_fooling_rate"] < 1.0


def test_eot_apgd_matches_a_careful_eot_pgd_within_two_points(noisy: TorchTarget, digits: Dataset,
                                                              reference: float) -> None:
    x, y = _data(digits)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        r = APGD(eps=EPS, steps=50)(with_eot(noisy, draws=20), x, y)
    assert r.draws == 100
    assert abs(r.robust_accuracy - reference) <= 0.02, (r.robust_accuracy, reference)


def test_pgd_keeps_no_iterate_because_one_draw_misclassified_it(noisy: TorchTarget, digits: Dataset,
                                                                 reference: float) -> None:
    x, y = _data(digits)
    with torch.random.fork_rng():
        torch.manual_seed(4)
        r = PGD(eps=EPS, steps=40)(with_eot(noisy, draws=20), x, y, draws=100)
    assert r.extras["randomized"] == "declared"
    assert abs(r.robust_accuracy - reference) <= 0.03, (r.robust_accuracy, reference)


def test_autoattack_rand_follows_the_majority_rule(noisy: TorchTarget, digits: Dataset, reference: float) -> None:
    x, y = _data(digits)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        r = AutoAttack(eps=EPS, version="rand", steps=30)(noisy, x, y)
    assert r.draws == 100 and r.extras["randomized"] == "declared"
    assert abs(r.robust_accuracy - reference) <= 0.03, (r.robust_accuracy, reference)
    after = r.extras["robust_after"]
    assert after["apgd-dlr"] <= after["apgd-ce"]


def test_deterministic_models_are_not_rescored(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    r = PGD(eps=0.1, steps=5)(digits_cnn, x, y)
    assert r.draws == 1 and r.goal_fraction is None and r.summary()["single_query_fooling_rate"] is None
