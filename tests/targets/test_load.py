"""load_target: every way users keep a model loads into a target that answers like the original; every broken,
mistyped or untrusted file is refused with a typed error that says what was wrong and what to do."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sparring.data import models
from sparring.data.datasets import Dataset, load_breast_cancer
from sparring.errors import InputSpecError, ModelLoadError, ParameterError
from sparring.targets.load import detect_kind, load_spec, load_target
from sparring.targets.onnx import OnnxTarget
from sparring.targets.sklearn import SklearnTarget
from sparring.targets.spec import InputSpec
from sparring.targets.torch import TorchTarget

ENTRY = "sparring.data.models:digits_cnn"


class ClipTransformer(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A custom pipeline step: skops cannot know it is safe, so it is an untrusted type."""

    def fit(self, x: Any, y: Any = None) -> ClipTransformer:
        return self

    def transform(self, x: Any) -> Any:
        return np.clip(x, -1e6, 1e6)


@pytest.fixture(scope="module")
def files(digits_cnn: TorchTarget, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The zoo CNN saved every way a torch user might have it."""
    d = tmp_path_factory.mktemp("models")
    model, example = digits_cnn.model, torch.rand(2, 1, 28, 28)
    out = {
        "torchscript": d / "cnn_script.pt", "torch-export": d / "cnn.pt2", "state-dict": d / "cnn_weights.pt",
        "onnx": d / "cnn.onnx",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch >= 2.10 deprecates TorchScript tracing and saving
        torch.jit.save(torch.jit.trace(model, example), str(out["torchscript"]))
    dyn = ({0: torch.export.Dim("batch")},)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=dyn), str(out["torch-export"]))
    torch.save(model.state_dict(), out["state-dict"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based ONNX exporter is deprecated and says so
        torch.onnx.export(model, (example,), str(out["onnx"]), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    return out


@pytest.fixture(scope="module")
def cancer() -> Dataset:
    return load_breast_cancer()


@pytest.fixture(scope="module")
def sk_files(cancer: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A scikit-learn pipeline on breast cancer saved with skops and joblib, and one with a custom step."""
    d = tmp_path_factory.mktemp("sklearn")
    x, y = cancer.x_train.numpy(), cancer.y_train.numpy()
    plain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    custom = make_pipeline(ClipTransformer(), StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    out: dict[str, Any] = {"model": plain, "custom_model": custom}
    out["skops"], out["joblib"], out["custom"] = d / "lr.skops", d / "lr.joblib", d / "custom.skops"
    sio.dump(plain, out["skops"])
    joblib.dump(plain, out["joblib"])
    sio.dump(custom, out["custom"])
    return out


def truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


# ---------------------------------------------------------------------------------------------- each kind loads
@pytest.mark.parametrize("kind", ["torchscript", "torch-export", "onnx"])
def test_saved_torch_model_loads_and_predicts_like_the_original(
    kind: str, files: dict[str, Path], digits_cnn: TorchTarget, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_batch
    target = load_target(files[kind], spec=digits_cnn.spec)
    assert isinstance(target, OnnxTarget if kind == "onnx" else TorchTarget)
    assert torch.equal(target.predict(x), digits_cnn.predict(x))
    torch.testing.assert_close(target.scores(x), digits_cnn.scores(x), atol=1e-4, rtol=1e-4)
    if isinstance(target, TorchTarget):  # white-box access survives saving
        torch.testing.assert_close(target.loss_gradient(x[:8], y[:8]), digits_cnn.loss_gradient(x[:8], y[:8]))


def test_state_dict_with_entry_point_loads_with_gradients(
    files: dict[str, Path], digits_cnn: TorchTarget, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_batch
    target = load_target(files["state-dict"], spec=digits_cnn.spec, entry_point=ENTRY, query_budget=1000)
    assert isinstance(target, TorchTarget) and target.counter.budget == 1000
    assert torch.equal(target.predict(x), digits_cnn.predict(x))
    torch.testing.assert_close(target.loss_gradient(x[:8], y[:8]), digits_cnn.loss_gradient(x[:8], y[:8]))


def test_state_dict_inside_a_training_checkpoint_loads(
    files: dict[str, Path], digits_cnn: TorchTarget, tmp_path: Path, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": digits_cnn.model.state_dict()}, path)
    target = load_target(path, spec=digits_cnn.spec, entry_point=ENTRY)
    assert torch.equal(target.predict(digits_batch[0]), digits_cnn.predict(digits_batch[0]))


def test_kind_is_read_from_content_not_extension(
    files: dict[str, Path], digits_cnn: TorchTarget, tmp_path: Path, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    script_as_pt2 = tmp_path / "script.pt2"
    script_as_pt2.write_bytes(files["torchscript"].read_bytes())
    export_as_pt = tmp_path / "exported.pt"
    export_as_pt.write_bytes(files["torch-export"].read_bytes())
    onnx_no_ext = tmp_path / "model"
    onnx_no_ext.write_bytes(files["onnx"].read_bytes())
    assert [detect_kind(p) for p in (script_as_pt2, export_as_pt, onnx_no_ext)] == ["torchscript", "torch-export",
                                                                                   "onnx"]
    assert detect_kind(files["state-dict"]) == "torch-save"
    x = digits_batch[0][:16]
    for p in (script_as_pt2, export_as_pt):
        assert torch.equal(load_target(p, spec=digits_cnn.spec).predict(x), digits_cnn.predict(x))


def test_zoo_name_loads_the_zoo_model(digits_batch: tuple[torch.Tensor, torch.Tensor], digits_cnn: TorchTarget) -> None:
    target = load_target("digits-cnn", query_budget=500)
    assert isinstance(target, TorchTarget) and target.counter.budget == 500
    assert torch.equal(target.predict(digits_batch[0]), digits_cnn.predict(digits_batch[0]))
    with pytest.raises(ParameterError, match="has its own spec"):
        load_target("digits-cnn", spec=InputSpec(shape=(1, 28, 28), n_classes=10))


def test_skops_model_loads_and_predicts_like_the_original(sk_files: dict[str, Any], cancer: Dataset) -> None:
    target = load_target(sk_files["skops"], spec=cancer.spec)
    assert isinstance(target, SklearnTarget)
    x = cancer.x_test.numpy()
    np.testing.assert_array_equal(target.predict(x), sk_files["model"].predict(x))
    np.testing.assert_allclose(target.scores(x), sk_files["model"].predict_proba(x), rtol=1e-5, atol=1e-6)


def test_joblib_model_loads_only_when_trusted(sk_files: dict[str, Any], cancer: Dataset) -> None:
    with pytest.raises(ModelLoadError, match=r"arbitrary code.*trust_pickle=True \(--trust-pickle\)"):
        load_target(sk_files["joblib"], spec=cancer.spec)
    target = load_target(sk_files["joblib"], spec=cancer.spec, trust_pickle=True)
    x = cancer.x_test.numpy()
    np.testing.assert_array_equal(target.predict(x), sk_files["model"].predict(x))


def test_skops_with_untrusted_types_is_refused_unless_trusted(sk_files: dict[str, Any], cancer: Dataset) -> None:
    with pytest.raises(ModelLoadError, match=r"test_load\.ClipTransformer.*trust_pickle=True"):
        load_target(sk_files["custom"], spec=cancer.spec)
    target = load_target(sk_files["custom"], spec=cancer.spec, trust_pickle=True)
    x = cancer.x_test.numpy()
    np.testing.assert_array_equal(target.predict(x), sk_files["custom_model"].predict(x))


def test_spec_can_be_a_json_file(files: dict[str, Path], digits_cnn: TorchTarget, tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(digits_cnn.spec.to_dict()))
    assert load_spec(spec_path) == digits_cnn.spec
    described = tmp_path / "described.json"
    described.write_text(json.dumps(digits_cnn.describe()))
    assert load_spec(described) == digits_cnn.spec
    target = load_target(files["onnx"], spec=str(spec_path))
    assert target.spec == digits_cnn.spec


def test_bad_spec_files_raise_input_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(InputSpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{shape: 1")
    with pytest.raises(InputSpecError, match="not valid JSON"):
        load_spec(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 28, 28]")
    with pytest.raises(InputSpecError, match="holds a JSON list"):
        load_spec(tmp_path / "list.json")
    (tmp_path / "keys.json").write_text('{"shape": [4], "n_classes": 2, "colour": "red"}')
    with pytest.raises(InputSpecError, match="unknown InputSpec keys"):
        load_spec(tmp_path / "keys.json")


# ---------------------------------------------------------------------------------------------- bad files
@pytest.mark.parametrize(
    ("kind", "read_as"),
    [
        ("torchscript", r"truncated or corrupted PyTorch archive"),  # the half file holds only weights
        ("torch-export", "truncated or corrupted torch.export archive"),
        ("state-dict", r"truncated or corrupted torch\.save file"),
        ("onnx", "not a valid ONNX model"),
    ],
)
def test_truncated_torch_and_onnx_files_are_refused_naming_the_kind(
    kind: str, read_as: str, files: dict[str, Path], digits_cnn: TorchTarget, tmp_path: Path
) -> None:
    path = truncated(files[kind], tmp_path / f"half_{files[kind].name}")
    entry = ENTRY if kind == "state-dict" else None
    with pytest.raises(ModelLoadError, match=read_as) as info:
        load_target(path, spec=digits_cnn.spec, entry_point=entry)
    assert path.name in str(info.value)


@pytest.mark.parametrize(("key", "read_as"), [("skops", "skops"), ("joblib", "pickle/joblib")])
def test_truncated_sklearn_files_are_refused_naming_the_kind(
    key: str, read_as: str, sk_files: dict[str, Any], cancer: Dataset, tmp_path: Path
) -> None:
    path = truncated(sk_files[key], tmp_path / f"half_{sk_files[key].name}")
    with pytest.raises(ModelLoadError, match=f"truncated or corrupted.*{read_as}|{read_as}.*truncated or corrupted"):
        load_target(path, spec=cancer.spec, trust_pickle=True)


def test_random_bytes_named_onnx_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match=r"model\.onnx is not a valid ONNX model"):
        load_target(path, spec=InputSpec(shape=(4,), n_classes=2, layout="features"))


def test_onnx_for_another_input_shape_is_refused(files: dict[str, Path]) -> None:
    with pytest.raises(InputSpecError, match=r"1, 28, 28.*\(N, 1, 32, 32\)"):
        load_target(files["onnx"], spec=InputSpec(shape=(1, 32, 32), n_classes=10))


def test_export_for_another_input_shape_or_a_fixed_batch_is_refused(
    files: dict[str, Path], digits_cnn: TorchTarget, tmp_path: Path
) -> None:
    with pytest.raises(InputSpecError, match=r"\(N, 1, 28, 28\).*\(N, 1, 32, 32\)"):
        load_target(files["torch-export"], spec=InputSpec(shape=(1, 32, 32), n_classes=10))
    fixed = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(digits_cnn.model, (torch.rand(4, 1, 28, 28),)), str(fixed))
    with pytest.raises(ModelLoadError, match=r"fixed batch size of 4.*dynamic_shapes"):
        load_target(fixed, spec=digits_cnn.spec)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("sparring.data.modelz:digits_cnn", "no module named 'sparring.data.modelz'"),
        ("sparring.data.models:digits_cnm", "has no attribute 'digits_cnm'. Did you mean 'digits_cnn'"),
        ("sparring.data.models.digits_cnn", "must look like 'package.module:callable'"),
        ("sparring.data.models:__all__", "is a list, not a callable"),
        ("sparring.errors:SparringError", "returned a SparringError; it must return a torch.nn.Module"),
        ("json:loads", "calling entry point 'json:loads' with no arguments failed"),
    ],
)
def test_entry_point_mistakes_are_named(
    entry: str, message: str, files: dict[str, Path], digits_cnn: TorchTarget
) -> None:
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_target(files["state-dict"], spec=digits_cnn.spec, entry_point=entry)


def test_state_dict_that_does_not_fit_the_architecture_is_refused(digits_cnn: TorchTarget, tmp_path: Path) -> None:
    wrong_keys = tmp_path / "mlp.pt"
    torch.save(models.digits_mlp().state_dict(), wrong_keys)
    with pytest.raises(ModelLoadError, match=r"missing keys \(6\): \['0\.weight'.*unexpected keys \(4\): \['1\."):
        load_target(wrong_keys, spec=digits_cnn.spec, entry_point=ENTRY)
    wrong_shape = tmp_path / "cnn5.pt"
    torch.save(models.digits_cnn(n_classes=5).state_dict(), wrong_shape)
    with pytest.raises(ModelLoadError, match=r"shape mismatches \(2\): \[.9\.weight: file \(5, 128\) vs model \(10,"):
        load_target(wrong_shape, spec=digits_cnn.spec, entry_point=ENTRY)
    wrapped = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in digits_cnn.model.state_dict().items()}, wrapped)
    with pytest.raises(ModelLoadError, match="strip that prefix"):
        load_target(wrapped, spec=digits_cnn.spec, entry_point=ENTRY)


def test_torch_save_files_are_never_fully_unpickled(digits_cnn: TorchTarget, tmp_path: Path) -> None:
    whole = tmp_path / "whole_model.pt"
    torch.save(models.digits_cnn(), whole)
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        load_target(whole, spec=digits_cnn.spec, entry_point=ENTRY)
    with pytest.raises(ModelLoadError, match=r"entry_point='package\.module:build_fn'"):
        load_target(whole, spec=digits_cnn.spec)


def test_missing_file_and_missing_spec(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        load_target(tmp_path / "absent.onnx", spec=InputSpec(shape=(4,), n_classes=2, layout="features"))
    with pytest.raises(ModelLoadError, match=r"no such file.*Did you mean the zoo model 'digits-cnn'"):
        load_target("digits-cnm")
    for kind in ("onnx", "torchscript", "state-dict"):
        with pytest.raises(ParameterError, match="needs an input spec"):
            load_target(files[kind], entry_point=ENTRY if kind == "state-dict" else None)


def test_unknown_kinds_list_the_supported_ones(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(ModelLoadError, match=r"unknown model kind.*Supported kinds:.*ONNX.*skops"):
        load_target(text, spec=InputSpec(shape=(4,), n_classes=2, layout="features"))
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ModelLoadError, match=r"does not recognise.*Supported kinds"):
        load_target(archive, spec=InputSpec(shape=(4,), n_classes=2, layout="features"))


def test_entry_point_with_a_self_describing_file_is_refused(files: dict[str, Path], digits_cnn: TorchTarget) -> None:
    with pytest.raises(ParameterError, match="carries its own model"):
        load_target(files["onnx"], spec=digits_cnn.spec, entry_point=ENTRY)


def test_sklearn_model_fitted_on_other_features_is_refused(sk_files: dict[str, Any]) -> None:
    spec = InputSpec(shape=(10,), n_classes=2, layout="features", bounds=(-1e4, 1e4))
    with pytest.raises(InputSpecError, match=r"fitted on 30 features.*10 features"):
        load_target(sk_files["skops"], spec=spec)


def test_text_pipeline_without_spec_points_to_attack_text(tmp_path: Path, sk_files: dict[str, Any]) -> None:
    """A user's skops text classifier given to the tensor loader: the error says it is a text model and which
    command takes it; a tabular pipeline's error does not."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["free cash now", "see you at lunch", "win a prize today", "call mom later"]
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, [1, 0, 1, 0])
    sio.dump(pipe, tmp_path / "tox.skops")
    with pytest.raises(ParameterError, match=r"needs an input spec.*text pipeline.*sparring attack-text"):
        load_target(tmp_path / "tox.skops")
    with pytest.raises(ParameterError, match=r"needs an input spec") as info:
        load_target(sk_files["skops"])
    assert "attack-text" not in str(info.value)
