"""The model zoo: real accuracy on held-out data, deterministic training, a cache that heals itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sparring import zoo
from sparring.data.cache import cache_dir
from sparring.errors import ParameterError
from sparring.targets import SklearnTarget, TorchTarget


def test_zoo_lists_its_models() -> None:
    assert {"digits-cnn", "digits-mlp", "breast-cancer-mlp", "breast-cancer-logreg"} <= set(zoo.names())


@pytest.mark.parametrize(
    ("name", "floor"),
    [("digits-cnn", 0.95), ("digits-mlp", 0.93), ("breast-cancer-mlp", 0.95), ("breast-cancer-logreg", 0.95)],
)
def test_zoo_models_reach_real_accuracy_on_held_out_data(name: str, floor: float) -> None:
    target, ds = zoo.load(name), zoo.data(name)
    assert target.accuracy(ds.x_test, ds.y_test) >= floor


def test_sklearn_zoo_model_is_a_scores_target() -> None:
    t = zoo.load("breast-cancer-logreg")
    assert isinstance(t, SklearnTarget)
    p = t.scores(zoo.data("breast-cancer-logreg").x_test[:5])
    assert torch.allclose(p.sum(1), torch.ones(5), atol=1e-5)


def test_tabular_mlp_standardises_inside_the_target() -> None:
    t = zoo.load("breast-cancer-mlp")
    assert isinstance(t, TorchTarget)
    assert t.spec.mean is not None and len(t.spec.mean) == 30


def test_second_load_reads_the_cache_without_training() -> None:
    zoo.load("digits-mlp")
    path = next((cache_dir() / "zoo").glob("digits-mlp-*.pt"))
    mtime = path.stat().st_mtime_ns
    zoo.load("digits-mlp")
    assert path.stat().st_mtime_ns == mtime


def test_corrupted_cache_file_is_detected_and_rebuilt_identically() -> None:
    ref = zoo.load("digits-mlp")
    x = zoo.data("digits-mlp").x_test[:64]
    expected = ref.scores(x)
    path = next((cache_dir() / "zoo").glob("digits-mlp-*.pt"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as after a crash or a full disk
    with pytest.warns(RuntimeWarning, match="corrupted"):
        rebuilt = zoo.load("digits-mlp")
    assert torch.allclose(rebuilt.scores(x), expected, atol=1e-5)  # training is deterministic
    assert path.read_bytes() != data[: len(data) // 2]


def test_tampered_cache_file_fails_its_checksum() -> None:
    zoo.load("digits-mlp")
    path = next((cache_dir() / "zoo").glob("digits-mlp-*.pt"))
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="checksum mismatch"):
        zoo.load("digits-mlp")


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARRING_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SPARRING_CACHE_DIR")
    assert "sparring" in str(cache_dir()) and os.path.isabs(cache_dir())


def test_unknown_zoo_name_lists_the_choices() -> None:
    with pytest.raises(ParameterError, match="digits-cnn"):
        zoo.load("imagenet-resnet")
