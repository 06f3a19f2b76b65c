"""TorchTarget: eval mode, device follows the model, frozen weights restored, normalisation inside."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sparring import PGD
from sparring.errors import AccessError, InputSpecError, ParameterError, QueryBudgetExceeded
from sparring.targets import Access, InputSpec, TorchTarget

SPEC = InputSpec(shape=(4,), n_classes=3, layout="features")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_normalisation_is_applied_inside_the_target() -> None:
    net = _net()
    spec = InputSpec(shape=(4,), n_classes=3, layout="features", mean=(0.5,), std=(0.25,))
    x = torch.rand(6, 4)
    assert torch.allclose(TorchTarget(net, spec).scores(x), net((x - 0.5) / 0.25))


def test_numpy_in_gives_numpy_out_and_tensor_in_gives_tensor_out() -> None:
    t = TorchTarget(_net(), SPEC)
    x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    assert isinstance(t.predict(x), np.ndarray)
    assert isinstance(t.scores(torch.from_numpy(x)), torch.Tensor)


def test_target_puts_model_in_eval_mode_and_frozen_restores_weights_state() -> None:
    net = _net().train()
    t = TorchTarget(net, SPEC)
    assert not net.training
    net.train()
    with t.frozen():
        assert not net.training
        assert all(not p.requires_grad for p in net.parameters())
    assert net.training and all(p.requires_grad for p in net.parameters())


def test_attack_leaves_weights_untouched_and_requires_grad_restored(digits_cnn: TorchTarget,
                                                                     digits_batch: tuple) -> None:
    before = [p.detach().clone() for p in digits_cnn.model.parameters()]
    PGD(eps=0.1, steps=3)(digits_cnn, digits_batch[0][:16], digits_batch[1][:16])
    for b, p in zip(before, digits_cnn.model.parameters(), strict=True):
        assert torch.equal(b, p) and p.requires_grad and p.grad is None


def test_loss_gradient_matches_autograd() -> None:
    net = _net()
    t = TorchTarget(net, SPEC)
    x, y = torch.rand(3, 4), torch.tensor([0, 1, 2])
    xr = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(net(xr), y, reduction="sum").backward()
    assert torch.allclose(t.loss_gradient(x, y), xr.grad)


def test_wrong_output_width_is_caught_at_construction() -> None:
    with pytest.raises(InputSpecError, match="n_classes"):
        TorchTarget(_net(), InputSpec(shape=(4,), n_classes=5, layout="features"))


def test_wrong_input_shape_is_caught_at_construction() -> None:
    with pytest.raises(InputSpecError, match="declared shape"):
        TorchTarget(_net(), InputSpec(shape=(7,), n_classes=3, layout="features"))


def test_non_module_is_refused() -> None:
    with pytest.raises(ParameterError, match=r"torch\.nn\.Module"):
        TorchTarget(lambda x: x, SPEC)  # type: ignore[arg-type]


def test_restricted_access_blocks_gradients_and_names_alternatives() -> None:
    t = TorchTarget(_net(), SPEC, access=Access.SCORES)
    with pytest.raises(AccessError, match="needs gradients") as err:
        PGD(eps=0.1)(t, torch.rand(2, 4), [0, 1])
    assert "scores" in str(err.value)
    assert t.scores(torch.rand(2, 4)).shape == (2, 3)  # scores still work


def test_labels_only_target_refuses_scores() -> None:
    t = TorchTarget(_net(), SPEC, access=Access.LABELS)
    with pytest.raises(AccessError):
        t.scores(torch.rand(2, 4))
    assert t.predict(torch.rand(2, 4)).shape == (2,)


def test_top_k_and_rounding_views_hide_information() -> None:
    t = TorchTarget(_net(), SPEC, top_k=1, decimals=1)
    s = t.scores(torch.rand(10, 4))
    assert t.access == Access.SCORES  # a filtered view has no gradients
    assert ((s > 0).sum(1) <= 1).all()
    assert torch.allclose(s, torch.round(s, decimals=1))


def test_query_budget_refuses_the_batch_that_would_cross_it() -> None:
    t = TorchTarget(_net(), SPEC, query_budget=10, batch_size=4)
    t.scores(torch.rand(8, 4))
    with pytest.raises(QueryBudgetExceeded, match="8 of 10"):
        t.scores(torch.rand(4, 4))
    assert t.counter.used == 8 and t.counter.remaining == 2


def test_batches_are_split_by_batch_size() -> None:
    t = TorchTarget(_net(), SPEC, batch_size=3)
    t.predict(torch.rand(10, 4))
    assert t.counter.calls == 4 and t.counter.used == 10


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"top_k": 9}, {"decimals": -1}, {"output": "softmax"}])
def test_bad_target_options_raise_parameter_error(bad: dict[str, object]) -> None:
    with pytest.raises(ParameterError):
        TorchTarget(_net(), SPEC, **bad)  # type: ignore[arg-type]
