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


@pytest.mark.parametrize("attack,extra", [("square", ["--eps", "0.05", "--n-queries", "1000"]),
                                          ("hopskipjump", ["--norm", "l2", "--eps", "2"])])
def test_black_box_attack_out_of_budget_exits_5_and_counts_unknown_points(attack: str, extra: list[str]) -> None:
    code, out, err = _run("attack", attack, "--n", "16", "--query-budget", "300", *extra, "--json")
    assert code == EXIT_BUDGET, err
    d = json.loads(out)
    assert d["budget_exhausted"] and d["n_unknown"] > 0 and d["robust_accuracy"] < 1.0
    assert d["robust_accuracy"] + d["unknown_rate"] + d["success_rate"] == pytest.approx(1.0)
    assert f"{d['n_unknown']} of 16 points are unknown" in err
    code, out, err = _run("attack", attack, "--n", "16", "--query-budget", "300", *extra)
    assert code == EXIT_BUDGET and "unknown" in out


def test_pgd_on_a_zero_gradient_model_warns_of_gradient_masking(tmp_path: Path) -> None:
    import warnings

    import torch
    from torch import nn

    class Rounded(nn.Module):  # a deterministic model whose input gradient is zero everywhere
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(torch.round(x))

    ds = zoo.data("digits-mlp")
    model = Rounded()
    with torch.no_grad():  # a nearest-class-mean classifier on the rounded pixels: accurate without training
        x, y = torch.round(torch.as_tensor(ds.x_train).flatten(1)), torch.as_tensor(ds.y_train)
        means = torch.stack([x[y == k].mean(0) for k in range(10)])
        model.net[1].weight.copy_(means)
        model.net[1].bias.copy_(-0.5 * means.pow(2).sum(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model).save(str(tmp_path / "m.pt"))
    (tmp_path / "spec.json").write_text(json.dumps({"shape": [1, 28, 28], "n_classes": 10, "bounds": [0, 1]}))
    np.savez(tmp_path / "d.npz", x=ds.x_test[:32].numpy(), y=ds.y_test[:32].numpy())
    args = ["attack", "pgd", "--model", str(tmp_path / "m.pt"), "--spec", str(tmp_path / "spec.json"),
            "--data", str(tmp_path / "d.npz"), "--eps", "0.1"]
    code, out, err = _run(*args, "--json")
    d = json.loads(out)
    assert code == 0 and d["clean_accuracy"] > 0.5 and d["robust_accuracy"] == d["clean_accuracy"]
    attacked = round(d["clean_accuracy"] * 32)  # PGD takes a gradient only at the points correct when clean
    assert "gradient masking" in err and f"exactly zero for {attacked} of 32" in err and d["warnings"]
    code, _, err = _run("attack", "pgd", "--n", "16", "--eps", "0.1")  # a real model gives no such warning
    assert code == 0 and "gradient masking" not in err


def test_attack_text_out_of_budget_exits_5_and_counts_unknown_messages() -> None:
    code, out, err = _run("attack-text", "bad-characters", "--n", "10", "--max-chars", "3", "--query-budget", "14",
                          "--json")
    assert code == EXIT_BUDGET, err
    d = json.loads(out)
    assert d["budget_exhausted"] and d["n_unknown"] > 0 and f"{d['n_unknown']} of 10 messages are unknown" in err
    code, out, err = _run("attack-text", "bad-characters", "--n", "3", "--max-chars", "3")
    assert code == 0 and "n_unknown" in out
