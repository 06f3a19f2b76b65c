"""OnnxTarget: an exported model answers like the torch model it came from, and bad models fail early and clearly."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from sparring.errors import AccessError, InputSpecError, ModelLoadError, ParameterError, QueryBudgetExceeded
from sparring.targets.onnx import OnnxTarget
from sparring.targets.spec import Access, InputSpec
from sparring.targets.torch import TorchTarget


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, *, dynamic_batch: bool = True) -> Path:
    """Export with the TorchScript-based exporter (it warns that it is deprecated; the warning is expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, input_names=["x"], output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None,
        )
    return path


@pytest.fixture(scope="module")
def cnn_onnx(digits_cnn: TorchTarget, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(digits_cnn.model, torch.rand(2, 1, 28, 28), tmp_path_factory.mktemp("onnx") / "cnn.onnx")


def linear_double_model(path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 4-feature, 3-class linear model in float64, built directly with onnx.helper."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 3)), rng.normal(size=(3,))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["scores"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.DOUBLE, ["batch", 3])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path, w, b


FEATURES4 = InputSpec(shape=(4,), n_classes=3, bounds=(-3.0, 3.0), layout="features")


# ---------------------------------------------------------------------------------------------- agreement
def test_onnx_target_with_normalisation_matches_torch_target(
    digits_cnn: TorchTarget, cnn_onnx: Path, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits_batch
    assert digits_cnn.spec.mean is not None  # the zoo CNN normalises inside: the ONNX target must too
    target = OnnxTarget(cnn_onnx, digits_cnn.spec)
    assert torch.equal(target.predict(x), digits_cnn.predict(x))
    torch.testing.assert_close(target.scores(x), digits_cnn.scores(x), atol=1e-4, rtol=1e-4)


def test_onnx_target_without_normalisation_differs_from_the_normalised_model(
    digits_cnn: TorchTarget, cnn_onnx: Path, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits_batch
    raw = InputSpec(shape=(1, 28, 28), n_classes=10)
    assert not torch.allclose(OnnxTarget(cnn_onnx, raw).scores(x), digits_cnn.scores(x), atol=1e-3)


def test_onnx_target_loads_from_bytes_and_returns_numpy_for_numpy(
    digits_cnn: TorchTarget, cnn_onnx: Path, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x = digits_batch[0][:16].numpy()
    target = OnnxTarget(cnn_onnx.read_bytes(), digits_cnn.spec, batch_size=5)
    labels = target.predict(x)
    assert isinstance(labels, np.ndarray)
    np.testing.assert_array_equal(labels, digits_cnn.predict(x))
    assert target.counter.used == 16 and target.counter.calls == 4


def test_onnx_target_casts_inputs_to_the_model_dtype(tmp_path: Path) -> None:
    path, w, b = linear_double_model(tmp_path / "linear64.onnx")
    target = OnnxTarget(path, FEATURES4)
    x = torch.linspace(-1, 1, 20, dtype=torch.float32).reshape(5, 4)
    expected = x.double().numpy() @ w + b
    np.testing.assert_allclose(target.scores(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert target.scores(x).dtype == torch.float32


def test_onnx_target_feeds_a_fixed_batch_model_one_batch_at_a_time(
    digits_cnn: TorchTarget, tmp_path: Path, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    path = export_onnx(digits_cnn.model, torch.rand(3, 1, 28, 28), tmp_path / "fixed3.onnx", dynamic_batch=False)
    target = OnnxTarget(path, digits_cnn.spec)
    x = digits_batch[0][:7]  # 3 + 3 + 1 padded to 3
    torch.testing.assert_close(target.scores(x), digits_cnn.scores(x), atol=1e-4, rtol=1e-4)


def test_onnx_target_probabilities_output_and_top_k_view(tmp_path: Path) -> None:
    path, _, _ = linear_double_model(tmp_path / "linear64.onnx")
    target = OnnxTarget(path, FEATURES4, top_k=1, decimals=2)
    p = target.scores(torch.full((3, 4), 0.5))
    assert target.view_output == "probabilities"
    assert int((p > 0).sum(1).max()) == 1


# ---------------------------------------------------------------------------------------------- access and budget
def test_onnx_target_stops_at_budget(cnn_onnx: Path, digits_cnn: TorchTarget) -> None:
    target = OnnxTarget(cnn_onnx, digits_cnn.spec, query_budget=10)
    x = torch.rand(8, 1, 28, 28)
    target.predict(x)
    with pytest.raises(QueryBudgetExceeded, match="8 of 10"):
        target.predict(x)


def test_onnx_target_gives_no_gradients(cnn_onnx: Path, digits_cnn: TorchTarget) -> None:
    with pytest.raises(AccessError, match="at most scores"):
        OnnxTarget(cnn_onnx, digits_cnn.spec, access=Access.GRADIENTS)
    target = OnnxTarget(cnn_onnx, digits_cnn.spec, access=Access.LABELS)
    with pytest.raises(AccessError, match="labels only"):
        target.scores(torch.rand(2, 1, 28, 28))


# ---------------------------------------------------------------------------------------------- bad models
def test_onnx_target_rejects_a_model_for_another_input_shape(cnn_onnx: Path) -> None:
    spec = InputSpec(shape=(1, 32, 32), n_classes=10)
    with pytest.raises(InputSpecError, match=r"\('batch', 1, 28, 28\).*\(N, 1, 32, 32\)"):
        OnnxTarget(cnn_onnx, spec)


def test_onnx_target_rejects_a_model_of_another_rank(cnn_onnx: Path) -> None:
    with pytest.raises(InputSpecError, match=r"\(N, 784\)"):
        OnnxTarget(cnn_onnx, InputSpec(shape=(784,), n_classes=10, layout="features"))


def test_onnx_target_rejects_a_model_with_another_number_of_classes(cnn_onnx: Path) -> None:
    with pytest.raises(InputSpecError, match=r"returns \(1, 10\).*declares 5 classes"):
        OnnxTarget(cnn_onnx, InputSpec(shape=(1, 28, 28), n_classes=5))


def test_onnx_target_rejects_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match=r"random\.onnx is not a valid ONNX model"):
        OnnxTarget(path, FEATURES4)


def test_onnx_target_rejects_a_truncated_file(cnn_onnx: Path, tmp_path: Path, digits_cnn: TorchTarget) -> None:
    data = cnn_onnx.read_bytes()
    path = tmp_path / "half.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"half\.onnx is not a valid ONNX model"):
        OnnxTarget(path, digits_cnn.spec)


def test_onnx_target_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        OnnxTarget(tmp_path / "nope.onnx", FEATURES4)


def test_onnx_target_rejects_a_model_with_two_inputs(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "two.onnx"))
    with pytest.raises(ModelLoadError, match="2 inputs"):
        OnnxTarget(tmp_path / "two.onnx", InputSpec(shape=(3,), n_classes=3, layout="features"))


def test_onnx_target_rejects_unknown_providers(cnn_onnx: Path, digits_cnn: TorchTarget) -> None:
    with pytest.raises(ParameterError, match="NoSuchExecutionProvider"):
        OnnxTarget(cnn_onnx, digits_cnn.spec, providers=["NoSuchExecutionProvider"])


def test_onnx_target_without_onnxruntime_says_how_to_install(
    cnn_onnx: Path, digits_cnn: TorchTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelLoadError, match=r"pip install 'sparring\[onnx\]'"):
        OnnxTarget(cnn_onnx, digits_cnn.spec)


def test_onnx_target_describes_itself(cnn_onnx: Path, digits_cnn: TorchTarget) -> None:
    d = OnnxTarget(cnn_onnx, digits_cnn.spec).describe()
    assert d["kind"] == "OnnxTarget" and d["access"] == "scores" and d["model"] == str(cnn_onnx)
    assert d["providers"] == ["CPUExecutionProvider"] and d["input"] == "x"
