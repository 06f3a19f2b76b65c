"""The `sparring` command: thin, machine-readable, distinct exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sparring import zoo
from sparring.cli import EXIT_BUDGET, EXIT_INPUT, EXIT_MODEL, EXIT_USAGE, build_cli
from sparring.targets import TorchTarget


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def test_attack_json_reports_clean_and_robust_accuracy() -> None:
    code, out, _ = _run("attack", "pgd", "--model", "digits-cnn", "--eps", "0.1", "--n", "32", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["n"] == 32 and d["attack"] == "pgd" and d["params"]["eps"] == 0.1
    assert d["clean_accuracy"] > 0.9 and d["robust_accuracy"] < d["clean_accuracy"]


def test_attack_prints_a_table_by_default() -> None:
    code, out, _ = _run("attack", "fgsm", "--n", "16", "--eps", "0.1")
    assert code == 0 and "robust accuracy" in out and "clean accuracy" in out


def test_attack_on_a_model_file_and_data_file(tmp_path: Path) -> None:
    import torch

    t, ds = zoo.load("digits-mlp"), zoo.data("digits-mlp")
    assert isinstance(t, TorchTarget)
    model_path = tmp_path / "weights.pt"
    torch.save(t.model.state_dict(), model_path)
    (tmp_path / "spec.json").write_text(json.dumps(t.spec.to_dict()))
    np.savez(tmp_path / "d.npz", x=ds.x_test[:20].numpy(), y=ds.y_test[:20].numpy())
    code, out, err = _run("attack", "pgd", "--model", str(model_path), "--spec", str(tmp_path / "spec.json"),
                          "--entry-point", "sparring.data.models:digits_mlp",
                          "--data", str(tmp_path / "d.npz"), "--eps", "0.1", "--json",
                          "--save-adv", str(tmp_path / "adv.npz"))
    assert code == 0, err
    assert json.loads(out)["n"] == 20
    with np.load(tmp_path / "adv.npz") as saved:
        x_adv = saved["x_adv"]
    assert x_adv.shape == (20, 1, 28, 28)
    assert np.abs(x_adv - ds.x_test[:20].numpy()).max() <= 0.1 + 1e-5


def test_targeted_attack_from_the_cli() -> None:
    code, out, _ = _run("attack", "pgd", "--n", "32", "--eps", "0.3", "--steps", "40", "--alpha", "0.02",
                        "--target-class", "3", "--json")
    d = json.loads(out)
    assert code == 0 and d["targeted"] and d["success_rate"] > 0.8 and d["n"] == 32 - d["skipped_target_class"]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["attack", "pgd", "--eps", "5"], EXIT_INPUT, "exceeds the whole input range"),
        (["attack", "pgd", "--eps", "-1"], EXIT_INPUT, ">= 0"),
        (["attack", "fgsm", "--steps", "3"], EXIT_USAGE, "does not apply to fgsm"),
        (["attack", "deepfoool"], EXIT_USAGE, "deepfoool"),
        (["attack", "pgd", "--model", "no-such-model.onnx", "--spec", "x.json"], EXIT_MODEL, ""),
        (["attack", "pgd", "--model", "digits-cnn", "--data", "missing.npz"], EXIT_INPUT, "missing.npz"),
        (["attack", "pgd", "--n", "64", "--query-budget", "10"], EXIT_BUDGET, "budget"),
    ],
)
def test_failures_have_distinct_exit_codes_and_clear_messages(args: list[str], code: int, fragment: str,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if "x.json" in args:
        (tmp_path / "x.json").write_text(json.dumps(zoo.data("digits-cnn").spec.to_dict()))
    got, out, err = _run(*args)
    assert got == code, (out, err)
    assert fragment in err


def test_help_is_everywhere() -> None:
    for args in (["--help"], ["attack", "--help"], ["zoo", "--help"], ["zoo", "list", "--help"]):
        code, out, _ = _run(*args)
        assert code == 0 and "Usage" in out
    assert "Exit codes" in _run("attack", "--help")[1]


def test_zoo_list_names_every_model() -> None:
    code, out, _ = _run("zoo", "list")
    assert code == 0 and all(n in out for n in zoo.names())


def test_black_box_attacks_run_from_the_cli() -> None:
    code, out, err = _run("attack", "square", "--n", "8", "--eps", "0.2", "--n-queries", "200", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["attack"] == "square" and d["robust_accuracy"] <= 0.25 and d["cost"]["gradients"] == 0
    code, out, err = _run("attack", "hopskipjump", "--n", "4", "--norm", "l2", "--eps", "4", "--max-queries", "500",
                          "--json")
    assert code == 0, err
    assert json.loads(out)["cost"]["queries"] <= 4 * 501 + 4


def test_certify_smoothing_json() -> None:
    code, out, _ = _run("certify", "smoothing", "--n", "12", "--n0", "16", "--n-samples", "200", "--radii",
                        "0,0.25,5", "--json")
    assert code == 0
    d = json.loads(out)
    acc = d["certified_accuracy"]
    assert d["norm"] == "l2" and d["n"] == 12 and set(acc) == {"0", "0.25", "5"}
    assert acc["0"] >= acc["0.25"] >= acc["5"] == 0.0  # radius 5 is beyond what 200 samples can certify
    assert acc["0"] > 0.5


def test_certify_bounds_table_and_errors() -> None:
    code, out, _ = _run("certify", "bounds", "--model", "digits-mlp", "--n", "16", "--eps", "0.001,0.05")
    assert code == 0 and "certified accuracy" in out and "0.05" in out
    code, _, err = _run("certify", "bounds", "--model", "digits-cnn", "--n", "4")
    assert code == EXIT_INPUT and "MaxPool2d" in err
    code, _, err = _run("certify", "smoothing", "--radii", "x")
    assert code == EXIT_INPUT and "--radii" in err
