"""Bound propagation (IBP, CROWN), verification and certified training: sound, exact where they must be, tight."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sparring import PGD, InputSpec, SklearnTarget, TorchTarget, load_digits, zoo
from sparring.data import Dataset
from sparring.data.zoo import train_torch_classifier
from sparring.defenses.certify.bounds import BoundedModel, Residual, crown_bounds, interval_bounds, margin_spec
from sparring.defenses.certify.verify import verify
from sparring.defenses.training.certified import train_certified
from sparring.errors import AccessError, InputSpecError, ParameterError

TOL = 1e-5
Bounds = Callable[..., tuple[Any, Any]]
METHODS = {"ibp": interval_bounds, "crown": crown_bounds}
NORMED = InputSpec(shape=(1, 8, 8), n_classes=10, bounds=(0.0, 1.0), mean=(0.3,), std=(0.4,))


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: see conftest


def _mlp(seed: int = 0, hidden: int = 64) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, 10))


def _cnn(seed: int = 0) -> nn.Sequential:
    """Conv (strided), BatchNorm with non-trivial statistics, a residual block, AvgPool, nested Sequentials."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.Conv2d(8, 8, 3, padding=1))
        net = nn.Sequential(
            nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()), Residual(block), nn.ReLU(),
            nn.AvgPool2d(2), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Identity(), nn.Flatten(),
            nn.Linear(32, 16), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(16), nn.Linear(16, 10),
        )
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                nn.init.uniform_(m.running_mean, -0.5, 0.5)
                nn.init.uniform_(m.running_var, 0.5, 2.0)
                nn.init.uniform_(m.weight, -1.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def digits8() -> Dataset:
    return load_digits(8)


@pytest.fixture(scope="module")
def natural_mlp(digits8: Dataset) -> TorchTarget:
    net = train_torch_classifier(_mlp(), digits8, digits8.spec, epochs=10, seed=0)
    return TorchTarget(net, digits8.spec)


@pytest.fixture(scope="module")
def ibp_mlp(digits8: Dataset) -> TorchTarget:
    net = train_certified(_mlp(), digits8, digits8.spec, eps=0.05, epochs=20, method="ibp", seed=0)
    return TorchTarget(net, digits8.spec)


def _ball_points(x: torch.Tensor, eps: float, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` points per example in the eps-box clipped to [0, 1]: half uniform, half random vertices."""
    u = torch.rand(x.shape[0], n, *x.shape[1:], generator=gen) * 2 - 1
    u[:, n // 2 :] = u[:, n // 2 :].sign()
    return (x[:, None] + eps * u).clamp(0.0, 1.0)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_bounds_contain_random_points_and_pgd_worst_points(digits8: Dataset, arch: str, method: str) -> None:
    target = TorchTarget(_mlp(1), digits8.spec) if arch == "mlp" else TorchTarget(_cnn(1), NORMED)
    x, y, eps = digits8.x_test[:8], digits8.y_test[:8], 0.1
    bound = METHODS[method]
    lb, ub = bound(target, x, eps)
    mlb, mub = bound(target, x, eps, C=margin_spec(y, 10))
    assert bool((lb <= ub).all()) and bool((mlb <= mub).all())
    pts = _ball_points(x, eps, 1250, torch.Generator().manual_seed(0))  # 8 × 1250 = 10 000 points
    with torch.no_grad():
        out = target.scores(pts.reshape(-1, 1, 8, 8)).reshape(8, 1250, 10)
    margins = out.gather(2, y[:, None, None].expand(8, 1250, 1)) - out
    assert bool((out >= lb[:, None] - TOL).all()) and bool((out <= ub[:, None] + TOL).all())
    assert bool((margins >= mlb[:, None] - TOL).all()) and bool((margins <= mub[:, None] + TOL).all())
    adv = PGD(eps=eps, steps=20, loss="margin", early_stop=False)(target, x, y).x_adv
    with torch.no_grad():
        z = target.scores(adv)
    assert bool((z >= lb - TOL).all()) and bool((z <= ub + TOL).all())
    assert bool(((z.gather(1, y[:, None]) - z) >= mlb - TOL).all())
    assert float((ub - lb).max()) < 1e3  # finite, not vacuous


def test_relu_input_bounds_contain_every_pre_activation_and_crown_tightens_ibp(digits8: Dataset) -> None:
    net, x, eps = _cnn(1), digits8.x_test[:8], 0.1
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    bm = BoundedModel(net, NORMED)
    ibp, crown = bm.relu_bounds(lo, hi, "ibp"), bm.relu_bounds(lo, hi, "crown")
    relus = {name: m for name, m in net.named_modules() if isinstance(m, nn.ReLU)}
    assert list(crown) == list(ibp) == list(relus)  # keyed by position, in forward order
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, inp, _out, name=name: seen.__setitem__(name, inp[0]))
             for name, m in relus.items()]
    with torch.no_grad():
        net((_ball_points(x, eps, 1250, torch.Generator().manual_seed(1)).reshape(-1, 1, 8, 8) - 0.3) / 0.4)
    for h in hooks:
        h.remove()
    unstable = {}
    for name, (lb, ub) in crown.items():
        v = seen[name].reshape(8, 1250, *lb.shape[1:])
        assert bool((v >= lb[:, None] - TOL).all()) and bool((v <= ub[:, None] + TOL).all())
        ilb, iub = ibp[name]
        assert bool((lb >= ilb - TOL).all()) and bool((ub <= iub + TOL).all())  # (up to float rounding)
        unstable[name] = (int(((ilb < 0) & (iub > 0)).sum()), int(((lb < 0) & (ub > 0)).sum()))
    assert sum(c for _, c in unstable.values()) < sum(i for i, _ in unstable.values())
    # the first ReLU's input is an affine map of x: its bounds are exact, attained at a corner of the box
    mlp = _mlp(1)
    lin = mlp[1]
    assert isinstance(lin, nn.Linear)
    w = lin.weight.detach()
    for method in ("ibp", "crown"):
        lb, ub = BoundedModel(mlp, digits8.spec).relu_bounds(lo, hi, method)["2"]  # type: ignore[arg-type]
        flo, fhi = lo.flatten(1), hi.flatten(1)
        with torch.no_grad():
            for j in (0, 7, 33):
                assert torch.allclose(lb[:, j], lin(torch.where(w[j] > 0, flo, fhi))[:, j], atol=TOL)
                assert torch.allclose(ub[:, j], lin(torch.where(w[j] > 0, fhi, flo))[:, j], atol=TOL)


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_single_linear_layer_bounds_are_exact_and_attained_at_corners(method: str) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(5, 3)
    target = TorchTarget(nn.Sequential(lin), InputSpec(shape=(5,), n_classes=3, layout="features"))
    x = torch.rand(4, 5)
    lo, hi = (x - 0.3).clamp(0, 1), (x + 0.3).clamp(0, 1)  # the eps-box cut by the bounds [0, 1]
    w = lin.weight.detach()
    c = torch.tensor([[1.0, -1.0, 0.0], [0.0, 2.0, -1.0]])
    lb, ub = METHODS[method](target, x, 0.3)
    clb, cub = METHODS[method](target, x, 0.3, C=c)
    with torch.no_grad():
        for j in range(3):
            assert torch.allclose(lb[:, j], lin(torch.where(w[j] > 0, lo, hi))[:, j], atol=TOL)
            assert torch.allclose(ub[:, j], lin(torch.where(w[j] > 0, hi, lo))[:, j], atol=TOL)
        cw = c @ w
        for s in range(2):
            assert torch.allclose(clb[:, s], lin(torch.where(cw[s] > 0, lo, hi)) @ c[s], atol=TOL)
            assert torch.allclose(cub[:, s], lin(torch.where(cw[s] > 0, hi, lo)) @ c[s], atol=TOL)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(2, 4, 3, stride=2, padding=1),
        nn.Conv2d(2, 4, 3, stride=3, padding=2, dilation=2, groups=2),
        nn.Conv2d(2, 2, 3, padding="same", bias=False),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
    ],
    ids=["strided", "dilated-grouped", "same", "avgpool-ceil"],
)
def test_single_linear_map_of_any_geometry_gets_the_same_exact_bounds_from_ibp_and_crown(layer: nn.Module) -> None:
    """IBP is exact on one linear map (forward conv); CROWN transposes it (conv_transpose2d / vjp): they must agree."""
    torch.manual_seed(0)
    net = nn.Sequential(layer, nn.Flatten())
    x = torch.rand(3, 2, 9, 9)
    ilb, iub = interval_bounds(net, x, 0.1, lower=0.0, upper=1.0)
    clb, cub = crown_bounds(net, x, 0.1, lower=0.0, upper=1.0)
    assert torch.allclose(ilb, clb, atol=TOL) and torch.allclose(iub, cub, atol=TOL)
    with torch.no_grad():
        assert bool((ilb <= net(x) + TOL).all()) and bool((net(x) <= iub + TOL).all())


def test_crown_is_tighter_than_ibp_on_a_trained_mlp_and_best_takes_the_tighter(
    natural_mlp: TorchTarget, digits8: Dataset
) -> None:
    x, y, eps = digits8.x_test[:64], digits8.y_test[:64], 0.02
    ilb, iub = interval_bounds(natural_mlp, x, eps)
    clb, cub = crown_bounds(natural_mlp, x, eps)
    assert float(((cub - clb) <= (iub - ilb) + 1e-6).float().mean()) > 0.9
    best, ibp, crown = (verify(natural_mlp, x, y, eps, method=m) for m in ("best", "ibp", "crown"))
    assert bool((best.margin_lower >= ibp.margin_lower).all()) and bool((best.margin_lower >= crown.margin_lower).all())
    assert torch.equal(best.margin_lower, torch.maximum(ibp.margin_lower, crown.margin_lower))
    assert best.verified_accuracy >= max(ibp.verified_accuracy, crown.verified_accuracy)
    won_crown = best.winner == 2
    assert bool((crown.margin_lower[won_crown] > ibp.margin_lower[won_crown]).all())
    wins = best.wins()
    assert sum(wins.values()) == 64 * 9 and wins["crown"] > wins["ibp"]
    assert best.summary()["wins"] == wins and ibp.winner is None


def test_normalisation_in_the_spec_equals_the_affine_folded_into_the_first_layer(digits8: Dataset) -> None:
    net = _mlp(2)
    mean, std = 0.3, 0.4
    folded = _mlp(2)
    with torch.no_grad():
        first = folded[1]
        assert isinstance(first, nn.Linear)
        first.weight.div_(std)
        first.bias.sub_(first.weight.sum(1) * mean)
    normed = TorchTarget(net, NORMED)
    plain = TorchTarget(folded, digits8.spec)
    x = digits8.x_test[:16]
    for bound in METHODS.values():
        for a, b in zip(bound(normed, x, 0.05), bound(plain, x, 0.05), strict=True):
            assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize(
    ("layers", "name", "where"),
    [
        ([nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 10)], "MaxPool2d", "'2'"),
        ([nn.Flatten(), nn.Sequential(nn.Linear(64, 10), nn.Tanh())], "Tanh", "'1.1'"),
        ([nn.Flatten(), nn.Dropout(0.5).train(), nn.Linear(64, 10)], "Dropout", "training mode"),
        ([nn.Flatten(), Residual(nn.Sequential(nn.Linear(64, 64), nn.GELU())), nn.Linear(64, 10)], "GELU",
         "'1.block.1'"),
    ],
)
def test_unsupported_layer_raises_parameter_error_naming_it(layers: list[nn.Module], name: str, where: str) -> None:
    net = nn.Sequential(*layers)
    x = torch.rand(2, 1, 8, 8)
    for bound in METHODS.values():
        with pytest.raises(ParameterError, match="does not support") as info:
            bound(net, x, 0.1)
        assert name in str(info.value) and where in str(info.value) and "AvgPool2d" in str(info.value)


def test_bad_inputs_raise_typed_errors(natural_mlp: TorchTarget, digits8: Dataset) -> None:
    x, y = digits8.x_test[:4], digits8.y_test[:4]
    with pytest.raises(ParameterError, match="eps"):
        verify(natural_mlp, x, y, -0.1)
    with pytest.raises(ParameterError, match="exceeds the whole input range"):
        interval_bounds(natural_mlp, x, 2.0)
    with pytest.raises(ParameterError, match="method"):
        verify(natural_mlp, x, y, 0.1, method="lp")  # type: ignore[arg-type]
    with pytest.raises(InputSpecError, match="shape"):
        verify(natural_mlp, x.reshape(4, 64), y, 0.1)
    with pytest.raises(ParameterError, match="specification C"):
        crown_bounds(natural_mlp, x, 0.1, C=torch.ones(3, 7))
    with pytest.raises(ParameterError, match="keep the shape"):
        interval_bounds(nn.Sequential(nn.Flatten(), Residual(nn.Linear(64, 8))), x, 0.1)
    sk = zoo.load("breast-cancer-logreg")
    assert isinstance(sk, SklearnTarget)
    with pytest.raises(AccessError, match="TorchTarget"):
        verify(sk, zoo.data("breast-cancer-logreg").x_test[:2], [0, 1], 0.1)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="method"):
        train_certified(_mlp(), digits8, digits8.spec, eps=0.1, epochs=1, method="pgd")
    with pytest.raises(ParameterError, match="warmup"):
        train_certified(_mlp(), digits8, digits8.spec, eps=0.1, epochs=1, warmup=0.6, ramp=0.6)
    with pytest.raises(ParameterError, match="kappa"):
        train_certified(_mlp(), digits8, digits8.spec, eps=0.1, epochs=1, kappa=(1.0, 2.0))
    with pytest.raises(ParameterError, match="MaxPool2d"):
        train_certified(nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 10)), digits8, digits8.spec,
                        eps=0.1, epochs=1)


def test_ibp_training_gives_verified_accuracy_that_pgd_cannot_break(
    natural_mlp: TorchTarget, ibp_mlp: TorchTarget, digits8: Dataset
) -> None:
    x, y, eps = digits8.x_test, digits8.y_test, 0.05
    natural = verify(natural_mlp, x, y, eps, method="ibp")
    trained = verify(ibp_mlp, x, y, eps, method="ibp")
    assert natural.verified_accuracy < 0.05
    assert trained.verified_accuracy > natural.verified_accuracy + 0.4
    for target in (natural_mlp, ibp_mlp):
        res = verify(target, x, y, eps, method="best")
        pgd = PGD(eps=eps, steps=20)(target, x, y)
        assert res.verified_accuracy <= pgd.robust_accuracy <= res.clean_accuracy
        assert not bool((pgd.success & res.verified).any())  # a verified point is never broken
        assert not bool((res.verified & ~res.clean_correct).any())


def test_crown_ibp_training_is_deterministic_updates_batchnorm_and_leaves_global_rng(digits8: Dataset) -> None:
    small = Dataset("digits-8-small", digits8.x_train[:192], digits8.y_train[:192], digits8.x_test[:32],
                    digits8.y_test[:32], NORMED)
    state = torch.random.get_rng_state()
    nets = [train_certified(_cnn(seed), small, NORMED, eps=0.05, epochs=2, method="crown-ibp", warmup=0.0, ramp=1.0,
                            seed=0) for seed in (3, 4)]
    assert torch.equal(state, torch.random.get_rng_state())
    a, b = (n.state_dict() for n in nets)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed -> same weights, whatever the starting ones
    assert float(a["0.1.running_mean"].abs().sum()) > 0  # reset to 0 by reinit, then updated from clean batches
    res = verify(TorchTarget(nets[0], NORMED), small.x_test.numpy(), small.y_test.numpy(), 0.01)
    assert isinstance(res.verified, np.ndarray) and isinstance(res.margin_lower, np.ndarray)
    assert np.isfinite(res.margin_lower[~np.eye(10, dtype=bool)[small.y_test.numpy()]]).all()
