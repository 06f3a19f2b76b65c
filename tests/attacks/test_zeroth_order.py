"""SPSA (Uesato et al. 2018) and NES (Ilyas et al. 2018): score-only attacks that see through gradient masking."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from sparring import PGD
from sparring.attacks.base import get_attack
from sparring.attacks.evasion import NES, SPSA
from sparring.data import Dataset, load_digits
from sparring.errors import ParameterError
from sparring.targets import TorchTarget
from sparring.targets.spec import Access

pytestmark = pytest.mark.usefixtures("one_thread")


class Quantised(nn.Module):
    """An 8×8-digits MLP behind input rounding to 4 levels: zero gradient, ordinary decision."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.round(x * 3) / 3)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def small() -> tuple[TorchTarget, TorchTarget, Dataset]:
    """A tiny MLP trained here on 8×8 digits, and the same MLP behind input quantisation."""
    data = load_digits(8)
    gen = torch.Generator().manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    for p in mlp.parameters():
        nn.init.normal_(p, std=0.1, generator=gen)
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    x, y = data.x_train, data.y_train
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(mlp(x), y).backward()
        opt.step()
    spec = dataclasses.replace(data.spec)
    return TorchTarget(mlp, spec), TorchTarget(Quantised(mlp), spec), data


@pytest.mark.parametrize("cls", [SPSA, NES])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_zeroth_order_attacks_stay_in_budget_and_break_a_quantised_model(
    small: tuple[TorchTarget, TorchTarget, Dataset], cls: type, norm: str
) -> None:
    _, quantised, data = small
    x, y = data.x_test[:48], data.y_test[:48]
    eps = 0.3 if norm == "linf" else 2.0
    naive = PGD(eps=eps, norm=norm, steps=10)(quantised, x, y)
    assert naive.robust_accuracy >= naive.clean_accuracy - 0.2  # zero gradient: only the random start moves
    before = quantised.counter.used
    r = cls(eps=eps, norm=norm, n_queries=400, samples=16, seed=0)(quantised, x, y, draws=1)
    assert quantised.counter.used - before == r.cost.queries <= 48 * 401  # counted, within n_queries
    assert r.robust_accuracy <= naive.robust_accuracy - 0.2
    xa = torch.as_tensor(r.x_adv)
    d = (xa - x).flatten(1)
    size = d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5 and float(xa.min()) >= 0 and float(xa.max()) <= 1
    assert torch.equal(quantised.predict(xa), torch.as_tensor(r.adv_pred))  # the reported success is real
    assert r.cost.gradients == 0


def test_zeroth_order_attacks_stop_at_the_query_budget(small: tuple[TorchTarget, TorchTarget, Dataset]) -> None:
    mlp, _, data = small
    x, y = data.x_test[:16], data.y_test[:16]
    limited = TorchTarget(mlp.model, mlp.spec, query_budget=16 * 40)
    r = SPSA(eps=0.05, n_queries=2000, samples=16)(limited, x, y, draws=1)
    assert limited.counter.used <= 16 * 40  # never overspends
    assert r.extras.get("budget_exhausted") is True


def test_zeroth_order_attacks_are_registered_and_validate_parameters(
    small: tuple[TorchTarget, TorchTarget, Dataset]
) -> None:
    mlp, _, data = small
    assert get_attack("spsa") is SPSA and get_attack("nes") is NES
    assert SPSA.needs == NES.needs == Access.SCORES
    x, y = data.x_test[:2], data.y_test[:2]
    for bad in (SPSA(eps=0.1, samples=1), NES(eps=0.1, sigma_fraction=0), SPSA(eps=0.1, lr_fraction=2.0),
                NES(eps=0.1, n_queries=0), SPSA(eps=0.1, loss="hinge")):
        with pytest.raises(ParameterError):
            bad(mlp, x, y)
