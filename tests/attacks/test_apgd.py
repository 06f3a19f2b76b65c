"""APGD-CE, APGD-DLR and APGD-T (Croce & Hein 2020) on the zoo digits CNN: schedule, loss, budget and strength."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparring import PGD, EvasionResult
from sparring.attacks.base import BatchContext
from sparring.attacks.evasion.apgd import APGD, APGDT, checkpoints
from sparring.attacks.losses import dlr, dlr_targeted, get_loss
from sparring.attacks.norms import Norm, norm_of
from sparring.errors import ParameterError
from sparring.targets import InputSpec, TorchTarget

TOL = 1e-5


def _check_within_budget(r: EvasionResult, x: torch.Tensor, eps: float, norm: str) -> None:
    xa = torch.as_tensor(r.x_adv)
    assert xa.shape == x.shape
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert float(norm_of(xa - x, Norm.parse(norm)).max()) <= eps + TOL
    assert torch.allclose(torch.as_tensor(r.norms), norm_of(xa - x, Norm.parse(norm)), atol=1e-6)


def _constant_target(spec: InputSpec) -> TorchTarget:
    """A model whose logits ignore the input (class 0 leads): every loss is flat and every gradient zero."""
    lin = nn.Linear(spec.n_features, spec.n_classes)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.linspace(1.0, 0.0, spec.n_classes))
    return TorchTarget(nn.Sequential(nn.Flatten(), lin), spec)


def test_checkpoints_match_the_paper() -> None:
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (p_{j+1} = p_j + max(p_j - p_{j-1} - .03, .06)), w_j = ceil(p_j N)
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(50) == [0, 11, 21, 29, 35, 40, 44, 47, 50]
    assert checkpoints(1000) == [0, 220, 410, 570, 700, 800, 870, 930, 990]
    assert checkpoints(5) == [0, 2, 3, 4, 5]  # repeats from rounding are dropped
    with pytest.raises(ParameterError, match="steps"):
        checkpoints(0)


def test_dlr_is_invariant_to_shifting_and_scaling_the_logits() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 10, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    t = (y + 1 + torch.randint(0, 9, (32,), generator=g)) % 10
    for c, b in ((3.0, 0.0), (0.01, 0.0), (250.0, -7.0)):
        assert torch.allclose(dlr(c * z + b, y, False), dlr(z, y, False), atol=1e-4)
        assert torch.allclose(dlr_targeted(c * z + b, y, t), dlr_targeted(z, y, t), atol=1e-4)
    # positive exactly where another class beats y; the targeted one exactly where t beats y
    assert torch.equal(dlr(z, y, False) > 0, z.argmax(1) != y)
    assert torch.equal(dlr_targeted(z, y, t) > 0, z.gather(1, t[:, None])[:, 0] > z.gather(1, y[:, None])[:, 0])
    assert get_loss("dlr") is dlr
    with pytest.raises(ParameterError, match="at least 4 classes"):
        dlr_targeted(z[:, :3], y % 3, (y + 1) % 3)


@pytest.mark.parametrize(("norm", "eps", "loss"), [("linf", 0.1, "ce"), ("l2", 1.5, "ce"), ("linf", 0.1, "dlr")])
def test_apgd_stays_within_eps_and_bounds(digits_cnn: TorchTarget, digits_batch: tuple, norm: str, eps: float,
                                          loss: str) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    r = APGD(eps=eps, norm=norm, steps=10, loss=loss, early_stop=False)(digits_cnn, x, y)
    _check_within_budget(r, x, eps, norm)
    assert torch.equal(digits_cnn.predict(r.x_adv), r.adv_pred)
    assert torch.equal(r.success, r.adv_pred != y)


def test_apgdt_stays_within_eps_and_bounds(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    r = APGDT(eps=1.0, norm="l2", steps=5, n_target_classes=2)(digits_cnn, x, y)
    _check_within_budget(r, x, 1.0, "l2")
    assert torch.equal(digits_cnn.predict(r.x_adv), r.adv_pred)


def test_apgd_ce_is_at_least_as_strong_as_pgd(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:64], digits_batch[1][:64]
    pgd = PGD(eps=0.1, steps=20)(digits_cnn, x, y)
    apgd = APGD(eps=0.1, steps=20)(digits_cnn, x, y)
    assert apgd.clean_accuracy > 0.9
    assert apgd.robust_accuracy <= pgd.robust_accuracy + 1 / 64  # measured 0.109 vs PGD 0.125
    assert apgd.robust_accuracy <= 0.2


def test_apgd_dlr_breaks_the_undefended_model(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    r = APGD(eps=0.1, steps=20, loss="dlr")(digits_cnn, x, y)
    assert r.attack_success_rate > 0.75  # measured ≈0.87 on 64 points


def test_apgdt_is_at_least_as_strong_as_apgd_ce(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    ce = APGD(eps=0.1, steps=20)(digits_cnn, x, y)
    t = APGDT(eps=0.1, steps=20)(digits_cnn, x, y)
    assert t.robust_accuracy <= ce.robust_accuracy + 1 / 32
    assert torch.equal(t.success, t.adv_pred != y)
    assert t.target_labels is None


def test_step_size_is_halved_on_the_real_model(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    r = APGD(eps=0.05, steps=20, early_stop=False)(digits_cnn, x, y)
    assert 0 < r.extras["step_size_halvings"] <= 32 * (len(checkpoints(20)) - 1)


def test_flat_loss_halves_at_every_checkpoint_and_condition_2_alone_every_other(digits_cnn: TorchTarget,
                                                                                 digits_batch: tuple) -> None:
    """On a flat loss no step increases it (condition 1 holds at every checkpoint); with rho = 0 condition 1 never
    holds, and condition 2 (best loss unchanged, step size not halved last time) fires at checkpoints 1, 3, 5, 7."""
    flat = _constant_target(digits_cnn.spec)
    x, y = digits_batch[0][:4], torch.zeros(4, dtype=torch.long)
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]  # 7 checks
    r = APGD(eps=0.1, steps=10)(flat, x, y)
    assert r.extras["step_size_halvings"] == 4 * 7
    assert (~r.success).all()
    r0 = APGD(eps=0.1, steps=10, rho=0.0)(flat, x, y)
    assert r0.extras["step_size_halvings"] == 4 * 4  # the paper's condition 2 holds at the first checkpoint already


def test_targeted_apgd_reaches_the_target(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    t = (y + 1) % 10
    for loss in ("ce", "dlr"):
        r = APGD(eps=0.3, steps=20, loss=loss)(digits_cnn, x, y, target_labels=t)
        assert torch.equal(r.success, r.adv_pred == t)
        assert r.success_rate > 0.9  # measured 1.0 on 64 points at 30 steps
        _check_within_budget(r, x, 0.3, "linf")


def test_same_seed_same_result_other_seed_other_start(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    a = APGD(eps=0.05, steps=5, seed=1)(digits_cnn, x, y)
    b = APGD(eps=0.05, steps=5, seed=1)(digits_cnn, x, y)
    c = APGD(eps=0.05, steps=5, seed=2)(digits_cnn, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(APGD(eps=0.05, steps=5)(digits_cnn, x, y, generator=g).x_adv, a.x_adv)
    t1 = APGDT(eps=0.05, steps=3, n_target_classes=2, seed=1)(digits_cnn, x, y)
    t2 = APGDT(eps=0.05, steps=3, n_target_classes=2, seed=1)(digits_cnn, x, y)
    assert torch.equal(t1.x_adv, t2.x_adv)


def test_early_stop_changes_cost_not_outcome(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    fast = APGD(eps=0.1, steps=10, early_stop=True)(digits_cnn, x, y)
    full = APGD(eps=0.1, steps=10, early_stop=False)(digits_cnn, x, y)
    assert torch.equal(fast.success, full.success)
    assert fast.cost.gradients < full.cost.gradients
    assert full.cost.gradients == 10 * int(full.clean_correct.sum())  # every correctly classified point, 10 steps


def test_restarts_never_weaken_the_attack(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    one = APGD(eps=0.07, steps=10, restarts=1)(digits_cnn, x, y)
    two = APGD(eps=0.07, steps=10, restarts=2)(digits_cnn, x, y)
    assert bool((two.success | ~one.success).all())


def test_misclassified_points_are_left_alone(digits_cnn: TorchTarget, digits: object) -> None:
    x, y = digits.x_test, digits.y_test  # type: ignore[attr-defined]
    wrong = digits_cnn.predict(x) != y
    xs, ys = x[wrong][:4], y[wrong][:4]
    for attack in (APGD(eps=0.1, steps=5), APGDT(eps=0.1, steps=5, n_target_classes=2)):
        r = attack(digits_cnn, xs, ys)
        assert r.success.all() and float(r.norms.max()) == 0.0 and r.cost.gradients == 0


def test_attack_tensors_runs_on_a_subset_for_ensembles(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    lower, upper = digits_cnn.spec.bounds_tensors(digits_cnn.device)
    ctx = BatchContext(target=digits_cnn, lower=lower, upper=upper, generator=torch.Generator().manual_seed(0))
    sub = torch.arange(0, 16, 2)
    for attack in (APGD(eps=0.1, steps=10), APGDT(eps=0.1, steps=10, n_target_classes=2)):
        x_adv, clean, adv = attack.attack_tensors(ctx, x[sub], y[sub])
        assert torch.equal(clean, digits_cnn.predict(x[sub]))
        assert x_adv.shape == x[sub].shape and torch.equal(digits_cnn.predict(x_adv), adv)
        assert float(norm_of(x_adv - x[sub], Norm.LINF).max()) <= 0.1 + TOL
        assert (adv != y[sub]).any()
    assert ctx.gradients > 0 and ctx.notes["step_size_halvings"] >= 0


@pytest.mark.parametrize(
    ("attack", "fragment"),
    [
        (APGD(eps=-0.1), ">= 0"),
        (APGD(eps=8.0), "exceeds the whole input range"),
        (APGD(eps=0.1, steps=0), "steps must be a positive integer"),
        (APGD(eps=0.1, restarts=0), "restarts"),
        (APGD(eps=0.1, rho=1.5), "rho"),
        (APGD(eps=0.1, rho=-0.1), "rho"),
        (APGD(eps=0.1, loss="margin"), "choose 'ce' or 'dlr'"),
        (APGD(eps=0.1, norm="l3"), "unknown norm"),
        (APGDT(eps=0.1, n_target_classes=0), "n_target_classes"),
        (APGDT(eps=0.1, steps=2.5), "steps"),  # type: ignore[arg-type]
    ],
)
def test_bad_parameters_raise_parameter_error(digits_cnn: TorchTarget, digits_batch: tuple, attack: object,
                                              fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        attack(digits_cnn, digits_batch[0][:2], digits_batch[1][:2])  # type: ignore[operator]


def test_apgdt_refuses_target_labels_and_dlr_needs_enough_classes(digits_cnn: TorchTarget,
                                                                  digits_batch: tuple) -> None:
    x, y = digits_batch[0][:2], digits_batch[1][:2]
    with pytest.raises(ParameterError, match="untargeted only"):
        APGDT(eps=0.1)(digits_cnn, x, y, target_labels=(y + 1) % 10)
    spec = InputSpec(shape=digits_cnn.spec.shape, n_classes=3, bounds=(0.0, 1.0))
    three = _constant_target(spec)
    with pytest.raises(ParameterError, match="at least 4 classes"):
        APGDT(eps=0.1)(three, x, y % 3)
    with pytest.raises(ParameterError, match="at least 4 classes"):
        APGD(eps=0.1, loss="dlr")(three, x, y % 3, target_labels=(y + 1) % 3)
    two = _constant_target(InputSpec(shape=digits_cnn.spec.shape, n_classes=2, bounds=(0.0, 1.0)))
    with pytest.raises(ParameterError, match="at least 3 classes"):
        APGD(eps=0.1, loss="dlr")(two, x, y % 2)
