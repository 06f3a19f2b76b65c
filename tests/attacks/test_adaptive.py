"""BPDA and EOT (Athalye, Carlini, Wagner 2018) as target wrappers, on two defended versions of the zoo digits CNN:
a quantised input (zero gradient) and Gaussian input noise active at test time (a randomized model)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from sparring import FGSM, PGD
from sparring.attacks.adaptive import adaptive, find_gradient_blockers, is_randomized, with_bpda, with_eot
from sparring.data import Dataset
from sparring.errors import ParameterError
from sparring.targets import TorchTarget

EPS = 0.1


class Quantize(nn.Module):
    """Rounds pixels to ``levels`` values: a defence whose gradient is zero almost everywhere."""

    def __init__(self, levels: int = 8) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)


class GaussianNoise(nn.Module):
    """Adds N(0, sigma²) noise in eval mode too (a randomized defence), from its own seeded generator."""

    def __init__(self, sigma: float = 0.3, seed: int = 0) -> None:
        super().__init__()
        self.sigma = sigma
        self.gen = torch.Generator()
        self.gen.manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sigma * torch.randn(x.shape, generator=self.gen, dtype=x.dtype)


class Normalize(nn.Module):
    """The zoo CNN's input normalisation as a module, so the defences above act on raw pixels."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class NumpyRound(nn.Module):
    """A transform computed outside autograd (a numpy round trip): disconnected from the graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(x.detach().cpu().numpy().round(1)).to(x)


def _build(digits_cnn: TorchTarget, *front: nn.Module, tail: tuple[nn.Module, ...] = ()) -> TorchTarget:
    """``front`` modules on raw pixels, then the zoo CNN (its normalisation moved into the model)."""
    spec = digits_cnn.spec
    assert spec.mean is not None and spec.std is not None
    raw_spec = dataclasses.replace(spec, mean=None, std=None)
    model = nn.Sequential(*front, Normalize(spec.mean[0], spec.std[0]), digits_cnn.model, *tail)
    return TorchTarget(model, raw_spec, output="probabilities" if tail else "logits")


@pytest.fixture(scope="module")
def xy(digits: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.x_test[:64], digits.y_test[:64]


@pytest.fixture(scope="module")
def plain(digits_cnn: TorchTarget) -> TorchTarget:
    return _build(digits_cnn)


@pytest.fixture(scope="module")
def quantised(digits_cnn: TorchTarget) -> TorchTarget:
    return _build(digits_cnn, Quantize(levels=8))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---------------------------------------------------------------------------------------------------- detection
def test_find_gradient_blockers_finds_quantize_and_nothing_in_the_plain_cnn(
    digits_cnn: TorchTarget, plain: TorchTarget, quantised: TorchTarget, xy: tuple
) -> None:
    x = xy[0][:32]
    found = find_gradient_blockers(quantised, x)
    assert [(n, type(m)) for n, m in found] == [("0", Quantize)]
    assert find_gradient_blockers(plain, x) == []
    assert find_gradient_blockers(digits_cnn, x) == []
    assert _no_hooks(quantised.model)


def test_find_gradient_blockers_reports_the_innermost_blocker_and_disconnected_modules(
    digits_cnn: TorchTarget, xy: tuple
) -> None:
    x = xy[0][:16]
    nested = _build(digits_cnn, nn.Sequential(Quantize(), nn.Identity()), NumpyRound())
    assert [n for n, _ in find_gradient_blockers(nested, x)] == ["0.0", "1"]  # not the container "0"
    # softmax kills a constant vector in its vector-Jacobian product: the random probe must not call it a blocker
    assert find_gradient_blockers(_build(digits_cnn, tail=(nn.Softmax(dim=1),)), x) == []


def test_is_randomized_tells_a_noisy_model_from_a_deterministic_one(
    digits_cnn: TorchTarget, plain: TorchTarget, quantised: TorchTarget, xy: tuple
) -> None:
    x = xy[0][:16]
    assert is_randomized(_build(digits_cnn, GaussianNoise(0.3)), x)
    assert not is_randomized(plain, x)
    assert not is_randomized(quantised, x, tries=3)


# ---------------------------------------------------------------------------------------------------- BPDA
def test_naive_pgd_is_fooled_by_quantisation_and_bpda_breaks_it(
    plain: TorchTarget, quantised: TorchTarget, xy: tuple
) -> None:
    x, y = xy
    pgd = PGD(eps=EPS, steps=20)
    naive = pgd(quantised, x, y)
    assert naive.clean_accuracy > 0.9
    assert naive.robust_accuracy >= naive.clean_accuracy - 0.1  # measured: 0.97, equal to clean
    bpda = pgd(with_bpda(quantised, x=x[:32]), x, y)
    undefended = pgd(plain, x, y)
    assert bpda.clean_accuracy == naive.clean_accuracy
    assert bpda.robust_accuracy <= undefended.robust_accuracy + 0.1  # measured: 0.11 vs 0.125
    assert float((torch.as_tensor(bpda.x_adv) - x).abs().max()) <= EPS + 1e-6
    # the reported success is real: the defended model itself misclassifies the points
    assert torch.equal(quantised.predict(bpda.x_adv), bpda.adv_pred)
    assert _no_hooks(quantised.model)


def test_bpda_gradient_is_the_downstream_gradient_at_the_transformed_input(
    plain: TorchTarget, quantised: TorchTarget, xy: tuple
) -> None:
    x, y = xy[0][:16], xy[1][:16]
    straight = with_bpda(quantised, modules=["0"]).loss_gradient(x, y)
    assert straight.abs().sum() > 0
    assert torch.allclose(straight, plain.loss_gradient(Quantize()(x), y), atol=1e-6)
    assert quantised.loss_gradient(x, y).abs().sum() == 0  # what a naive attack sees
    doubled = with_bpda(quantised, modules=[quantised.model[0]], approx=lambda v: 2 * v).loss_gradient(x, y)
    assert torch.allclose(doubled, 2 * straight, atol=1e-6)
    by_name = with_bpda(quantised, modules=["0"], approx={"0": lambda v: 2 * v}).loss_gradient(x, y)
    assert torch.allclose(by_name, doubled)


def test_wrappers_give_exactly_the_original_forward_values(
    plain: TorchTarget, quantised: TorchTarget, xy: tuple
) -> None:
    x = xy[0][:32]
    for wrapped in (with_bpda(quantised, modules=["0"]), with_bpda(quantised, modules=["0"], approx=nn.Identity())):
        assert torch.equal(wrapped.query(x), quantised.query(x))
        xg = x.clone().requires_grad_(True)
        assert torch.equal(wrapped.differentiable("test")(xg), quantised.differentiable("test")(xg))
    assert torch.equal(with_eot(plain, draws=1).query(x), plain.query(x))
    assert torch.allclose(with_eot(plain, draws=5).query(x), plain.query(x), atol=1e-5)
    probs = with_eot(plain, draws=3, reduce="probs").query(x).softmax(dim=1)
    assert torch.allclose(probs, plain.query(x).softmax(dim=1), atol=1e-5)


def test_no_hooks_are_left_on_the_model_after_attacks_and_errors(quantised: TorchTarget, xy: tuple) -> None:
    x, y = xy[0][:16], xy[1][:16]
    FGSM(eps=EPS)(with_bpda(quantised), x, y)
    PGD(eps=EPS, steps=3)(with_eot(with_bpda(quantised, modules=["0"]), draws=2), x, y)
    assert _no_hooks(quantised.model)
    wrong_shape = with_bpda(quantised, modules=["0"], approx=lambda v: v.flatten(1))
    with pytest.raises(ParameterError, match="shape"):
        PGD(eps=EPS, steps=3)(wrong_shape, x, y)
    assert _no_hooks(quantised.model)


def test_wrappers_share_the_query_counter_and_frozen(plain: TorchTarget, quantised: TorchTarget, xy: tuple) -> None:
    x, y = xy[0][:8], xy[1][:8]
    bpda = with_bpda(quantised, modules=["0"])
    assert bpda.counter is quantised.counter and bpda.model is quantised.model and bpda.spec == quantised.spec
    before = quantised.counter.used
    r = PGD(eps=EPS, steps=2, early_stop=False)(bpda, x, y)
    assert quantised.counter.used - before == r.cost.queries >= 8
    eot = with_eot(plain, draws=5)
    before = plain.counter.used
    eot.query(x)
    eot.differentiable("test")(x)
    assert plain.counter.used - before == 2 * 8 * 5  # every draw is a model evaluation
    assert eot.counter.used == plain.counter.used
    assert eot.batch_size == plain.batch_size // 5
    params = list(plain.model.parameters())
    assert all(p.requires_grad for p in params)
    with with_eot(with_bpda(plain, modules=["0"]), draws=2).frozen():
        assert not any(p.requires_grad for p in params)
    assert all(p.requires_grad for p in params)


# ---------------------------------------------------------------------------------------------------- EOT
def test_eot_pgd_beats_naive_pgd_on_a_randomized_model(digits_cnn: TorchTarget, xy: tuple) -> None:
    x, y = xy[0][:32], xy[1][:32]
    noisy = _build(digits_cnn, GaussianNoise(sigma=0.3))
    judge = with_eot(noisy, draws=64)  # the expected prediction, over many draws

    def robust(x_adv: torch.Tensor) -> float:
        return float((judge.query_labels(x_adv) == y).float().mean())

    clean = robust(x)
    pgd = PGD(eps=EPS, steps=10)
    naive = robust(pgd(noisy, x, y, draws=1).x_adv)  # declared deterministic: single-draw bookkeeping
    eot = pgd(with_eot(noisy, draws=10), x, y)
    assert clean > 0.85  # measured 0.94
    assert naive > 0.6  # measured 0.78: one draw's gradient, success declared on a lucky draw
    assert robust(eot.x_adv) <= naive - 0.2  # measured 0.41
    assert float((torch.as_tensor(eot.x_adv) - x).abs().max()) <= EPS + 1e-6


def test_adaptive_applies_what_the_probes_find(digits_cnn: TorchTarget, plain: TorchTarget, xy: tuple) -> None:
    x, y = xy[0][:16], xy[1][:16]
    same, notes = adaptive(plain, x)
    assert same is plain and notes == []
    both = _build(digits_cnn, GaussianNoise(0.3), Quantize())
    wrapped, notes = adaptive(both, x, draws=4)
    assert len(notes) == 2 and notes[0].startswith("BPDA") and "1 (Quantize)" in notes[0]
    assert notes[1].startswith("EOT") and "4 draws" in notes[1]
    assert [a.split(":")[0] for a in wrapped.describe()["adaptive"]] == ["bpda", "eot"]
    r = PGD(eps=EPS, steps=5)(wrapped, x, y)
    assert r.robust_accuracy < r.clean_accuracy
    assert _no_hooks(both.model)
    # blockers already handled by a BPDA wrapper are not reported again
    assert find_gradient_blockers(with_bpda(both, modules=["1"]), x) == []


# ---------------------------------------------------------------------------------------------------- errors
def test_bad_parameters_raise_parameter_error(digits_cnn: TorchTarget, quantised: TorchTarget, xy: tuple) -> None:
    x = xy[0][:4]
    not_targets = [
        lambda: with_bpda(digits_cnn.model),  # the bare module, not the target
        lambda: with_eot("model"),
        lambda: adaptive(None, x),
        lambda: find_gradient_blockers(digits_cnn.model, x),
        lambda: is_randomized(object(), x),
    ]
    for fn in not_targets:
        with pytest.raises(ParameterError, match="TorchTarget"):
            fn()
    with pytest.raises(ParameterError, match="draws"):
        with_eot(quantised, draws=0)
    with pytest.raises(ParameterError, match="draws"):
        adaptive(quantised, x, draws=0)
    with pytest.raises(ParameterError, match="reduce"):
        with_eot(quantised, reduce="mean")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="tries"):
        is_randomized(quantised, x, tries=1)
    with pytest.raises(ParameterError, match="no sub-module named 'quant'"):
        with_bpda(quantised, modules=["quant"])
    with pytest.raises(ParameterError, match="modules=None"):
        with_bpda(quantised, modules=[])
    with pytest.raises(ParameterError, match="not a sub-module"):
        with_bpda(quantised, modules=[Quantize()])
    with pytest.raises(ParameterError, match="not among the chosen"):
        with_bpda(quantised, modules=["0"], approx={"2": nn.Identity()})
