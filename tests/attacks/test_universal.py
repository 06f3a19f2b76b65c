"""Universal attacks trained on digits and measured on held-out digits: the adversarial patch with EOT (Brown et al.
2017) and the universal adversarial perturbation (Moosavi-Dezfooli et al. 2017; SGD variant, Shafahi et al. 2020).

Measured on the zoo digits CNN (train 1,347 / test 450 digits, seed 0, 1 thread):

* Patch, random position / rotation ±20° / brightness ±0.1, evaluated at scale 1 (exact area), target class 3 or 8:
  size 0.1 → 2–6 % targeted success on test digits even after 1,500 steps; 0.3 → 24 %; 0.4 → 57 %; 0.5 → 86 % after
  40 steps, 88–97 % after 150. An optimal 9×9 patch at one fixed position *per image* reaches only 18–51 %: the
  digits fill the frame, so this model resists small patches and the 80 %-at-10 % criterion is out of reach here.
* UAP, L∞ eps 0.2: SGD variant 82 % of test digits fooled after one pass over the training set (about 2 s);
  the paper's DeepFool algorithm 29–56 % at the end of a pass on the full training set (not monotone).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sparring.attacks.norms import Norm, norm_of
from sparring.attacks.universal import PatchResult, UniversalPatch, UniversalPerturbation
from sparring.data import Dataset
from sparring.errors import ParameterError
from sparring.targets import InputSpec, TorchTarget

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: see conftest


@pytest.fixture(scope="module")
def small_patch(digits_cnn: TorchTarget, digits: Dataset) -> PatchResult:
    return UniversalPatch(3, size=0.1, steps=3, batch_size=8).fit(digits_cnn, digits.x_train[:64])


# ------------------------------------------------------------------------------------------------ patch
def test_patch_stays_in_bounds_and_covers_its_size(small_patch: PatchResult, digits: Dataset) -> None:
    r = small_patch
    assert r.patch.shape == (1, 9, 9)  # round(sqrt(0.1 · 784)) pixels a side
    assert float(r.patch.min()) >= 0 and float(r.patch.max()) <= 1
    assert r.side**2 / (28 * 28) == pytest.approx(0.1)
    x = digits.x_test[:64]
    pasted = r.apply(x.numpy(), scale=(1.0, 1.0))
    assert isinstance(pasted, np.ndarray) and pasted.shape == x.shape
    assert pasted.min() >= 0 and pasted.max() <= 1
    # Only the pixels under the patch change: at most the square plus its anti-aliased rim.
    changed = (np.abs(pasted - x.numpy()) > TOL).reshape(64, -1).sum(1)
    assert changed.max() <= (9 + 2) ** 2


def test_patch_area_fraction_matches_size(small_patch: PatchResult, digits_cnn: TorchTarget, digits: Dataset) -> None:
    x, y = digits.x_test[:64], digits.y_test[:64]
    exact = small_patch.evaluate(digits_cnn, x, y, scale=(1.0, 1.0))
    assert exact["area_fraction"] == pytest.approx(0.1, abs=1e-3)
    # Random scales in (0.8, 1.2) cover 0.1 · s² of the image: between 6.4 % and 14.4 %, 10.1 % on average.
    varied = small_patch.evaluate(digits_cnn, x, y)
    assert 0.085 <= varied["area_fraction"] <= 0.12
    assert exact["n"] == 64 and exact["clean_accuracy"] > 0.9


def test_patch_training_counts_queries_freezes_weights_and_is_reproducible(
    small_patch: PatchResult, digits_cnn: TorchTarget, digits: Dataset
) -> None:
    r = small_patch
    assert r.cost.queries == 3 * 8 and r.cost.gradients == 3 * 8
    assert len(r.history["loss"]) == len(r.history["success"]) == 3
    assert all(p.requires_grad for p in digits_cnn.model.parameters())  # restored after training
    again = UniversalPatch(3, size=0.1, steps=3, batch_size=8).fit(digits_cnn, digits.x_train[:64])
    assert torch.equal(again.patch, r.patch)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(torch.as_tensor(r.apply(digits.x_test[:4])), torch.as_tensor(r.apply(digits.x_test[:4])))
    assert not torch.equal(torch.as_tensor(r.apply(digits.x_test[:4], generator=g)), r.apply(digits.x_test[:4]))


def test_trained_patch_turns_held_out_digits_into_the_target_class(
    digits_cnn: TorchTarget, digits: Dataset
) -> None:
    x, y = digits.x_test[:200], digits.y_test[:200]
    untrained = UniversalPatch(3, size=0.5, steps=1, batch_size=32).fit(digits_cnn, digits.x_train)
    trained = UniversalPatch(3, size=0.5, steps=40, batch_size=32).fit(digits_cnn, digits.x_train)
    before = untrained.evaluate(digits_cnn, x, y)["targeted_success_rate"]
    after = trained.evaluate(digits_cnn, x, y)
    assert after["targeted_success_rate"] >= 0.7  # measured 0.86; a random patch of the same size: 0.19
    assert after["targeted_success_rate"] >= before + 0.4
    assert after["area_fraction"] == pytest.approx(0.5, abs=0.05)
    assert trained.history["success"][-1] > trained.history["success"][0]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="digits-cnn resists 10% patches: measured 2-6% targeted success, see above")
def test_patch_covering_a_tenth_reaches_80_percent_targeted_success(digits_cnn: TorchTarget, digits: Dataset) -> None:
    r = UniversalPatch(3, size=0.1).fit(digits_cnn, digits.x_train)
    result = r.evaluate(digits_cnn, digits.x_test, digits.y_test, scale=(1.0, 1.0))
    assert result["area_fraction"] <= 0.1 + 1e-3
    assert result["targeted_success_rate"] >= 0.8


class _ChannelsLast(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x.permute(0, 3, 1, 2))
        return out


def test_patch_on_channels_last_images(digits_cnn: TorchTarget, digits: Dataset) -> None:
    spec = InputSpec(shape=(28, 28, 1), n_classes=10, layout="hwc", mean=(0.2,), std=(0.3,))
    target = TorchTarget(_ChannelsLast(digits_cnn.model), spec)
    x = digits.x_train[:32].permute(0, 2, 3, 1)
    r = UniversalPatch(1, size=0.2, steps=2, batch_size=8).fit(target, x)
    assert r.patch.shape == (1, 13, 13)
    out = r.apply(x, scale=(1.0, 1.0))
    assert out.shape == x.shape
    changed = ((out - x).abs() > TOL).reshape(32, -1).sum(1)
    assert int(changed.min()) >= 0.15 * 784 and int(changed.max()) <= (13 + 2) ** 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0.0}, "size"),
        ({"size": 0.6}, "size"),
        ({"size": True}, "size"),
        ({"target_class": 10}, "target_class"),
        ({"target_class": -1}, "target_class"),
        ({"scale": (1.2, 0.8)}, "scale"),
        ({"scale": (0.0, 1.0)}, "scale"),
        ({"scale": 1.0}, "scale"),
        ({"size": 0.5, "scale": (1.0, 1.5)}, "fit"),
        ({"rotation": 200}, "rotation"),
        ({"brightness": -0.1}, "brightness"),
        ({"steps": 0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"region": 1.5}, "region"),
        ({"region": -0.1}, "region"),
    ],
)
def test_patch_rejects_bad_parameters(
    digits_cnn: TorchTarget, digits: Dataset, kwargs: dict[str, object], match: str
) -> None:
    params: dict[str, object] = {"target_class": 3, **kwargs}
    with pytest.raises(ParameterError, match=match):
        UniversalPatch(**params).fit(digits_cnn, digits.x_train[:8])  # type: ignore[arg-type]


def test_region_zero_always_pastes_at_the_centre(small_patch: PatchResult, digits: Dataset) -> None:
    x = torch.zeros(2, 1, 28, 28)
    fixed = {"scale": (1.0, 1.0), "rotation": 0.0, "brightness": 0.0, "region": 0.0}
    a = small_patch.apply(x, generator=torch.Generator().manual_seed(1), **fixed)
    b = small_patch.apply(x, generator=torch.Generator().manual_seed(2), **fixed)
    assert torch.equal(a, b)  # position no longer random
    anywhere = {**fixed, "region": 1.0}
    c = small_patch.apply(x, generator=torch.Generator().manual_seed(1), **anywhere)
    d = small_patch.apply(x, generator=torch.Generator().manual_seed(2), **anywhere)
    assert not torch.equal(c, d)
    with pytest.raises(ParameterError, match="region"):
        small_patch.apply(x, region=2.0)


def test_patch_needs_images() -> None:
    target = TorchTarget(nn.Linear(6, 3), InputSpec(shape=(6,), n_classes=3, layout="features"))
    with pytest.raises(ParameterError, match="layout"):
        UniversalPatch(0).fit(target, torch.rand(4, 6))


# ----------------------------------------------------------------------------------------- perturbation
def test_sgd_universal_perturbation_fools_most_held_out_digits(digits_cnn: TorchTarget, digits: Dataset) -> None:
    r = UniversalPerturbation(0.2, "linf", method="sgd").fit(digits_cnn, digits.x_train)
    assert float(r.v.abs().max()) <= 0.2 + TOL
    assert r.v.shape == (1, 28, 28)
    result = r.evaluate(digits_cnn, digits.x_test, digits.y_test)
    assert result["fooling_rate"] >= 0.7  # measured 0.82 after one pass
    assert result["error_rate"] >= 0.65 and result["clean_accuracy"] > 0.95
    xa = r.apply(digits.x_test[:16])
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1
    assert float(norm_of(xa - digits.x_test[:16], Norm.LINF).max()) <= 0.2 + TOL


def test_paper_universal_perturbation_fools_held_out_digits(digits_cnn: TorchTarget, digits: Dataset) -> None:
    r = UniversalPerturbation(0.2, "linf", max_iter=2, batch_size=32).fit(digits_cnn, digits.x_train[:128])
    assert float(r.v.abs().max()) <= 0.2 + TOL
    assert len(r.history) >= 1 and r.cost.gradients > 0
    result = r.evaluate(digits_cnn, digits.x_test[:200])
    assert set(result) == {"fooling_rate", "n"}
    assert result["fooling_rate"] >= 0.2  # clean error is 3 %


def test_l2_universal_perturbation_stays_in_its_ball(digits_cnn: TorchTarget, digits: Dataset) -> None:
    r = UniversalPerturbation(3.0, "l2", method="sgd", max_iter=1).fit(digits_cnn, digits.x_train)
    assert float(r.v.norm()) <= 3.0 + TOL
    assert r.evaluate(digits_cnn, digits.x_test)["fooling_rate"] >= 0.3  # measured 0.45 (eps 4: 0.81)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": 2.0}, "eps"),
        ({"norm": "l1"}, "norm"),
        ({"method": "adam"}, "method"),
        ({"max_iter": 0}, "max_iter"),
        ({"delta": 1.5}, "delta"),
        ({"batch_size": 0}, "batch_size"),
        ({"overshoot": -1.0}, "overshoot"),
        ({"deepfool_steps": 0}, "steps"),
        ({"n_candidates": 1}, "n_candidates"),
        ({"lr": 0.0}, "lr"),
        ({"beta": 0.0}, "beta"),
    ],
)
def test_universal_perturbation_rejects_bad_parameters(
    digits_cnn: TorchTarget, digits: Dataset, kwargs: dict[str, object], match: str
) -> None:
    params: dict[str, object] = {"eps": 0.2, **kwargs}
    with pytest.raises(ParameterError, match=match):
        UniversalPerturbation(**params).fit(digits_cnn, digits.x_train[:8])  # type: ignore[arg-type]
