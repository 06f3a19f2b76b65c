"""Input-preprocessing defences: what each transform does, the defended system, and the honest adaptive evaluation
(feature squeezing stops naive PGD on the zoo digits CNN; PGD through BPDA breaks it again)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparring import PGD
from sparring.attacks.adaptive import find_gradient_blockers, with_bpda
from sparring.data import Dataset
from sparring.defenses.preprocess import (
    BitDepth,
    JpegCompression,
    MedianSmoothing,
    Preprocessor,
    SpatialSmoothing,
    TotalVariation,
    bpda,
    defend,
)
from sparring.errors import ParameterError
from sparring.targets import InputSpec, TorchTarget

EPS = 0.1


def _energy(z: torch.Tensor) -> float:
    return float((z - z.mean(dim=(2, 3), keepdim=True)).pow(2).sum())


def _rof_objective(z: torch.Tensor, x: torch.Tensor, weight: float) -> float:
    """½‖z − x‖² + λ·TV(z), isotropic, forward differences (what TotalVariation minimises)."""
    gh = nn.functional.pad(z[:, :, 1:] - z[:, :, :-1], (0, 0, 0, 1))
    gw = nn.functional.pad(z[..., 1:] - z[..., :-1], (0, 1))
    return float(0.5 * (z - x).pow(2).sum() + weight * torch.sqrt(gh * gh + gw * gw).sum())


def _salt_and_pepper(x: torch.Tensor, rate: float, seed: int = 0) -> torch.Tensor:
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    out = x.clone()
    out[u < rate / 2] = 0.0
    out[u > 1 - rate / 2] = 1.0
    return out


# ---------------------------------------------------------------------------------------------------- transforms
@pytest.mark.parametrize(
    "make",
    [
        lambda b: BitDepth(2, bounds=b),
        lambda b: MedianSmoothing(2),
        lambda b: MedianSmoothing(3),
        lambda b: SpatialSmoothing(3, mode="mean"),
        lambda b: SpatialSmoothing(4, mode="median"),
        lambda b: JpegCompression(30, bounds=b),
        lambda b: TotalVariation(0.1, steps=10, bounds=b),
    ],
    ids=["bitdepth", "median2", "median3", "mean3", "median4", "jpeg", "tv"],
)
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 2.0)])
def test_every_transform_keeps_the_shape_and_the_bounds(make, bounds: tuple[float, float]) -> None:
    lo, hi = bounds
    x = lo + (hi - lo) * torch.rand(3, 2, 13, 20, generator=torch.Generator().manual_seed(1))  # not multiples of 8
    x[:, :, :4, :4] = lo  # a flat patch
    t = make(bounds)
    out = t(x)
    assert isinstance(t, Preprocessor)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= lo - 1e-6 and float(out.max()) <= hi + 1e-6
    assert t.bpda_approx()(x).shape == x.shape
    assert torch.equal(t(x), out)  # deterministic
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(t(xg).sum(), xg)
    assert bool(torch.isfinite(g).all())  # zero where the transform blocks, never NaN (flat regions included)


def test_bit_depth_rounds_to_two_to_the_bits_levels() -> None:
    x = torch.linspace(0, 1, 1001).reshape(1, 1, 7, 143)
    for bits in (1, 2, 3):
        out = BitDepth(bits)(x)
        levels = torch.linspace(0, 1, 2**bits)
        assert torch.allclose(out.unique(), levels)
        assert float((out - x).abs().max()) <= 0.5 / (2**bits - 1) + 1e-6  # to the nearest level
    assert torch.allclose(BitDepth(1, bounds=(-1.0, 1.0))(torch.tensor([[[[-0.2, 0.3]]]])), torch.tensor([-1.0, 1.0]))


def test_jpeg_at_quality_100_is_close_to_the_identity() -> None:
    x = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    assert float((JpegCompression(100)(x) - x).abs().max()) <= 2 / 255  # coefficient and pixel rounding only
    smooth = torch.linspace(0, 1, 32).expand(1, 1, 32, 32).contiguous()
    assert float((JpegCompression(75)(smooth) - smooth).abs().max()) <= 3 / 255  # low frequencies survive


def test_jpeg_at_low_quality_removes_a_high_frequency_checkerboard() -> None:
    sign = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2 - 1).float()
    x = (0.5 + 0.05 * sign).expand(2, 1, 32, 32)  # a small high-frequency perturbation of mid-grey
    assert _energy(JpegCompression(100)(x)) > 0.9 * _energy(x)
    assert _energy(JpegCompression(20)(x)) < 0.05 * _energy(x)
    assert _energy(JpegCompression(20)(x)) < _energy(JpegCompression(60)(x))


def test_median_filter_removes_salt_and_pepper_noise(digits: Dataset) -> None:
    x = digits.x_test[:16]
    noisy = _salt_and_pepper(x, rate=0.1)
    before = float((noisy - x).abs().mean())
    after = float((MedianSmoothing(3)(noisy) - x).abs().mean())
    assert after < 0.4 * before
    one = torch.zeros(1, 1, 6, 6)
    one[0, 0, 3, 3] = 1.0  # an isolated salt pixel is removed by any median window
    for k in (2, 3):
        assert float(MedianSmoothing(k)(one).abs().max()) == 0.0
    assert float(SpatialSmoothing(3, mode="mean")(one).max()) == pytest.approx(1 / 9)


def test_total_variation_lowers_the_rof_objective_and_the_variation(digits: Dataset) -> None:
    x = _salt_and_pepper(digits.x_test[:8], rate=0.1)
    wide = (-10.0, 10.0)  # no clipping, to compare the objective itself
    objective = [_rof_objective(TotalVariation(0.05, steps=s, bounds=wide)(x), x, 0.05) for s in (1, 5, 30)]
    assert objective[2] < objective[1] < objective[0] < _rof_objective(x, x, 0.05)
    out = TotalVariation(0.05, steps=30)(x)
    def variation(z: torch.Tensor) -> float:
        return float((z[..., 1:] - z[..., :-1]).abs().sum() + (z[:, :, 1:] - z[:, :, :-1]).abs().sum())

    assert variation(out) < 0.8 * variation(x)


# ---------------------------------------------------------------------------------------------------- defend
def test_defend_applies_the_transforms_in_raw_space_before_the_model(digits_cnn: TorchTarget, digits: Dataset) -> None:
    x = digits.x_test[:16]
    squeeze = BitDepth(3)
    defended = defend(digits_cnn, squeeze, MedianSmoothing(2))
    assert defended.spec == digits_cnn.spec and defended.spec.mean is not None  # normalisation stays inside
    assert torch.equal(defended.scores(x), digits_cnn.scores(MedianSmoothing(2)(squeeze(x))))  # exactly
    assert not torch.allclose(defended.scores(x), digits_cnn.scores(x), atol=1e-3)
    assert defended.counter is digits_cnn.counter
    assert [type(m) for m in defended.model.transforms] == [BitDepth, MedianSmoothing]
    assert defended.model.model is digits_cnn.model
    # the audit rebuilds targets from (model, spec): the defended model survives that (up to float rounding, which
    # can move a value lying exactly on a rounding boundary, so compare on random inputs)
    u = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(TorchTarget(defended.model, defended.spec).scores(u), defended.scores(u), atol=1e-4)
    again = defend(defended, JpegCompression(90))
    assert [type(m) for m in again.model.transforms] == [BitDepth, MedianSmoothing, JpegCompression]
    assert torch.equal(again.scores(x), digits_cnn.scores(JpegCompression(90)(MedianSmoothing(2)(squeeze(x)))))


class _ChannelsLast(nn.Module):
    """A linear classifier on (N, 8, 8, 3) images that records what it received."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8 * 8 * 3, 4)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach()
        return self.fc(x.flatten(1))  # type: ignore[no-any-return]


def test_defend_permutes_channels_last_images_for_the_transforms() -> None:
    spec = InputSpec(shape=(8, 8, 3), n_classes=4, layout="hwc", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    net = _ChannelsLast()
    defended = defend(TorchTarget(net, spec), SpatialSmoothing(3, mode="mean"))
    x = torch.rand(2, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    defended.scores(x)
    smoothed = SpatialSmoothing(3, mode="mean")(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
    assert net.seen is not None
    assert torch.allclose(net.seen, (smoothed - mean) / std, atol=1e-5)


def test_bad_parameters_and_targets_raise_parameter_errors(digits_cnn: TorchTarget) -> None:
    bad = [
        lambda: BitDepth(0), lambda: BitDepth(2.5), lambda: MedianSmoothing(1), lambda: JpegCompression(0),
        lambda: JpegCompression(101), lambda: TotalVariation(-0.1), lambda: TotalVariation(0.1, steps=0),
        lambda: SpatialSmoothing(3, mode="max"), lambda: BitDepth(2, bounds=(1.0, 0.0)),
        lambda: defend(digits_cnn), lambda: defend(digits_cnn, "jpeg"), lambda: defend(nn.Identity(), BitDepth(2)),
        lambda: defend(digits_cnn, BitDepth(2, bounds=(-1.0, 1.0))),
        lambda: defend(with_bpda(digits_cnn, modules=[]), BitDepth(2)),
        lambda: bpda(digits_cnn),
    ]
    for make in bad:
        with pytest.raises(ParameterError):
            make()
    tabular = TorchTarget(nn.Linear(4, 2), InputSpec(shape=(4,), n_classes=2, layout="features"))
    with pytest.raises(ParameterError, match="layout"):
        defend(tabular, BitDepth(2))
    with pytest.raises(ParameterError, match=r"\(N, C, H, W\)"):
        MedianSmoothing(2)(torch.rand(3, 8, 8))


# ---------------------------------------------------------------------------------------------------- adaptive
def test_feature_squeezing_stops_naive_pgd_but_falls_to_pgd_through_bpda(
    digits_cnn: TorchTarget, digits: Dataset
) -> None:
    x, y = digits.x_test[:64], digits.y_test[:64]
    squeezers = (BitDepth(3), MedianSmoothing(2))
    defended = defend(digits_cnn, *squeezers)
    pgd = PGD(eps=EPS, steps=20)
    undefended = pgd(digits_cnn, x, y).robust_accuracy
    naive = pgd(defended, x, y).robust_accuracy
    assert [n for n, _ in find_gradient_blockers(defended, x[:16])] == ["transforms.0"]  # the rounding
    adaptive = with_bpda(
        defended, modules=["transforms.0", "transforms.1"],
        approx={f"transforms.{i}": s.bpda_approx() for i, s in enumerate(squeezers)},
    )
    honest = pgd(adaptive, x, y)
    assert defended.accuracy(x, y) >= 0.9
    assert naive >= undefended + 0.5  # the shattered gradient makes the defence look strong (≈0.95 vs ≈0.13)...
    assert honest.robust_accuracy <= undefended + 0.1  # ...until the attack differentiates around it
    assert float((honest.x_adv - x).abs().max()) <= EPS + 1e-6
    assert defended.accuracy(honest.x_adv, y) == pytest.approx(honest.robust_accuracy)  # real, not surrogate, wins


def test_bpda_wraps_every_preprocessor_and_keeps_the_forward_exact(digits_cnn: TorchTarget, digits: Dataset) -> None:
    x = digits.x_test[:16]
    defended = defend(digits_cnn, JpegCompression(50), SpatialSmoothing(3))
    wrapped = bpda(defended)
    assert torch.equal(wrapped.scores(x), defended.scores(x))
    xg = x.clone().requires_grad_(True)
    with wrapped.frozen():
        (g,) = torch.autograd.grad(wrapped.differentiable()(xg).logsumexp(1).sum(), xg)
        xg2 = x.clone().requires_grad_(True)
        out = defended.differentiable()(xg2).logsumexp(1).sum()
        (g_naive,) = torch.autograd.grad(out, xg2, allow_unused=True)
    assert float(g.abs().sum()) > 0
    assert g_naive is None or float(g_naive.abs().sum()) == 0.0  # JPEG's rounding blocks the plain gradient
    assert wrapped.describe()["adaptive"] == ["bpda: transforms.0 (identity), transforms.1 (approx)"]


def test_jpeg_stops_naive_pgd_but_not_pgd_through_bpda(digits_cnn: TorchTarget, digits: Dataset) -> None:
    x, y = digits.x_test[:32], digits.y_test[:32]
    defended = defend(digits_cnn, JpegCompression(50))
    pgd = PGD(eps=EPS, steps=20)
    undefended = pgd(digits_cnn, x, y).robust_accuracy
    assert pgd(defended, x, y).robust_accuracy >= undefended + 0.5
    assert pgd(bpda(defended), x, y).robust_accuracy <= undefended + 0.15

