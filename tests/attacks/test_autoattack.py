"""AutoAttack (Croce & Hein 2020): reference composition, each component only on points still robust, strength."""

from __future__ import annotations

import pytest
import torch

from sparring import PGD
from sparring.attacks.evasion.apgd import APGD
from sparring.attacks.evasion.autoattack import VERSIONS, AutoAttack
from sparring.attacks.norms import Norm, norm_of
from sparring.errors import ParameterError
from sparring.targets import TorchTarget

N = 24


def test_reference_configuration() -> None:
    assert VERSIONS["standard"] == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert VERSIONS["rand"] == ("apgd-ce", "apgd-dlr")
    aa = AutoAttack(eps=0.1)
    assert (aa.steps, aa.n_target_classes, aa.square_queries, aa.eot_draws) == (100, 9, 5000, 20)
    comps = [aa._component(c) for c in aa.components()]
    assert [c.name for c in comps] == ["apgd", "apgd-t", "fab", "square"]
    assert comps[2].targeted is True and comps[1].n_target_classes == 9


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.5)])
def test_stronger_than_pgd_within_budget(digits_cnn: TorchTarget, digits_batch: tuple, norm: str,
                                         eps: float) -> None:
    x, y = digits_batch[0][:N], digits_batch[1][:N]
    r = AutoAttack(eps=eps, norm=norm, steps=15, n_target_classes=3, square_queries=100)(digits_cnn, x, y)
    pgd = PGD(eps=eps, norm=norm, steps=20)(digits_cnn, x, y)
    assert r.robust_accuracy <= pgd.robust_accuracy + 1 / N
    xa = torch.as_tensor(r.x_adv)
    assert float(norm_of(xa - x, Norm.parse(norm)).max()) <= eps + 1e-5
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1
    after = list(r.extras["robust_after"].values())
    assert after == sorted(after, reverse=True) and after[-1] == pytest.approx(r.robust_accuracy)
    # adv_pred is the model's real prediction on x_adv
    assert torch.equal(digits_cnn.predict(xa), torch.as_tensor(r.adv_pred))


def test_one_component_equals_that_attack_alone(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:N], digits_batch[1][:N]
    aa = AutoAttack(eps=0.08, attacks=("apgd-ce",), steps=15)(digits_cnn, x, y)
    alone = APGD(eps=0.08, steps=15)(digits_cnn, x, y)
    assert torch.equal(torch.as_tensor(aa.adv_pred), torch.as_tensor(alone.adv_pred))


def test_later_attacks_run_only_on_robust_points(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:N], digits_batch[1][:N]
    first = AutoAttack(eps=0.2, attacks=("apgd-ce",), steps=10)(digits_cnn, x, y)
    both = AutoAttack(eps=0.2, attacks=("apgd-ce", "square"), steps=10, square_queries=50)(digits_cnn, x, y)
    # At eps 0.2 APGD breaks (nearly) everything, so Square has (nearly) nothing left to query.
    left = round(first.robust_accuracy * N)
    assert both.cost.queries - first.cost.queries <= left * 51 + 1


def test_rand_version_runs_with_eot(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    r = AutoAttack(eps=0.1, version="rand", steps=5, eot_draws=3)(digits_cnn, x, y)
    assert set(r.extras["robust_after"]) == {"apgd-ce", "apgd-dlr"}
    assert r.cost.queries >= 3 * 8 * 5  # every gradient step costs eot_draws queries per example


@pytest.mark.parametrize("kw", [{"version": "plus"}, {"attacks": ("pgd",)}, {"attacks": ()}, {"steps": 0},
                                {"n_target_classes": 0}, {"square_queries": -1}, {"eps": -0.1}])
def test_bad_parameters(digits_cnn: TorchTarget, digits_batch: tuple, kw: dict) -> None:
    with pytest.raises(ParameterError):
        AutoAttack(**{"eps": 0.1, **kw})(digits_cnn, digits_batch[0][:2], digits_batch[1][:2])
