"""AutoAttack's speed work (issue 16 item 7): the channels-last copy is the same function, APGD-T attacks all its
targets as one batch with per-point early exit, and the cascade reports each component's seconds."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparring.attacks.base import BatchContext
from sparring.attacks.evasion._fast import channels_last_target, fast_layout
from sparring.attacks.evasion.apgd import APGDT
from sparring.attacks.evasion.autoattack import AutoAttack
from sparring.attacks.evasion.fab import FAB
from sparring.targets import InputSpec, TorchTarget


def test_channels_last_copy_is_the_same_function_and_leaves_the_users_model_alone(digits_cnn: TorchTarget,
                                                                                 digits_batch: tuple) -> None:
    x = digits_batch[0][:32]
    before = [p.detach().clone() for p in digits_cnn.model.parameters()]
    fast = channels_last_target(digits_cnn, x)
    assert fast is not digits_cnn and fast.model is not digits_cnn.model
    conv = next(p for p in fast.model.parameters() if p.ndim == 4 and p.shape[1] > 1)  # 1 channel: both layouts
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for p, b in zip(digits_cnn.model.parameters(), before, strict=True):  # the user's model: untouched
        assert torch.equal(p, b) and p.is_contiguous()
    with torch.no_grad():
        assert torch.allclose(fast.query(x), digits_cnn.query(x), atol=1e-4)
    used = digits_cnn.counter.used
    fast.query(x)
    assert digits_cnn.counter.used == used + 32  # one query counter for both
    assert channels_last_target(fast, x) is fast  # converted once


class _LayoutSensitive(nn.Module):
    """A model whose output depends on the memory layout: the copy is not the same function, so it is not used."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3)
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x).mean(dim=(2, 3))
        return self.head(z) + (0.0 if z.is_contiguous() and self.conv.weight.is_contiguous() else 5.0)


def test_channels_last_falls_back_where_the_copy_is_not_the_same_function() -> None:
    spec = InputSpec(shape=(2, 8, 8), n_classes=3)
    sensitive = TorchTarget(_LayoutSensitive(), spec)
    x = torch.rand(4, 2, 8, 8)
    assert channels_last_target(sensitive, x) is sensitive
    mlp = TorchTarget(nn.Sequential(nn.Flatten(), nn.Linear(128, 3)), spec)
    assert channels_last_target(mlp, x) is mlp  # no convolution: nothing to gain

    class NoCopy(_LayoutSensitive):
        def __deepcopy__(self, memo: dict) -> NoCopy:
            raise TypeError("cannot copy")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(x).mean(dim=(2, 3)))

    nocopy = TorchTarget(NoCopy(), spec)
    assert channels_last_target(nocopy, x) is nocopy


def test_fast_layout_is_skipped_on_randomized_models_and_restores_the_target(digits_cnn: TorchTarget,
                                                                             digits_batch: tuple) -> None:
    x = digits_batch[0][:4]
    lo, hi = torch.zeros(1, 1, 1), torch.ones(1, 1, 1)
    ctx = BatchContext(target=digits_cnn, lower=lo, upper=hi, generator=torch.Generator().manual_seed(0))
    with fast_layout(ctx, x):
        assert ctx.target is not digits_cnn
    assert ctx.target is digits_cnn
    rand = BatchContext(target=digits_cnn, lower=lo, upper=hi, generator=torch.Generator(), randomized=True)
    with fast_layout(rand, x):
        assert rand.target is digits_cnn


class _Calls(nn.Module):
    """Counts forward calls in a class attribute, so that the channels-last copy counts into the same place."""

    calls: dict[str, int] = {"n": 0}  # noqa: RUF012

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _Calls.calls["n"] += 1
        out: torch.Tensor = self.inner(x)
        return out


def test_apgdt_attacks_all_targets_as_one_batch_and_is_as_strong(digits_cnn: TorchTarget,
                                                                 digits_batch: tuple) -> None:
    x, y = digits_batch[0][:48], digits_batch[1][:48]
    counts, robust = {}, {}
    for batched in (True, False):
        target = TorchTarget(_Calls(copy.deepcopy(digits_cnn.model)), digits_cnn.spec)
        _Calls.calls["n"] = 0
        r = APGDT(eps=0.06, steps=20, n_target_classes=4, batch_targets=batched)(target, x, y)
        counts[batched], robust[batched] = _Calls.calls["n"], round(r.robust_accuracy * 48)
    # one pass of 20 steps (+ scoring) for all 4 targets instead of 4 passes
    assert counts[True] <= 30 < 60 <= counts[False]
    assert robust[True] <= robust[False] + 1
    assert robust[True] < 48 * 0.9  # it does break points


def test_apgdt_batched_returns_adversarials_and_best_points_within_budget(digits_cnn: TorchTarget,
                                                                         digits_batch: tuple) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    r = APGDT(eps=0.05, steps=15, n_target_classes=9)(digits_cnn, x, y)
    xa = torch.as_tensor(r.x_adv)
    assert float((xa - x).abs().max()) <= 0.05 + 1e-6 and float(xa.min()) >= 0 and float(xa.max()) <= 1
    # adv_pred is the model's real prediction on x_adv, for broken and unbroken points alike
    assert torch.equal(digits_cnn.predict(xa), torch.as_tensor(r.adv_pred))
    assert 0 < r.robust_accuracy < r.clean_accuracy


def test_autoattack_reports_each_components_seconds(digits_cnn: TorchTarget, digits_batch: tuple) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    r = AutoAttack(eps=0.1, steps=5, n_target_classes=2, square_queries=20)(digits_cnn, x, y)
    secs = r.extras["seconds_per_attack"]
    assert list(secs) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert all(v >= 0 for v in secs.values()) and sum(secs.values()) <= r.cost.seconds + 1e-3


@pytest.mark.parametrize("batched", [True, False])
def test_apgdt_on_a_randomized_context_keeps_every_row(digits_cnn: TorchTarget, digits_batch: tuple,
                                                       batched: bool) -> None:
    """No early exit on a randomized model: each point runs every target for every step."""
    x, y = digits_batch[0][:6], digits_batch[1][:6]
    ctx = BatchContext(target=digits_cnn, lower=torch.zeros(1, 1, 1), upper=torch.ones(1, 1, 1),
                       generator=torch.Generator().manual_seed(0), randomized=True)
    APGDT(eps=0.2, steps=4, n_target_classes=3, batch_targets=batched).attack_tensors(ctx, x, y)
    assert ctx.gradients == 6 * 3 * 4


def test_fab_t_attacks_all_targets_as_one_batch_and_is_as_strong(digits_cnn: TorchTarget,
                                                                 digits_batch: tuple) -> None:
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    counts, results = {}, {}
    for batched in (True, False):
        target = TorchTarget(_Calls(copy.deepcopy(digits_cnn.model)), digits_cnn.spec)
        _Calls.calls["n"] = 0
        results[batched] = FAB(eps=0.08, steps=10, targeted=True, n_target_classes=3, batch_targets=batched)(
            target, x, y)
        counts[batched] = _Calls.calls["n"]
    # 10 steps of (gradient + check) for all 3 targets at once, instead of 3 passes
    assert counts[True] <= 25 < 40 <= counts[False]
    rob = {k: round(r.robust_accuracy * 32) for k, r in results.items()}
    assert rob[True] <= rob[False] + 1 and rob[True] < 32 * 0.9
    xa = torch.as_tensor(results[True].x_adv)
    assert float((xa - x).abs().max()) <= 0.08 + 1e-6
    assert torch.equal(digits_cnn.predict(xa), torch.as_tensor(results[True].adv_pred))


def test_fab_t_batched_keeps_the_closest_of_several_rows_of_one_point(digits_cnn: TorchTarget,
                                                                      digits_batch: tuple) -> None:
    """Without early stop and random starts, every row follows the trajectory its pass would: the norm kept per
    point must be the smallest any of its rows found, the passes' minimum over targets (up to rounding)."""
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    kw = {"eps": 0.3, "steps": 10, "targeted": True, "n_target_classes": 3, "early_stop": False}
    batched = FAB(**kw, batch_targets=True)(digits_cnn, x, y)
    passes = FAB(**kw, batch_targets=False)(digits_cnn, x, y)
    nb, np_ = torch.as_tensor(batched.norms), torch.as_tensor(passes.norms)
    ok = torch.as_tensor(batched.success) & torch.as_tensor(passes.success)
    assert int(ok.sum()) >= 8
    assert torch.allclose(nb[ok], np_[ok], rtol=1e-4)


def test_channels_last_leaves_very_large_models_uncopied(digits_cnn: TorchTarget, digits_batch: tuple,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from sparring.attacks.evasion import _fast

    n_params = sum(p.numel() for p in digits_cnn.model.parameters())
    monkeypatch.setattr(_fast, "_MAX_PARAMS", n_params - 1)
    assert channels_last_target(digits_cnn, digits_batch[0][:4]) is digits_cnn
    monkeypatch.setattr(_fast, "_MAX_PARAMS", n_params)
    assert channels_last_target(digits_cnn, digits_batch[0][:4]) is not digits_cnn
