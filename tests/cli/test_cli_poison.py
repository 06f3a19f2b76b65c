"""`sparring poison`, `scan-data` and `scan-model`: poisoned files, scans of a user's model and data, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from sparring.cli import EXIT_INPUT, build_cli
from tests import poison_helpers as H


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def _model_files(tmp_path: Path) -> list[str]:
    """The poisoned 16×16 test model as a state dict + spec + entry point (a user's own model)."""
    torch.save(H.badnets_model().model.state_dict(), tmp_path / "bad.pt")
    (tmp_path / "spec.json").write_text(json.dumps(H.digits().spec.to_dict()), encoding="utf-8")
    return ["--model", str(tmp_path / "bad.pt"), "--spec", str(tmp_path / "spec.json"),
            "--entry-point", "tests.poison_helpers:small_cnn"]


def test_poison_writes_the_poisoned_training_set(tmp_path: Path) -> None:
    out = tmp_path / "p.npz"
    code, stdout, _ = _run("poison", "badnets", "--model", "digits-cnn", "--share", "0.05", "--no-train",
                           "--out", str(out), "--json")
    assert code == 0
    d = json.loads(stdout)
    assert d["n_poisoned"] == 67 and d["target_class"] == 0 and d["trigger"]["kind"] == "patch"
    with np.load(out) as f:
        assert f["x"].shape == (1347, 1, 28, 28) and set(f["y"][f["indices"]].tolist()) == {0}
        assert f["trigger_mask"].sum() == 9


def test_poison_needs_a_torch_zoo_model() -> None:
    code, _, err = _run("poison", "badnets", "--model", "breast-cancer-logreg", "--no-train")
    assert code == EXIT_INPUT and "torch zoo model" in err


def test_scan_data_flags_the_target_class_and_writes_a_cleaned_set(tmp_path: Path) -> None:
    res = H.badnets()
    np.savez(tmp_path / "train.npz", x=res.x.numpy(), y=res.y.numpy())
    code, stdout, _ = _run("scan-data", *_model_files(tmp_path), "--data", str(tmp_path / "train.npz"),
                           "--out", str(tmp_path / "clean.npz"), "--json")
    assert code == 0
    d = json.loads(stdout)
    assert d["scans"]["spectral"]["flagged_classes"] == [0]
    assert d["scans"]["activation-clustering"]["flagged_classes"] == [0]
    with np.load(tmp_path / "clean.npz") as f:
        removed = f["removed"]
        assert len(f["y"]) == len(res.y) - len(removed)
    assert np.isin(res.indices.numpy(), removed).mean() >= 0.8


def test_scan_model_reports_every_label(tmp_path: Path) -> None:
    ds = H.digits()
    np.savez(tmp_path / "test.npz", x=ds.x_test[:50].numpy(), y=ds.y_test[:50].numpy())
    code, stdout, _ = _run("scan-model", *_model_files(tmp_path), "--data", str(tmp_path / "test.npz"), "--n", "50",
                           "--steps", "3")
    assert code == 0 and stdout.count("anomaly index") == 10 and "flagged labels" in stdout
