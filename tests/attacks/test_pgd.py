"""PGD (Madry et al. 2018) and FGSM (Goodfellow et al. 2015) on the zoo digits CNN: correctness and strength."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparring import FGSM, PGD, EvasionResult
from sparring.attacks.norms import Norm, norm_of
from sparring.errors import AccessError, LabelError, ParameterError
from sparring.targets import Access, TorchTarget

TOL = 1e-5


def _check_within_budget(r: EvasionResult, x: torch.Tensor, eps: float, norm: str) -> None:
    xa = torch.as_tensor(r.x_adv)
    assert xa.shape == x.shape
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert float(norm_of(xa - x, Norm.parse(norm)).max()) <= eps + TOL
    assert torch.allclose(torch.as_tensor(r.norms), norm_of(xa - x, Norm.parse(norm)), atol=1e-6)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.5)])
def test_pgd_stays_within_eps_and_bounds(digits_cnn: TorchTarget, digits_batch: tuple, norm: str,
                                         eps: float) -> None:
    x, y = digits_batch
    r = PGD(eps=eps, norm=norm, steps=10, early_stop=False)(digits_cnn, x, y)
    _check_within_budget(r, x, eps, norm)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.5)])
def test_fgsm_stays_within_eps_and_bounds(digits_cnn: TorchTarget, digits_batch: tuple, norm: str,
                                          eps: float) -> None:
    x, y = digits_batch
    _check_within_budget(FGSM(eps=eps, norm=norm)(digits_cnn, x, y), x, eps, norm)


def test_pgd_breaks_most_of_the_undefended_model(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch
    r = PGD(eps=0.1, steps=20)(digits_cnn, x, y)
    assert r.clean_accuracy > 0.9
    assert r.attack_success_rate > 0.6  # measured ≈0.8 at eps 0.1
    strong = PGD(eps=0.2, steps=20)(digits_cnn, x, y)
    assert strong.robust_accuracy <= 0.02


def test_pgd_is_at_least_as_strong_as_fgsm(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch
    assert PGD(eps=0.1, steps=20)(digits_cnn, x, y).robust_accuracy <= FGSM(eps=0.1)(digits_cnn, x, y).robust_accuracy


def test_success_flags_agree_with_the_model(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch
    r = PGD(eps=0.1, steps=10)(digits_cnn, x, y)
    pred = digits_cnn.predict(r.x_adv)
    assert torch.equal(pred, r.adv_pred)
    assert torch.equal(r.success, pred != y)
    assert r.robust_accuracy == pytest.approx(float((pred == y).float().mean()))


@pytest.mark.parametrize("attack", [PGD(eps=0.3, steps=40, alpha=0.02), FGSM(eps=0.3)])
def test_targeted_runs_reach_the_target(digits_cnn: TorchTarget, digits_batch: tuple, attack: object) -> None:
    x, y = digits_batch
    t = (y + 1) % 10
    r = attack(digits_cnn, x, y, target_labels=t)  # type: ignore[operator]
    assert torch.equal(r.success, r.adv_pred == t)
    if isinstance(attack, PGD):
        assert r.success_rate > 0.9
    else:
        assert r.success_rate > 0.1  # one step reaches a chosen class less often


def test_early_stop_changes_cost_not_outcome(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch
    fast = PGD(eps=0.1, steps=20, early_stop=True)(digits_cnn, x, y)
    full = PGD(eps=0.1, steps=20, early_stop=False)(digits_cnn, x, y)
    assert torch.equal(fast.success, full.success)
    assert fast.cost.gradients < full.cost.gradients == 20 * int((~full.success | full.clean_correct).sum()) or \
        fast.cost.gradients < full.cost.gradients


def test_pgd_matches_a_hand_written_madry_loop(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    """Without random start or early stop, robust examples end exactly where the textbook loop ends."""
    x, y = digits_batch
    eps, alpha, steps = 0.05, 0.01, 10
    r = PGD(eps=eps, alpha=alpha, steps=steps, random_start=False, early_stop=False)(digits_cnn, x, y)
    fwd = digits_cnn.differentiable()
    xa = x.clone()
    with digits_cnn.frozen():
        for _ in range(steps):
            xa.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(fwd(xa), y), xa)
            xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    robust = ~r.success
    assert robust.any()
    assert torch.allclose(r.x_adv[robust], xa[robust], atol=1e-6)


def test_same_seed_same_result_other_seed_other_start(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    a = PGD(eps=0.05, steps=5, seed=1)(digits_cnn, x, y)
    b = PGD(eps=0.05, steps=5, seed=1)(digits_cnn, x, y)
    c = PGD(eps=0.05, steps=5, seed=2)(digits_cnn, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(PGD(eps=0.05, steps=5)(digits_cnn, x, y, generator=g).x_adv, a.x_adv)


def test_restarts_never_weaken_the_attack(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch
    one = PGD(eps=0.07, steps=10, restarts=1)(digits_cnn, x, y)
    three = PGD(eps=0.07, steps=10, restarts=3)(digits_cnn, x, y)
    assert three.robust_accuracy <= one.robust_accuracy
    assert bool((three.success | ~one.success).all())  # every point broken once stays broken


def test_misclassified_points_count_as_broken_with_zero_perturbation(digits_cnn: TorchTarget,
                                                                      digits: object) -> None:
    x, y = digits.x_test, digits.y_test  # type: ignore[attr-defined]
    wrong = digits_cnn.predict(x) != y
    assert wrong.any()
    xs, ys = x[wrong][:4], y[wrong][:4]
    r = PGD(eps=0.1, steps=5)(digits_cnn, xs, ys)
    assert r.success.all() and (~r.clean_correct).all() and float(r.norms.max()) == 0.0


def test_numpy_in_numpy_out(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:8].numpy(), digits_batch[1][:8].numpy()
    r = PGD(eps=0.1, steps=3)(digits_cnn, x, y)
    assert isinstance(r.x_adv, np.ndarray) and r.x_adv.dtype == x.dtype
    assert isinstance(r.success, np.ndarray)


def test_result_records_params_and_cost(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    r = PGD(eps=0.1, steps=4, early_stop=False)(digits_cnn, x, y)
    assert r.params["steps"] == 4 and r.params["eps"] == 0.1 and r.params["norm"] == "linf"
    # the randomness probe (16 inputs twice) + one clean pass + 4 steps + one final pass over those still in play
    assert r.cost.gradients <= 4 * 16 and r.cost.queries <= 2 * 16 + 6 * 16 and r.cost.seconds > 0
    assert r.draws == 1 and "randomized" not in r.extras
    # a deterministic model declared as such is not probed
    assert PGD(eps=0.1, steps=4, early_stop=False)(digits_cnn, x, y, draws=1).cost.queries <= 6 * 16
    s = r.summary()
    assert {"clean_accuracy", "robust_accuracy", "cost", "params"} <= set(s)


def test_margin_loss_also_breaks_the_model(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch
    assert PGD(eps=0.1, steps=20, loss="margin")(digits_cnn, x, y).attack_success_rate > 0.6


@pytest.mark.parametrize(
    ("attack", "fragment"),
    [
        (PGD(eps=-0.1), ">= 0"),
        (PGD(eps=8.0), "exceeds the whole input range"),
        (PGD(eps=float("nan")), "finite"),
        (PGD(eps=0.1, steps=0), "steps must be a positive integer"),
        (PGD(eps=0.1, restarts=0), "restarts"),
        (PGD(eps=0.1, alpha=0.0), "alpha"),
        (PGD(eps=0.1, loss="hinge"), "unknown loss"),
        (PGD(eps=0.1, norm="l3"), "unknown norm"),
        (FGSM(eps=2.0), "exceeds"),
    ],
)
def test_bad_parameters_raise_parameter_error(digits_cnn: TorchTarget, digits_batch: tuple, attack: object,
                                              fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        attack(digits_cnn, digits_batch[0][:2], digits_batch[1][:2])  # type: ignore[operator]


def test_target_label_equal_to_true_label_is_refused(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:4], digits_batch[1][:4]
    with pytest.raises(ParameterError, match="equal the true label"):
        PGD(eps=0.1)(digits_cnn, x, y, target_labels=y)
    with pytest.raises(LabelError, match="target_labels"):
        PGD(eps=0.1)(digits_cnn, x, y, target_labels=torch.full((4,), 12))


def test_gradient_attacks_refuse_a_scores_only_target(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    scores_only = TorchTarget(digits_cnn.model, digits_cnn.spec, access=Access.SCORES)
    with pytest.raises(AccessError, match="FGSM needs gradients"):
        FGSM(eps=0.1)(scores_only, digits_batch[0][:2], digits_batch[1][:2])


def test_l2_pgd_with_tiny_budget_keeps_norm(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    r = PGD(eps=0.01, norm="l2", steps=5)(digits_cnn, x, y)
    assert float(torch.as_tensor(r.norms).max()) <= 0.01 + TOL
