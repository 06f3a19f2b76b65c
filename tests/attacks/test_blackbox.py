"""Square Attack (scores) and HopSkipJump (labels only) against HTTP, torch and scikit-learn targets.

Budgets documented here (measured on the zoo digits CNN, seed 0):

* Square L∞ eps 0.2, ``n_queries=300``: 0/32 digits robust over HTTP (≈630 queries in all).
* Square L2 eps 4.0, ``n_queries=500``: 0/32 robust (≈1 900 queries).
* HopSkipJump L2 eps 3.5, ``max_queries=2500`` per example: 0/16 robust from labels alone (≈6 000 queries).

HopSkipJump's digit runs use an in-process labels-only target: over HTTP every example costs ≈2 ms of JSON, so the
HTTP run uses the 30-feature scikit-learn model instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from sparring import zoo
from sparring.attacks.evasion.hopskipjump import HopSkipJump
from sparring.attacks.evasion.square import Square, p_schedule
from sparring.attacks.norms import Norm, norm_of
from sparring.attacks.result import EvasionResult
from sparring.errors import AccessError, ParameterError
from sparring.serving import PredictionServer, make_server
from sparring.targets.base import Target
from sparring.targets.http import HttpTarget
from sparring.targets.sklearn import SklearnTarget
from sparring.targets.spec import Access, InputSpec
from sparring.targets.torch import TorchTarget

TOL = 1e-5


# ---------------------------------------------------------------------------------------------- fixtures
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: see conftest


@pytest.fixture(scope="module")
def local(digits_cnn: TorchTarget) -> TorchTarget:
    """The digits CNN with its own counter, to check predictions without touching the attacked target's."""
    return TorchTarget(digits_cnn.model, digits_cnn.spec)


@pytest.fixture(scope="module")
def prob_model(digits_cnn: TorchTarget) -> nn.Module:
    """The digits CNN answering probabilities, as a deployed API would."""
    return nn.Sequential(digits_cnn.model, nn.Softmax(dim=1)).eval()


def scores_only(model: nn.Module, local: TorchTarget, **kw: Any) -> TorchTarget:
    return TorchTarget(model, local.spec, output="probabilities", access=Access.SCORES, **kw)


@pytest.fixture(scope="module")
def served(prob_model: nn.Module, local: TorchTarget) -> TorchTarget:
    return TorchTarget(prob_model, local.spec, output="probabilities")


@pytest.fixture(scope="module")
def server(served: TorchTarget) -> Iterator[PredictionServer]:
    with make_server(served) as srv:
        yield srv


@pytest.fixture(scope="module")
def breast() -> tuple[SklearnTarget, torch.Tensor, torch.Tensor]:
    target = zoo.load("breast-cancer-logreg")
    assert isinstance(target, SklearnTarget)
    data = zoo.data("breast-cancer-logreg")
    return target, data.x_test[:16], data.y_test[:16]


def check_result(r: EvasionResult, x: torch.Tensor, eps: float | None, norm: str, oracle: Target,
                 lower: torch.Tensor, upper: torch.Tensor) -> None:
    """Perturbations within eps and the bounds; reported predictions and success agree with the model itself."""
    xa = torch.as_tensor(r.x_adv)
    assert xa.shape == x.shape
    assert bool((xa >= lower - TOL).all()) and bool((xa <= upper + TOL).all())
    norms = norm_of(xa - x, Norm.parse(norm))
    if eps is not None:
        assert float(norms.max()) <= eps + TOL
    assert torch.allclose(torch.as_tensor(r.norms), norms, atol=1e-5)
    pred = oracle.predict(xa)
    assert torch.equal(pred, torch.as_tensor(r.adv_pred))
    goal = r.y if r.target_labels is None else r.target_labels
    assert torch.equal(torch.as_tensor(r.success), pred != goal if r.target_labels is None else pred == goal)


# ---------------------------------------------------------------------------------------------- Square
def test_p_schedule_halves_at_the_papers_breakpoints_rescaled_to_the_budget() -> None:
    assert p_schedule(0.8, 10, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 9000, 10000) == pytest.approx(0.8 / 512)
    assert p_schedule(0.8, 2, 1000) == 0.4  # iteration 2 of 1000 is iteration 20 on the 10 000 scale


def test_square_linf_over_http_breaks_the_digits_cnn_and_counts_every_query(
    server: PredictionServer, served: TorchTarget, local: TorchTarget, digits_batch: tuple
) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    served.counter.reset()
    with HttpTarget(server.predict_url, local.spec, score_kind="probabilities", batch_size=256) as api:
        r = Square(eps=0.2, n_queries=300)(api, x, y)
        assert api.counter.used == r.cost.queries == served.counter.used
    assert r.clean_accuracy > 0.9
    assert r.robust_accuracy <= 0.10  # measured 0/32 with ≈630 queries
    assert r.cost.queries <= 32 * (300 + 1)
    assert r.extras == {}
    lo, hi = local.spec.bounds_tensors()
    check_result(r, x, 0.2, "linf", local, lo, hi)


def test_square_l2_breaks_the_digits_cnn(prob_model: nn.Module, local: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    target = scores_only(prob_model, local)
    r = Square(eps=4.0, norm="l2", n_queries=500)(target, x, y)
    assert r.robust_accuracy <= 0.10  # measured 0/32 robust with ≈1 900 queries
    assert target.counter.used == r.cost.queries
    lo, hi = local.spec.bounds_tensors()
    check_result(r, x, 4.0, "l2", local, lo, hi)


@pytest.mark.parametrize("view", [{"top_k": 2}, {"decimals": 2}])
def test_square_still_works_on_top_k_or_rounded_scores(
    digits_cnn: TorchTarget, local: TorchTarget, digits_batch: tuple, view: dict[str, int]
) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    target = TorchTarget(digits_cnn.model, local.spec, access=Access.SCORES, **view)
    r = Square(eps=0.2, n_queries=300)(target, x, y)
    assert r.robust_accuracy <= 0.125
    lo, hi = local.spec.bounds_tensors()
    check_result(r, x, 0.2, "linf", local, lo, hi)


def test_square_targeted_reaches_the_target(prob_model: nn.Module, local: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    t = (y + 1) % 10
    r = Square(eps=0.3, n_queries=500, loss="ce")(scores_only(prob_model, local), x, y, target_labels=t)
    assert r.success_rate >= 0.875
    lo, hi = local.spec.bounds_tensors()
    check_result(r, x, 0.3, "linf", local, lo, hi)


def test_square_is_reproducible_for_a_seed(prob_model: nn.Module, local: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    a = Square(eps=0.1, n_queries=20, seed=3)(scores_only(prob_model, local), x, y)
    b = Square(eps=0.1, n_queries=20, seed=3)(scores_only(prob_model, local), x, y)
    assert torch.equal(a.x_adv, b.x_adv)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 100.0), ("l2", 200.0)])
def test_square_respects_per_feature_bounds_of_a_scikit_learn_model(breast: tuple, norm: str, eps: float) -> None:
    target, x, y = breast
    target.counter.reset()
    r = Square(eps=eps, norm=norm, n_queries=200)(target, x, y)
    assert r.attack_success_rate >= 0.9  # measured 1.0 (≈100 queries for 16 rows)
    lo, hi = target.spec.bounds_tensors()
    check_result(r, x, eps, norm, target, lo, hi)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_handles_channels_last_images(norm: str) -> None:
    torch.manual_seed(0)
    spec = InputSpec(shape=(8, 8, 3), n_classes=3, layout="hwc", bounds=(-1.0, 1.0))
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 3))
    x = torch.rand(16, 8, 8, 3) * 2 - 1
    target = TorchTarget(net, spec, access=Access.SCORES)
    y = target.predict(x)
    eps = 0.3 if norm == "linf" else 3.0
    r = Square(eps=eps, norm=norm, n_queries=200)(target, x, y)
    assert r.success_rate >= 0.9
    lo, hi = spec.bounds_tensors()
    check_result(r, x, eps, norm, target, lo, hi)


# ---------------------------------------------------------------------------------------------- HopSkipJump
def test_hopskipjump_from_labels_only_breaks_digits_within_eps(local: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    target = TorchTarget(local.model, local.spec, access=Access.LABELS)
    r = HopSkipJump(eps=3.5, max_queries=2500)(target, x, y)
    assert r.robust_accuracy <= 0.10  # measured 0/16 with ≈6 000 queries
    assert target.counter.used == r.cost.queries <= 16 * 2600
    best, start = torch.tensor(r.extras["best_norms"]), torch.tensor(r.extras["start_norms"])
    assert bool((best <= start).all())
    iterated = start > 3.5  # the others were within eps from the start and stopped there
    assert int(iterated.sum()) >= 4 and bool((best[iterated] < start[iterated]).all())
    lo, hi = local.spec.bounds_tensors()
    check_result(r, x, 3.5, "l2", local, lo, hi)
    assert torch.equal(r.x_adv[~r.success], x[~r.success])  # failures return the input itself


def test_hopskipjump_without_eps_returns_the_closest_adversarial_points(
    local: TorchTarget, digits_batch: tuple
) -> None:
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    r = HopSkipJump(max_iter=2, norm="linf")(TorchTarget(local.model, local.spec, access=Access.LABELS), x, y)
    assert r.success_rate == 1.0  # every other class is in the batch: every example has a start
    assert torch.allclose(r.norms, torch.tensor(r.extras["best_norms"]), atol=1e-5)
    lo, hi = local.spec.bounds_tensors()
    check_result(r, x, None, "linf", local, lo, hi)


def test_hopskipjump_targeted_reaches_classes_present_in_the_batch(local: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    t = y.roll(1)
    keep = t != y
    x, y, t = x[keep], y[keep], t[keep]
    r = HopSkipJump(max_iter=2)(TorchTarget(local.model, local.spec, access=Access.LABELS), x, y, target_labels=t)
    assert r.success_rate >= 0.8
    lo, hi = local.spec.bounds_tensors()
    check_result(r, x, None, "l2", local, lo, hi)


def test_hopskipjump_over_http_labels_only_on_a_scikit_learn_model(breast: tuple) -> None:
    target, x, y = breast
    served = SklearnTarget(target.estimator, target.spec, access=Access.LABELS)
    with make_server(served) as srv, HttpTarget(srv.predict_url, target.spec, output="labels",
                                                batch_size=4096) as api:
        r = HopSkipJump(max_iter=4)(api, x, y)
        assert api.counter.used == r.cost.queries == served.counter.used
    assert r.success_rate == 1.0
    best, start = torch.tensor(r.extras["best_norms"]), torch.tensor(r.extras["start_norms"])
    assert bool((best <= start).all()) and float(best.sum()) < 0.9 * float(start.sum())
    lo, hi = target.spec.bounds_tensors()
    check_result(r, x, None, "l2", target, lo, hi)


# ---------------------------------------------------------------------------------------------- budgets
@pytest.mark.parametrize(
    ("attack", "budget"),
    [(Square(eps=0.2, n_queries=300), 100), (HopSkipJump(eps=2.0, max_iter=5), 1000)],
    ids=["square", "hopskipjump"],
)
def test_exhausted_budget_gives_a_partial_result_not_an_exception(
    prob_model: nn.Module, local: TorchTarget, digits_batch: tuple, attack: Any, budget: int
) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    target = scores_only(prob_model, local, query_budget=budget)
    r = attack(target, x, y)
    assert r.extras["budget_exhausted"] is True
    assert target.counter.used <= budget and r.cost.queries == target.counter.used
    assert 0 < r.success_rate < 1  # some progress, and success only where it is real:
    lo, hi = local.spec.bounds_tensors()
    check_result(r, x, attack.eps, attack.norm, local, lo, hi)
    # what the budget cut short is unknown, never robust
    unknown = torch.as_tensor(r.unknown)
    assert bool(unknown.any()) and not bool((unknown & torch.as_tensor(r.success)).any())
    assert r.robust_accuracy == pytest.approx(1 - r.success_rate - r.unknown_rate)
    assert r.summary()["n_unknown"] == int(unknown.sum()) and r.summary()["budget_exhausted"] is True


@pytest.mark.parametrize("attack", [Square(eps=0.2), HopSkipJump()], ids=["square", "hopskipjump"])
def test_budget_below_one_batch_leaves_examples_unattacked(
    prob_model: nn.Module, local: TorchTarget, digits_batch: tuple, attack: Any
) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    target = scores_only(prob_model, local, query_budget=10)
    r = attack(target, x, y)
    assert r.extras["budget_exhausted"] is True and r.extras["unattacked"] == 16
    assert target.counter.used == 0 and not bool(r.success.any())
    assert torch.equal(r.x_adv, x)
    assert bool(torch.as_tensor(r.unknown).all()) and r.robust_accuracy == 0.0 and r.unknown_rate == 1.0


def test_a_finished_run_within_budget_has_no_unknown_points(
    prob_model: nn.Module, local: TorchTarget, digits_batch: tuple
) -> None:
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    r = HopSkipJump(eps=2.0, max_iter=2, max_queries=400)(scores_only(prob_model, local, query_budget=10**6), x, y)
    assert "budget_exhausted" not in r.extras and r.n_unknown == 0  # its own per-example cap is a finished run


# ---------------------------------------------------------------------------------------------- bad input
def test_square_on_a_labels_only_target_names_hopskipjump(local: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:2], digits_batch[1][:2]
    with pytest.raises(AccessError, match=r"Square needs scores.*hopskipjump"):
        Square(eps=0.1)(TorchTarget(local.model, local.spec, access=Access.LABELS), x, y)


@pytest.mark.parametrize(
    ("attack", "needle"),
    [
        (Square(eps=-0.1), "eps must be a finite number >= 0"),
        (Square(eps=2.0), "exceeds the whole input range"),
        (Square(eps=0.1, norm="l1"), "unknown norm 'l1'"),
        (Square(eps=0.1, n_queries=0), "n_queries must be a positive integer"),
        (Square(eps=0.1, p_init=0.0), "p_init .* must be in \\(0, 1\\]"),
        (Square(eps=0.1, p_init=1.5), "p_init .* must be in \\(0, 1\\]"),
        (Square(eps=0.1, loss="hinge"), "unknown loss 'hinge'"),
        (HopSkipJump(max_iter=0), "max_iter must be a positive integer"),
        (HopSkipJump(max_queries=-5), "max_queries must be a positive integer"),
        (HopSkipJump(init_evals=0), "init_evals must be a positive integer"),
        (HopSkipJump(gamma=0.0), "gamma must be a finite number > 0"),
        (HopSkipJump(gamma=math.nan), "gamma must be a finite number > 0"),
        (HopSkipJump(eps=-1.0), "eps must be a finite number >= 0"),
    ],
)
def test_bad_parameters_raise_parameter_error(local: TorchTarget, digits_batch: tuple, attack: Any,
                                              needle: str) -> None:
    x, y = digits_batch[0][:2], digits_batch[1][:2]
    with pytest.raises(ParameterError, match=needle):
        attack(local, x, y)
