"""BPDA from the graph itself (Athalye, Carlini, Wagner 2018, section 4.1) on models saved by the test the way users
ship them — TorchScript scripted and traced, torch.export — whose non-differentiable step is an operation inside
``forward`` (input quantisation at several levels, sign and threshold activations, JPEG-like block rounding).

Each is checked against a hand-written straight-through reference: the same defence written as
``out.detach() + (s - s.detach())`` in plain PyTorch, attacked by the same PGD."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparring import PGD
from sparring.attacks.adaptive import adaptive, find_gradient_blockers, find_graph_blockers, with_graph_bpda
from sparring.data import Dataset
from sparring.errors import ParameterError
from sparring.targets import TorchTarget, load_target

pytestmark = pytest.mark.usefixtures("one_thread")
N, EPS = 64, 0.1


def _st(out: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """The hand-written straight-through estimator: ``out`` in value, the identity of ``src`` in gradient."""
    return out.detach() + (src - src.detach())


def quantise(levels: int, st: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    def f(x: torch.Tensor) -> torch.Tensor:
        s = x * (levels - 1)
        r = torch.round(s)
        return (_st(r, s) if st else r) / (levels - 1)

    return f


def threshold(st: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    def f(x: torch.Tensor) -> torch.Tensor:
        b = (x > 0.5).float()
        return _st(b, x) if st else b

    return f


def sign(st: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    def f(x: torch.Tensor) -> torch.Tensor:
        s = x - 0.5
        g = torch.sign(s)
        return ((_st(g, s) if st else g) + 1) / 2

    return f


def jpeg_like(st: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Round the 4×4 block means (the low frequencies) to 8 levels, keep the detail: a JPEG-like lossy step."""

    def f(x: torch.Tensor) -> torch.Tensor:
        low = F.avg_pool2d(x, 4)
        s = low * 7
        r = torch.round(s)
        q = (_st(r, s) if st else r) / 7
        return (x - F.interpolate(low, scale_factor=4.0) + F.interpolate(q, scale_factor=4.0)).clamp(0, 1)

    return f


class Defended(nn.Module):
    """The zoo CNN behind a defence on raw pixels; takes normalised inputs as the zoo spec expects."""

    def __init__(self, cnn: nn.Module, defence: Callable[[torch.Tensor], torch.Tensor], mean: float,
                 std: float) -> None:
        super().__init__()
        self.cnn = cnn
        self.defence = defence
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = x * self.std + self.mean
        return self.cnn((self.defence(raw) - self.mean) / self.std)  # type: ignore[no-any-return]


def _saved(tmp_path: Path, model: nn.Module, fmt: str, example: torch.Tensor) -> Path:
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is how many users ship models
        warnings.simplefilter("ignore", DeprecationWarning)
        if fmt == "export":
            path = tmp_path / "model.pt2"
            ep = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
            torch.export.save(ep, str(path))
            return path
        path = tmp_path / "model.pt"
        if fmt == "script":
            torch.jit.script(model).save(str(path))
        else:
            torch.jit.trace(model, example).save(str(path))
        return path


DEFENCES: dict[str, Callable[[bool], Callable[[torch.Tensor], torch.Tensor]]] = {
    "quantise-4": lambda st: quantise(4, st), "quantise-8": lambda st: quantise(8, st),
    "quantise-16": lambda st: quantise(16, st), "threshold": threshold, "sign": sign, "jpeg-like": jpeg_like,
}
CASES = [("quantise-4", "script"), ("quantise-8", "trace"), ("quantise-16", "export"), ("threshold", "export"),
         ("sign", "script"), ("jpeg-like", "trace")]


class Quantise(nn.Module):
    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)


class Threshold(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0.5).float()


class Sign(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.sign(x - 0.5) + 1) / 2


class JpegLike(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.avg_pool2d(x, 4)
        q = torch.round(low * 7) / 7
        return (x - F.interpolate(low, scale_factor=4.0) + F.interpolate(q, scale_factor=4.0)).clamp(0, 1)


USER: dict[str, Callable[[], nn.Module]] = {
    "quantise-4": lambda: Quantise(4), "quantise-8": lambda: Quantise(8), "quantise-16": lambda: Quantise(16),
    "threshold": Threshold, "sign": Sign, "jpeg-like": JpegLike,
}
"""The defences as users write them: one operation inside forward, nothing to hook."""


def _models(digits_cnn: TorchTarget, name: str) -> tuple[nn.Module, nn.Module]:
    spec = digits_cnn.spec
    assert spec.mean is not None and spec.std is not None
    m, s = spec.mean[0], spec.std[0]
    user = Defended(digits_cnn.model, USER[name](), m, s).eval()
    reference = Defended(digits_cnn.model, DEFENCES[name](True), m, s).eval()
    return user, reference


@pytest.mark.parametrize(("defence", "fmt"), CASES)
def test_graph_bpda_on_saved_models_matches_a_hand_written_straight_through_pgd(
    tmp_path: Path, digits_cnn: TorchTarget, digits: Dataset, defence: str, fmt: str
) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    user, reference = _models(digits_cnn, defence)
    target = load_target(_saved(tmp_path, user, fmt, digits.x_test[:4]), spec=digits_cnn.spec)
    assert isinstance(target, TorchTarget)
    ref = TorchTarget(reference, digits_cnn.spec)
    assert torch.equal(ref.query(x), target.query(x))  # the reference is the same function in value
    xg = x.clone().requires_grad_(True)
    with target.frozen():
        out = target.differentiable("test")(xg)
        naive_grad = torch.autograd.grad(out.sum(), xg, allow_unused=True)[0] if out.requires_grad else None
    masked = naive_grad is None or float(naive_grad.abs().sum()) == 0  # what a naive attack sees
    assert masked == (defence != "jpeg-like")  # the JPEG-like step keeps the detail's gradient, only that
    assert find_gradient_blockers(target, x[:16]) == []  # no module to hook (and no crash on TorchScript)

    found = find_graph_blockers(target, x[:16])
    assert found and all(b.graph == ("fx" if fmt == "export" else "torchscript") for b in found)
    wrapped = with_graph_bpda(target, x=x[:16])
    xg = x[:16].clone().requires_grad_(True)
    assert torch.equal(wrapped.differentiable("test")(xg), target.query(x[:16]))  # forward unchanged
    assert torch.allclose(wrapped.loss_gradient(x, y), ref.loss_gradient(x, y), atol=1e-5)

    pgd = PGD(eps=EPS, steps=10)
    # no gradient: PGD cannot move from x (and PGD refuses an output detached from its input)
    naive = float((target.predict(x) == y).float().mean()) if masked else pgd(target, x, y).robust_accuracy
    ours = pgd(wrapped, x, y)
    by_hand = pgd(ref, x, y).robust_accuracy
    assert abs(ours.robust_accuracy - by_hand) <= 0.02
    assert ours.robust_accuracy <= naive - (0.2 if masked else 0.0)
    assert torch.equal(target.predict(ours.x_adv), torch.as_tensor(ours.adv_pred))  # the success is real


def test_adaptive_uses_the_graph_rewrite_and_leaves_the_model_untouched(
    tmp_path: Path, digits_cnn: TorchTarget, digits: Dataset
) -> None:
    x = digits.x_test[:16]
    user, _ = _models(digits_cnn, "quantise-8")
    target = load_target(_saved(tmp_path, user, "script", digits.x_test[:4]), spec=digits_cnn.spec)
    assert isinstance(target, TorchTarget)
    before = str(target.model.inlined_graph)
    wrapped, notes = adaptive(target, x)
    assert notes and notes[0].startswith("BPDA (graph)") and "round" in notes[0]
    assert wrapped.counter is target.counter
    assert str(target.model.inlined_graph) == before  # the user's graph is copied, never edited
    assert wrapped.describe()["adaptive"][0].startswith("bpda-graph")


def test_with_graph_bpda_refuses_a_model_without_a_rewritable_step(digits_cnn: TorchTarget) -> None:
    with pytest.raises(ParameterError, match="no non-differentiable operation"):
        with_graph_bpda(digits_cnn)
