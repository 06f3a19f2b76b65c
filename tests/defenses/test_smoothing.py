"""Randomized smoothing (Cohen, Rosenfeld, Kolter 2019): CERTIFY and PREDICT, noise training, certified curves."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from sparring.attacks.evasion.pgd import PGD
from sparring.data.cache import cache_dir
from sparring.data.datasets import Dataset, load_digits
from sparring.defenses.certify.smoothing import (
    ABSTAIN,
    SmoothedClassifier,
    binomial_p_value,
    certified_accuracy_curve,
    certified_radius,
    lower_confidence_bound,
)
from sparring.defenses.training.noise import noisy_digits_target, train_with_noise
from sparring.errors import InputSpecError, ParameterError, QueryBudgetExceeded
from sparring.targets.spec import InputSpec
from sparring.targets.torch import TorchTarget

SIGMA = 0.25
EPOCHS = 6
FEATURES = InputSpec(shape=(4,), n_classes=4, bounds=(0.0, 1.0), layout="features")


class _Constant(nn.Module):
    """Always class k, whatever the input."""

    def __init__(self, k: int, n_classes: int = 4) -> None:
        super().__init__()
        self.register_buffer("logits", nn.functional.one_hot(torch.tensor(k), n_classes).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


class _HalfSpace(nn.Module):
    """Class 1 where feature 0 exceeds 0.5, else class 0: a linear base classifier whose smoothed version has the
    same boundary, so the exact robust radius of g at x is |x0 - 0.5| (Cohen et al. 2019, section 3.1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margin = x[:, :1] - 0.5
        return torch.cat([-margin, margin, torch.full_like(margin, -1e9), torch.full_like(margin, -1e9)], dim=1)


class _Argmax(nn.Module):
    """The class is the index of the largest feature."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _NoisyAverage(nn.Module):
    """log E_ε softmax f(x + ε), estimated with k draws: the smoothed classifier made differentiable, for an
    EOT-style PGD attack on g itself (Salman et al. 2019, SmoothAdv)."""

    def __init__(self, target: TorchTarget, sigma: float, k: int) -> None:
        super().__init__()
        self.model, self.sigma, self.k = target.model, sigma, k
        norm = target.spec.norm_tensors()
        assert norm is not None
        self.mean, self.std = norm
        self.gen = torch.Generator().manual_seed(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xk = x.unsqueeze(1) + self.sigma * torch.randn((x.shape[0], self.k, *x.shape[1:]), generator=self.gen)
        logits = self.model((xk.flatten(0, 1) - self.mean) / self.std)
        probs = logits.softmax(dim=1).reshape(x.shape[0], self.k, -1).mean(dim=1)
        return probs.clamp_min(1e-12).log()


@pytest.fixture(scope="module")
def digits8() -> Dataset:
    return load_digits(8)


@pytest.fixture(scope="module")
def noisy() -> TorchTarget:
    """The digits MLP (8×8) trained with σ = 0.25 noise, cached in the session's private cache dir."""
    return _noisy_mlp(SIGMA)


def _noisy_mlp(sigma: float) -> TorchTarget:
    return noisy_digits_target(sigma, size=8, epochs=EPOCHS, lr=3e-3, batch_size=128)


def _tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


# ---------------------------------------------------------------------------------------------- the bound itself
def test_radius_with_every_vote_is_sigma_times_phi_inverse_of_alpha_root_n() -> None:
    n, alpha = 100_000, 0.001
    assert lower_confidence_bound(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-12)
    assert round(certified_radius(n, n, 1.0, alpha), 3) == 3.811
    assert certified_radius(n, n, 0.5, alpha) == pytest.approx(0.5 * stats.norm.ppf(alpha ** (1 / n)), rel=1e-12)


def test_lower_bound_is_the_one_sided_clopper_pearson_bound() -> None:
    n, alpha = 1000, 0.01
    n_a = np.array([0, 1, 400, 500, 501, 900, 999, 1000])
    expected = [stats.binomtest(int(k), n).proportion_ci(1 - 2 * alpha, method="exact").low for k in n_a]
    np.testing.assert_allclose(lower_confidence_bound(n_a, n, alpha), expected, rtol=1e-9, atol=1e-12)
    radii = certified_radius(n_a, n, 1.0, alpha)
    assert np.all(radii[:5] == 0.0)  # p_A <= 1/2: abstain, radius 0
    assert np.all(np.diff(radii) >= 0) and radii[-1] > 0


def test_binomial_p_value_equals_scipy_binomtest() -> None:
    for total in (1, 2, 7, 100, 101):
        k = np.arange(total + 1)
        expected = [stats.binomtest(int(i), total, 0.5).pvalue for i in k]
        np.testing.assert_allclose(binomial_p_value(k, np.full_like(k, total)), expected, rtol=1e-9)


# ---------------------------------------------------------------------------------------------- exact base models
def test_constant_classifier_gets_exact_counts_and_the_maximal_radius() -> None:
    target = TorchTarget(_Constant(2), FEATURES)
    x = torch.rand(3, 4)
    res = SmoothedClassifier(target, 0.5).certify(x, n0=10, n=5000, alpha=0.001)
    assert torch.equal(res.counts, torch.tensor([[0, 0, 5000, 0]] * 3))
    assert torch.equal(res.counts_selection, torch.tensor([[0, 0, 10, 0]] * 3))
    assert torch.equal(res.labels, torch.tensor([2, 2, 2]))
    assert torch.allclose(res.radii, torch.full((3,), res.max_radius, dtype=res.radii.dtype))
    assert res.max_radius == pytest.approx(0.5 * stats.norm.ppf(0.001 ** (1 / 5000)))
    assert res.cost.queries == 3 * 5010


def test_coin_flip_classifier_makes_both_procedures_abstain() -> None:
    """On the boundary of a half-space the base classifier is a fair coin under the noise: no class can be chosen."""
    target = TorchTarget(_HalfSpace(), FEATURES)
    x = torch.full((10, 4), 0.5)
    smoothed = SmoothedClassifier(target, SIGMA)
    res = smoothed.certify(x, n=2000)
    assert torch.all(res.labels == ABSTAIN) and torch.all(res.radii == 0)
    assert torch.all(res.counts[:, :2].sum(1) == 2000) and torch.all(res.counts[:, 2:] == 0)
    assert torch.all(smoothed.predict(x, n=1000) == ABSTAIN)


def test_smoothed_accuracy_counts_an_abstention_as_wrong_as_cohen_et_al_do() -> None:
    """Issue 22 item 10: smoothed_accuracy counted an abstention whose selected class was right as correct. Cohen et
    al. (2019, §4) report the certified accuracy at r = 0: CERTIFY must return the true label. Four points on the
    half-space boundary (CERTIFY abstains, whatever it selected) and four far from it (certified)."""
    target = TorchTarget(_HalfSpace(), FEATURES)
    x = torch.cat([torch.full((4, 4), 0.5), torch.tensor([[0.05, 0.5, 0.5, 0.5], [0.95, 0.5, 0.5, 0.5]]).repeat(2, 1)])
    gen = torch.Generator().manual_seed(0)
    first = SmoothedClassifier(target, SIGMA).certify(x, n0=50, n=2000, generator=gen)
    y = first.top_class.clone()  # the selected class is "right" everywhere, abstentions included
    y[4:] = torch.tensor([0, 1, 0, 1])
    res = SmoothedClassifier(target, SIGMA).certify(x, y, n0=50, n=2000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(res.top_class, first.top_class)
    assert torch.all(res.labels[:4] == ABSTAIN) and torch.equal(res.labels[4:], y[4:])
    assert res.clean_accuracy == 1.0  # what smoothed_accuracy used to report
    assert res.smoothed_accuracy == 0.5 == res.certified_accuracy(0.0)
    assert res.summary()["smoothed_accuracy"] == 0.5


def test_the_audit_reports_smoothed_accuracy_as_certified_accuracy_at_radius_zero(
    tmp_path: Path, digits8: Dataset
) -> None:
    """The audit's smoothed_accuracy measurement read 0.625 here, the base model's clean accuracy, with half of the
    points abstained: it counted the abstentions whose selected class was right. Measured after the fix: 0.417,
    the r = 0 certified figure."""
    from sparring.audit import parse_threat_model, run_audit
    from sparring.data.zoo import train_torch_classifier

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = train_torch_classifier(_tiny_mlp(), digits8, digits8.spec, epochs=3, seed=0)
    tm = parse_threat_model({"system": {"model": "own", "data": {"n": 24}},
                             "certification": {"smoothing": {"sigma": 0.25, "n0": 16, "n": 64, "radii": [0.0]}}})
    audit = run_audit(tm, tmp_path, target=TorchTarget(net, digits8.spec), data=(digits8.x_test[:24],
                                                                               digits8.y_test[:24]))
    step = next(r for r in audit.results if r.check == "certify-smoothing")
    m = {x.metric: x.value for x in step.measurements}
    assert m["abstain_rate"] > 0
    assert m["smoothed_accuracy"] == m["certified_accuracy"] == pytest.approx(np.mean(step.per_point["correct"]))


def test_half_space_radius_is_close_to_and_below_the_true_distance() -> None:
    target = TorchTarget(_HalfSpace(), FEATURES)
    x = torch.tensor([[0.0, 0.3, 0.3, 0.3], [0.9, 0.3, 0.3, 0.3]])
    res = SmoothedClassifier(target, SIGMA, batch_size=4096).certify(x, n=100_000)
    assert res.labels.tolist() == [0, 1]
    true_distance = torch.tensor([0.5, 0.4], dtype=res.radii.dtype)
    assert torch.all(res.radii <= true_distance) and torch.all(res.radii >= true_distance - 0.02)


@pytest.mark.parametrize(("n", "batch_size"), [(7, 5), (3, 64), (1000, 300)])  # few runs per batch, many, one
def test_samples_of_several_inputs_sharing_a_batch_are_counted_for_their_own_input(n: int, batch_size: int) -> None:
    target = TorchTarget(_Argmax(), FEATURES)
    classes = torch.arange(41) * 7 % 4
    counts = SmoothedClassifier(target, 0.01, batch_size=batch_size).sample_counts(torch.eye(4)[classes], n)
    assert torch.equal(counts, n * torch.eye(4, dtype=torch.int64)[classes])
    assert target.counter.used == 41 * n


def test_a_label_only_black_box_can_be_smoothed_and_certified() -> None:
    """Smoothing needs only the base classifier's labels: a scikit-learn model behind a labels-only view works."""
    from sklearn.linear_model import LogisticRegression

    from sparring.targets.sklearn import SklearnTarget
    from sparring.targets.spec import Access

    gen = np.random.default_rng(0)
    xs = gen.uniform(0, 1, size=(400, 4))
    est = LogisticRegression().fit(xs, (xs[:, 0] > 0.5).astype(int) + 2 * (xs[:, 1] > 0.5).astype(int))
    target = SklearnTarget(est, FEATURES, access=Access.LABELS)
    res = SmoothedClassifier(target, 0.1).certify(np.array([[0.1, 0.1, 0.5, 0.5], [0.9, 0.9, 0.5, 0.5]]), n=2000)
    assert isinstance(res.labels, np.ndarray) and res.labels.tolist() == [0, 3]
    assert np.all(res.radii > 0.1) and target.counter.used == 2 * 2100


# ---------------------------------------------------------------------------------------------- a noise-trained model
def test_certified_accuracy_is_monotone_bounded_by_clean_accuracy_and_zero_beyond_max_radius(
    noisy: TorchTarget, digits8: Dataset
) -> None:
    x, y = digits8.x_test[:40], digits8.y_test[:40]
    res = SmoothedClassifier(noisy, SIGMA).certify(x, y, n=2000)
    radii = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, res.max_radius, res.max_radius + 1e-6, 10.0]
    accs = [a for _, a in res.curve(radii)]
    assert res.clean_accuracy >= 0.85  # measured 0.95
    assert accs[0] >= 0.75 and accs[3] > 0
    assert all(a >= b for a, b in itertools.pairwise(accs))
    assert max(accs) <= res.clean_accuracy
    assert accs[-2] == 0.0 and accs[-1] == 0.0
    assert float(res.radii.max()) <= res.max_radius
    assert certified_accuracy_curve({SIGMA: res}, radii)[SIGMA] == res.curve(radii)
    summary = res.summary()
    assert summary["params"]["n"] == 2000 and summary["cost"]["queries"] == 40 * 2100


def test_certified_points_resist_an_eot_attack_on_the_smoothed_classifier(
    noisy: TorchTarget, digits8: Dataset
) -> None:
    """Soundness: push the 5 best-certified digits with PGD-L2 against g itself (EOT over the noise) to 90% of the
    certified radius; g's prediction there, estimated with 2000 samples, is still ĉ_A. The same attack with 2.5×
    the radius does flip g, so the attack is strong enough for the check to mean something."""
    smoothed = SmoothedClassifier(noisy, SIGMA)
    x, y = digits8.x_test[:20], digits8.y_test[:20]
    res = smoothed.certify(x, y, n=2000)
    best = torch.argsort(res.radii, descending=True)[:5]
    labels = res.labels[best]
    assert bool(torch.all(labels != ABSTAIN))
    eot = TorchTarget(_NoisyAverage(noisy, SIGMA, k=16), InputSpec(shape=(1, 8, 8), n_classes=10))

    def attacked_votes(scale: float) -> torch.Tensor:
        moved = []
        for i in best.tolist():
            eps = scale * float(res.radii[i])
            adv = PGD(eps=eps, norm="l2", steps=20, early_stop=False)(eot, x[i : i + 1], res.labels[i : i + 1])
            assert float(adv.norms[0]) <= eps + 1e-5
            moved.append(adv.x_adv)
        return smoothed.sample_counts(torch.cat(moved), 2000, generator=torch.Generator().manual_seed(7))

    inside = attacked_votes(0.9)
    assert torch.equal(inside.argmax(1), labels)  # α = 0.001: one failure in 5 would be a 1-in-200 event
    share_before = res.counts[best].gather(1, labels[:, None]).float().mean() / 2000
    share_inside = inside.gather(1, labels[:, None]).float().mean() / 2000
    assert share_inside < share_before - 0.01  # the attack did push towards other classes (measured 1.00 -> 0.90)
    outside = attacked_votes(2.5)
    assert int((outside.argmax(1) != labels).sum()) >= 3  # measured 5 of 5 flipped


def test_predict_agrees_with_the_labels_on_most_digits(noisy: TorchTarget, digits8: Dataset) -> None:
    x, y = digits8.x_test[:40].numpy(), digits8.y_test[:40].numpy()
    pred = SmoothedClassifier(noisy, SIGMA).predict(x, n=200)
    assert isinstance(pred, np.ndarray) and pred.shape == (40,)
    assert np.mean(pred == y) >= 0.8


def test_numpy_in_numpy_out_and_tensors_stay_tensors(noisy: TorchTarget, digits8: Dataset) -> None:
    smoothed = SmoothedClassifier(noisy, SIGMA)
    res = smoothed.certify(digits8.x_test[:3].numpy(), digits8.y_test[:3].numpy(), n=200)
    assert all(isinstance(v, np.ndarray) for v in (res.labels, res.radii, res.p_lower, res.counts, res.correct))
    res_t = smoothed.certify(digits8.x_test[:3], n=200)
    assert isinstance(res_t.labels, torch.Tensor) and isinstance(res_t.radii, torch.Tensor)
    np.testing.assert_array_equal(res.labels, res_t.labels.numpy())
    with pytest.raises(ParameterError, match="pass y"):
        res_t.certified_accuracy(0.0)


def test_certification_is_reproducible_for_a_seed_and_varies_across_seeds(
    noisy: TorchTarget, digits8: Dataset
) -> None:
    x = digits8.x_test[:4]
    a = SmoothedClassifier(noisy, SIGMA, seed=3).certify(x, n=500)
    b = SmoothedClassifier(noisy, SIGMA).certify(x, n=500, generator=torch.Generator().manual_seed(3))
    c = SmoothedClassifier(noisy, SIGMA, seed=4).certify(x, n=500)
    assert torch.equal(a.counts, b.counts) and torch.equal(a.radii, b.radii)
    assert not torch.equal(a.counts, c.counts)


# ---------------------------------------------------------------------------------------------- errors and budgets
@pytest.mark.parametrize("sigma", [0, -0.5, float("nan"), float("inf"), True, "0.25"])
def test_bad_sigma_raises_parameter_error(sigma: object) -> None:
    with pytest.raises(ParameterError, match="sigma"):
        SmoothedClassifier(TorchTarget(_Argmax(), FEATURES), sigma)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"n0": 0}, "n0"), ({"n": 0}, "n"), ({"n": 2.5}, "n"), ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"),
     ({"alpha": -0.1}, "alpha")],
)
def test_bad_sampling_parameters_raise_parameter_error(kwargs: dict[str, object], name: str) -> None:
    smoothed = SmoothedClassifier(TorchTarget(_Argmax(), FEATURES), SIGMA)
    with pytest.raises(ParameterError, match=f"^{name} "):
        smoothed.certify(torch.rand(2, 4), **kwargs)  # type: ignore[arg-type]
    if "n0" not in kwargs:
        with pytest.raises(ParameterError, match=f"^{name} "):
            smoothed.predict(torch.rand(2, 4), **kwargs)  # type: ignore[arg-type]


def test_bad_inputs_raise_input_spec_error() -> None:
    smoothed = SmoothedClassifier(TorchTarget(_Argmax(), FEATURES), SIGMA)
    with pytest.raises(InputSpecError, match="shape"):
        smoothed.certify(torch.rand(2, 5), n=10)
    with pytest.raises(InputSpecError, match="NaN"):
        smoothed.predict(torch.full((2, 4), math.nan), n=10)
    with pytest.raises(InputSpecError, match="bounds"):
        smoothed.certify(torch.full((2, 4), 3.0), n=10)


def test_query_budget_stops_certification_before_any_sample() -> None:
    target = TorchTarget(_Argmax(), FEATURES, query_budget=2 * 1100 - 1)
    smoothed = SmoothedClassifier(target, SIGMA)
    with pytest.raises(QueryBudgetExceeded, match="2200 noise samples") as info:
        smoothed.certify(torch.rand(2, 4), n0=100, n=1000)
    assert info.value.requested == 2200 and target.counter.used == 0
    smoothed.certify(torch.rand(1, 4), n0=100, n=1000)  # 1100 samples fit, and are charged one by one
    assert target.counter.used == 1100
    with pytest.raises(QueryBudgetExceeded):
        smoothed.predict(torch.rand(1, 4), n=1100)


# ---------------------------------------------------------------------------------------------- noise training
def test_noise_training_is_deterministic_and_leaves_the_global_rng_alone(digits8: Dataset) -> None:
    first, second = _tiny_mlp(), _tiny_mlp()  # built (and randomly initialised) before the state is read
    state = torch.random.get_rng_state()
    a = train_with_noise(first, digits8, digits8.spec, sigma=0.5, epochs=1, batch_size=256, seed=1)
    b = train_with_noise(second, digits8, digits8.spec, sigma=0.5, epochs=1, batch_size=256, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not a.training
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_noise_training_raises_the_certified_accuracy_of_the_smoothed_classifier(digits8: Dataset) -> None:
    """Cohen et al.'s point: smoothing a model trained on clean data certifies less than smoothing the same
    architecture trained with the same σ of noise (σ = 0 is plain training)."""
    sigma, x, y = 0.5, digits8.x_test[:100], digits8.y_test[:100]
    at_sigma, mean_radius = {}, {}
    for s in (0.0, sigma):
        res = SmoothedClassifier(_noisy_mlp(s), sigma).certify(x, y, n=500)
        at_sigma[s] = res.certified_accuracy(sigma)
        mean_radius[s] = float((res.radii * res.correct).mean())
    assert at_sigma[sigma] >= at_sigma[0.0] + 0.1  # measured 0.23 against 0.05
    assert mean_radius[sigma] > mean_radius[0.0] + 0.05  # measured 0.29 against 0.18


def test_noise_training_rejects_bad_parameters(digits8: Dataset) -> None:
    with pytest.raises(ParameterError, match="sigma"):
        train_with_noise(_tiny_mlp(), digits8, digits8.spec, sigma=-1.0, epochs=1)
    with pytest.raises(ParameterError, match="epochs"):
        train_with_noise(_tiny_mlp(), digits8, digits8.spec, sigma=0.1, epochs=0)
    with pytest.raises(ParameterError, match="size"):
        noisy_digits_target(0.25, size=16)


def test_noisy_digits_target_is_cached_under_a_name_with_sigma(noisy: TorchTarget) -> None:
    files = list((cache_dir() / "noise").glob(f"digits8-sigma0.25-e{EPOCHS}-*.pt"))
    assert len(files) == 1
    again = _noisy_mlp(SIGMA)
    for pa, pb in zip(noisy.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
