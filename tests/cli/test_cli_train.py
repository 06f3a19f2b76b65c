"""`sparring train`: robust training from the command line, with checkpoints that resume to the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sparring import zoo
from sparring.cli import EXIT_INPUT, build_cli
from sparring.data.models import digits_mlp

ENTRY = "sparring.data.models:digits_mlp"


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A user's model as files: (untrained) digits-mlp weights, its spec, 256 training and 64 test digits."""
    d = tmp_path_factory.mktemp("user-model")
    ds = zoo.data("digits-mlp")
    torch.save(digits_mlp().state_dict(), d / "w.pt")
    (d / "spec.json").write_text(json.dumps(zoo.entry("digits-mlp").spec().to_dict()))
    np.savez(d / "d.npz", x=ds.x_train[:256].numpy(), y=ds.y_train[:256].numpy())
    np.savez(d / "test.npz", x=ds.x_test[:64].numpy(), y=ds.y_test[:64].numpy())
    return {"model": str(d / "w.pt"), "spec": str(d / "spec.json"), "data": str(d / "d.npz"),
            "test": str(d / "test.npz")}


def _user_args(f: dict[str, str], *extra: str) -> list[str]:
    return ["train", "--model", f["model"], "--entry-point", ENTRY, "--spec", f["spec"], "--data", f["data"],
            "--steps", "2", "--no-progress", "--json", *extra]


def test_train_a_zoo_architecture_reports_history_and_writes_loadable_weights(
    model_files: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "fast.pt"
    code, text, err = _run("train", "--model", "digits-mlp", "--method", "fast-fgsm", "--epochs", "2",
                           "--eval-n", "64", "--out", str(out), "--no-progress", "--json")
    assert code == 0, err
    s = json.loads(text)
    assert [e["epoch"] for e in s["history"]] == [1, 2] and s["entry_point"] == ENTRY
    assert s["clean_accuracy"] > 0.8 and s["history"][-1]["robust_accuracy"] is not None
    code, text, err = _run("attack", "pgd", "--model", str(out), "--spec", s["spec"], "--entry-point", ENTRY,
                           "--data", model_files["test"], "--eps", "0.1", "--n", "64", "--json")
    assert code == 0, err
    assert abs(json.loads(text)["clean_accuracy"] - s["clean_accuracy"]) < 1e-9  # the same 64 test digits


def test_resume_after_an_interruption_gives_the_weights_of_an_uninterrupted_run(
    model_files: dict[str, str], tmp_path: Path
) -> None:
    common = ("--method", "trades", "--beta", "3", "--schedule", "constant")
    straight = tmp_path / "straight.pt"
    assert _run(*_user_args(model_files, *common, "--epochs", "2", "--out", str(straight)))[0] == 0
    split = tmp_path / "split.pt"
    assert _run(*_user_args(model_files, *common, "--epochs", "1", "--out", str(split)))[0] == 0  # "killed" here
    code, text, err = _run(*_user_args(model_files, *common, "--epochs", "2", "--out", str(split), "--resume"))
    assert code == 0, err
    assert json.loads(text)["resumed_from"] == 1
    a, b = torch.load(straight, weights_only=True), torch.load(split, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_noise_training_of_a_model_file(model_files: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "noise.pt"
    code, text, err = _run(*_user_args(model_files, "--method", "noise", "--sigma", "0.25", "--epochs", "2",
                                       "--reinit", "--out", str(out)))
    assert code == 0, err
    s = json.loads(text)
    assert s["params"]["sigma"] == 0.25 and Path(s["spec"]).exists()
    before = torch.load(model_files["model"], weights_only=True)
    after = torch.load(out, weights_only=True)
    assert not torch.equal(before["1.weight"], after["1.weight"])


def test_bad_requests_exit_with_the_input_code(model_files: dict[str, str], tmp_path: Path) -> None:
    out = str(tmp_path / "x.pt")
    code, _, err = _run(*_user_args(model_files, "--method", "noise", "--resume", "--out", out))
    assert code == EXIT_INPUT and "resume" in err
    code, _, err = _run("train", "--model", model_files["model"], "--entry-point", ENTRY, "--spec",
                        model_files["spec"], "--out", out)
    assert code == EXIT_INPUT and "--data" in err
    code, _, err = _run("train", "--model", "breast-cancer-logreg", "--out", out)
    assert code == EXIT_INPUT and "torch" in err
    code, _, err = _run("train", "--model", "digits-mlp", "--data", model_files["data"], "--out", out)
    assert code == EXIT_INPUT and "drop --data" in err
    code, _, err = _run("train", "--model", "digits-mlp", "--eps", "-1", "--epochs", "1", "--out", out)
    assert code == EXIT_INPUT and "eps" in err
