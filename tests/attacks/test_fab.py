"""FAB and FAB-T (Croce & Hein 2020): the exact hyperplane ∩ box projection, minimal adversarials of linear models,
budgets, strength against PGD on the zoo digits CNN, FAB-T, reproducibility and parameter checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparring import PGD, EvasionResult
from sparring.attacks.evasion.fab import FAB, project_hyperplane_box
from sparring.attacks.norms import Norm, norm_of
from sparring.errors import ParameterError
from sparring.targets import InputSpec, TorchTarget

TOL = 1e-5


def _small(digits_batch: tuple, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return digits_batch[0][:n], digits_batch[1][:n]


def _random_feasible_points(w: torch.Tensor, b: torch.Tensor, n_pairs: int, g: torch.Generator) -> torch.Tensor:
    """Points of {⟨w, z⟩ + b = 0} ∩ [0, 1]^D: where the segment between two random box points crosses the plane."""
    d = w.shape[0]
    p, q = torch.rand(n_pairs, d, generator=g, dtype=w.dtype), torch.rand(n_pairs, d, generator=g, dtype=w.dtype)
    fp, fq = p @ w + b, q @ w + b
    cross = (fp * fq) < 0
    s = (fp / (fp - fq))[cross, None]
    return p[cross] + s * (q[cross] - p[cross])


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_projection_lies_on_plane_and_box_and_is_closest(norm: str) -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 6, 3
    t = torch.rand(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    anchor = torch.rand(n, d, generator=g, dtype=torch.float64)  # a box point on each plane: they meet the box
    b = -(w * anchor).sum(dim=1)
    p = project_hyperplane_box(t, w, b, 0.0, 1.0, norm)
    assert torch.allclose((w * p).sum(dim=1) + b, torch.zeros(n, dtype=torch.float64), atol=1e-10)
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    dist = norm_of(p - t, Norm.parse(norm))
    for i in range(n):
        feasible = _random_feasible_points(w[i], b[i], 40_000, g)
        assert feasible.shape[0] > 100
        others = norm_of(feasible - t[i], Norm.parse(norm))
        assert float(dist[i]) <= float(others.min()) + 1e-9  # never beaten by any feasible point
        assert float(others.min()) <= float(dist[i]) * 1.1 + 1e-3  # and the sampled points come close


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_projection_matches_the_unconstrained_formula_when_the_box_is_loose(norm: str) -> None:
    g = torch.Generator().manual_seed(1)
    t, w = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(5, 8, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    p = project_hyperplane_box(t, w, b, -1e6, 1e6, norm)
    c = (w * t).sum(dim=1) + b
    dual = torch.linalg.vector_norm(w, ord=1 if norm == "linf" else 2, dim=1)
    assert torch.allclose(norm_of(p - t, Norm.parse(norm)), c.abs() / dual, rtol=1e-10)


def test_projection_returns_the_nearest_corner_when_the_plane_misses_the_box() -> None:
    t, w, b = torch.full((1, 2), 0.5), torch.tensor([[1.0, -2.0]]), torch.tensor([-5.0])
    p = project_hyperplane_box(t, w, b, 0.0, 1.0, "l2")
    assert p.tolist() == [[1.0, 0.0]]  # the box point with the largest ⟨w, z⟩, closest to ⟨w, z⟩ = 5


def test_projection_refuses_mismatched_shapes() -> None:
    with pytest.raises(ParameterError, match=r"\(N, D\)"):
        project_hyperplane_box(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), 0.0, 1.0, "l2")


@pytest.mark.parametrize(("norm", "dual"), [("l2", 2), ("linf", 1)])
def test_fab_finds_the_minimal_adversarial_of_a_linear_model(norm: str, dual: int) -> None:
    """For a linear classifier the smallest adversarial is the distance to the nearest pairwise boundary,
    min_l |f_l − f_y| / ||w_l − w_y||_dual (the box is far away); FAB reaches it within 1%."""
    torch.manual_seed(0)
    d, k, n = 20, 4, 16
    lin = nn.Linear(d, k)
    target = TorchTarget(lin, InputSpec(shape=(d,), n_classes=k, bounds=(-50.0, 50.0), layout="features"))
    x = torch.randn(n, d)
    with torch.no_grad():
        z = lin(x)
    y = z.argmax(dim=1)
    gaps = (z - z.gather(1, y[:, None])).abs()
    dw = torch.linalg.vector_norm(lin.weight.detach()[None] - lin.weight.detach()[y][:, None], ord=dual, dim=2)
    exact = (gaps / dw).scatter(1, y[:, None], float("inf")).amin(dim=1)
    r = FAB(eps=50.0, norm=norm, steps=10, early_stop=False)(target, x, y)
    assert bool(r.success.all())
    ratio = r.norms / exact
    assert float(ratio.min()) >= 1 - 1e-4  # nothing smaller exists
    assert float(ratio.max()) <= 1.01  # measured 1.0052 (the overshoot eta = 1.05 damped by the backward step)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.06), ("l2", 1.0)])
def test_fab_stays_within_eps_and_bounds_and_flags_agree_with_the_model(
    digits_cnn: TorchTarget, digits_batch: tuple, norm: str, eps: float
) -> None:
    x, y = _small(digits_batch, 16)
    r = FAB(eps=eps, norm=norm, steps=10)(digits_cnn, x, y)
    _check(r, x, eps, norm)
    assert 0 < r.attack_success_rate < 1  # a budget where some points break and some resist
    pred = digits_cnn.predict(r.x_adv)
    assert torch.equal(pred, r.adv_pred) and torch.equal(r.success, pred != y)
    robust = ~r.success
    assert torch.equal(r.x_adv[robust], x[robust])  # unbroken points come back unchanged


def _check(r: EvasionResult, x: torch.Tensor, eps: float, norm: str) -> None:
    xa = torch.as_tensor(r.x_adv)
    assert xa.shape == x.shape
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert float(norm_of(xa - x, Norm.parse(norm)).max()) <= eps + TOL
    assert torch.allclose(torch.as_tensor(r.norms), norm_of(xa - x, Norm.parse(norm)), atol=1e-6)


def test_fab_finds_smaller_l2_perturbations_than_pgd(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    """FAB's minimal-norm adversarials against the smallest budget on a grid at which PGD-L2 breaks each point."""
    x, y = _small(digits_batch, 12)
    fab = FAB(eps=10.0, norm="l2", steps=20, early_stop=False)(digits_cnn, x, y)
    correct = fab.clean_correct
    assert float(fab.success[correct].float().mean()) >= 0.9
    grid = (0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
    pgd_min = torch.full((x.shape[0],), float("inf"))
    for eps in reversed(grid):
        pgd = PGD(eps=eps, norm="l2", steps=10)(digits_cnn, x, y)
        pgd_min = torch.where(pgd.success, torch.tensor(eps), pgd_min)
    # measured on 16 points: FAB median 1.26, PGD grid median 1.5
    assert float(fab.norms[correct].median()) <= float(pgd_min[correct].median())


def test_fab_t_is_as_strong_as_fab(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = _small(digits_batch, 12)
    for eps in (0.07, 0.15):  # measured robust accuracy 0.58 for both at 0.07, 0 at 0.15
        fab = FAB(eps=eps, steps=10)(digits_cnn, x, y)
        fab_t = FAB(eps=eps, steps=10, targeted=True)(digits_cnn, x, y)
        _check(fab_t, x, eps, "linf")
        assert fab_t.robust_accuracy <= fab.robust_accuracy + 1 / x.shape[0]
        assert fab_t.robust_accuracy < fab_t.clean_accuracy
    assert fab_t.robust_accuracy == 0.0  # every point breaks at 0.15 (largest minimal L∞ norm measured 0.113)


def test_targeted_fab_reaches_the_requested_class(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = _small(digits_batch, 12)
    t = (y + 1) % 10
    # One restart is model-dependent (10/12 or 11/12 on two trainings of the zoo CNN: FAB starts at x and can stall
    # there); three restarts reached the target on 12/12, as targeted PGD-50 does.
    r = FAB(eps=0.3, steps=20, restarts=3)(digits_cnn, x, y, target_labels=t)
    assert torch.equal(r.success, r.adv_pred == t)
    assert torch.equal(digits_cnn.predict(r.x_adv)[r.success], t[r.success])
    assert r.success_rate >= 0.9
    _check(r, x, 0.3, "linf")


def test_fab_t_uses_at_most_n_classes_minus_one_targets() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(5, 3)
    target = TorchTarget(lin, InputSpec(shape=(5,), n_classes=3, bounds=(-10.0, 10.0), layout="features"))
    x = torch.randn(8, 5)
    y = target.predict(x)
    r = FAB(eps=10.0, steps=5, targeted=True, n_target_classes=9)(target, x, y)
    assert bool(r.success.all())


def test_early_stop_changes_cost_not_verdict(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = _small(digits_batch, 16)
    fast = FAB(eps=0.06, steps=10, early_stop=True)(digits_cnn, x, y)
    full = FAB(eps=0.06, steps=10, early_stop=False)(digits_cnn, x, y)
    assert torch.equal(fast.success, full.success)
    assert fast.cost.gradients < full.cost.gradients
    assert bool((full.norms <= fast.norms + TOL).all())  # running on only ever shrinks the perturbation


def test_same_seed_same_result_and_restarts_never_hurt(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = _small(digits_batch, 12)
    a = FAB(eps=0.05, steps=5, restarts=2, seed=3)(digits_cnn, x, y)
    b = FAB(eps=0.05, steps=5, restarts=2, seed=3)(digits_cnn, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    c = FAB(eps=0.05, steps=5, restarts=2)(digits_cnn, x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.x_adv, c.x_adv)
    one = FAB(eps=0.05, steps=5, restarts=1)(digits_cnn, x, y)
    assert bool((a.success | ~one.success).all())  # the first restart is the deterministic run


def test_misclassified_points_count_as_broken_with_zero_perturbation(digits_cnn: TorchTarget,
                                                                      digits: object) -> None:
    x, y = digits.x_test, digits.y_test  # type: ignore[attr-defined]
    wrong = digits_cnn.predict(x) != y
    xs, ys = x[wrong][:3], y[wrong][:3]
    r = FAB(eps=0.1, steps=3)(digits_cnn, xs, ys)
    assert r.success.all() and float(r.norms.max()) == 0.0 and r.cost.gradients == 0


@pytest.mark.parametrize(
    ("attack", "fragment"),
    [
        (FAB(eps=-0.1), ">= 0"),
        (FAB(eps=2.0), "exceeds the whole input range"),
        (FAB(eps=0.1, steps=0), "steps must be a positive integer"),
        (FAB(eps=0.1, restarts=0), "restarts"),
        (FAB(eps=0.1, n_target_classes=0), "n_target_classes"),
        (FAB(eps=0.1, alpha_max=1.5), "alpha_max"),
        (FAB(eps=0.1, eta=0.9), "eta"),
        (FAB(eps=0.1, beta=0.0), "beta"),
        (FAB(eps=0.1, beta="0.9"), "beta"),  # type: ignore[arg-type]
        (FAB(eps=0.1, norm="l1"), "unknown norm"),
    ],
)
def test_bad_parameters_raise_parameter_error(digits_cnn: TorchTarget, digits_batch: tuple, attack: FAB,
                                              fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        attack(digits_cnn, digits_batch[0][:2], digits_batch[1][:2])
