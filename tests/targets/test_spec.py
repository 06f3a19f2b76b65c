"""InputSpec: declared once, validated when built and when data arrive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparring.errors import InputSpecError, LabelError
from sparring.targets import Access, InputSpec

IMG = InputSpec(shape=(1, 4, 4), n_classes=3, bounds=(0.0, 1.0))


def test_valid_batch_passes_through_as_float_tensor() -> None:
    x, y = IMG.validate(np.random.default_rng(0).random((5, 1, 4, 4)), [0, 1, 2, 0, 1])
    assert isinstance(x, torch.Tensor) and x.is_floating_point() and x.shape == (5, 1, 4, 4)
    assert y is not None and y.dtype == torch.long and y.tolist() == [0, 1, 2, 0, 1]


@pytest.mark.parametrize(
    ("x", "fragment"),
    [
        (torch.zeros(2, 1, 5, 5), r"expects \(N, 1, 4, 4\)"),
        (torch.zeros(1, 4, 4), "batch is expected"),
        (torch.zeros(0, 1, 4, 4), "empty"),
        (torch.full((2, 1, 4, 4), float("nan")), "NaN"),
        (torch.full((2, 1, 4, 4), float("inf")), "NaN or inf"),
        (torch.full((2, 1, 4, 4), 255.0), "outside the declared bounds"),
        (torch.full((2, 1, 4, 4), -0.5), "outside the declared bounds"),
        (np.array([[object()]]), "object array"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.complex64), "real numbers"),
    ],
)
def test_bad_inputs_raise_input_spec_error_saying_what_to_fix(x: object, fragment: str) -> None:
    with pytest.raises(InputSpecError, match=fragment):
        IMG.validate(x)  # type: ignore[arg-type]


def test_channels_last_input_gets_a_permute_hint() -> None:
    spec = InputSpec(shape=(3, 8, 8), n_classes=2)
    with pytest.raises(InputSpecError, match=r"permute\(0, 3, 1, 2\)"):
        spec.validate(torch.zeros(2, 8, 8, 3))


@pytest.mark.parametrize(
    ("y", "fragment"),
    [([0, 3], r"valid: 0\.\.2"), ([0, -1], "valid"), ([0], "got 1 labels for 2 inputs"),
     ([0.5, 1.0], "integer"), ([[1, 0, 0], [0, 1, 0]], "one-hot"), ([True, False], "booleans")],
)
def test_bad_labels_raise_label_error(y: object, fragment: str) -> None:
    with pytest.raises(LabelError, match=fragment):
        IMG.validate(torch.zeros(2, 1, 4, 4), y)  # type: ignore[arg-type]


def test_label_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        IMG.validate_labels([7])


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"shape": (0, 4)}, "positive sizes"),
        ({"n_classes": 1}, ">= 2"),
        ({"bounds": (1.0, 0.0)}, "low < high"),
        ({"bounds": (0.0,)}, r"\(low, high\)"),
        ({"layout": "nchw"}, "layout"),
        ({"layout": "chw", "shape": (16,)}, "3-d shape"),
        ({"mean": (0.5,)}, "go together"),
        ({"mean": (0.5, 0.5), "std": (0.2, 0.2)}, "1 or 1 values"),
        ({"mean": (0.5,), "std": (0.0,)}, "std must be > 0"),
        ({"bounds": ([0.0, 0.0], [1.0, 1.0])}, "one per feature"),
        ({"class_names": ("a", "b")}, "2 names for 3 classes"),
    ],
)
def test_invalid_spec_is_refused_when_built(kwargs: dict[str, object], fragment: str) -> None:
    base: dict[str, object] = {"shape": (1, 4, 4), "n_classes": 3}
    with pytest.raises(InputSpecError, match=fragment):
        InputSpec(**{**base, **kwargs})  # type: ignore[arg-type]


def test_per_feature_bounds_are_checked_per_feature() -> None:
    spec = InputSpec(shape=(2,), n_classes=2, layout="features", bounds=([0.0, 10.0], [1.0, 20.0]))
    spec.validate(torch.tensor([[0.5, 15.0]]))
    with pytest.raises(InputSpecError, match="outside"):
        spec.validate(torch.tensor([[0.5, 5.0]]))  # second feature below its own low
    assert spec.range_width == 10.0


def test_normalisation_tensors_broadcast_along_channels() -> None:
    chw = InputSpec(shape=(3, 2, 2), n_classes=2, mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0))
    hwc = InputSpec(shape=(2, 2, 3), n_classes=2, layout="hwc", mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0))
    nc, nh = chw.norm_tensors(), hwc.norm_tensors()
    assert nc is not None and nh is not None
    assert nc[0].shape == (1, 3, 1, 1) and nh[0].shape == (1, 1, 1, 3)


def test_spec_round_trips_through_dict() -> None:
    spec = InputSpec(shape=(3, 2, 2), n_classes=4, bounds=(-1.0, 1.0), mean=(0.0,), std=(0.5,),
                     class_names=("a", "b", "c", "d"))
    assert InputSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(InputSpecError, match="unknown InputSpec keys"):
        InputSpec.from_dict({**spec.to_dict(), "colour": "blue"})


def test_access_levels_are_ordered() -> None:
    assert Access.LABELS < Access.SCORES < Access.GRADIENTS


def test_an_exhausted_budget_names_the_cli_flag_the_yaml_key_and_the_python_argument() -> None:
    from sparring.errors import QueryBudgetExceeded
    from sparring.targets.base import QueryCounter

    counter = QueryCounter(budget=5)
    counter.charge(4)
    with pytest.raises(QueryBudgetExceeded, match=r"--query-budget.*attacker\.query_budget.*budget="):
        counter.charge(2)
