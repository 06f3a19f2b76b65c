"""`sparring universal patch|perturbation`: train on training images, evaluate on held-out ones, save."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from sparring.cli import EXIT_INPUT, build_cli


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def test_universal_perturbation_json_fools_held_out_digits(tmp_path: Path) -> None:
    out = tmp_path / "uap.npz"
    code, stdout, _ = _run("universal", "perturbation", "--eps", "0.2", "--n-train", "256", "--n", "128",
                           "--save", str(out), "--json")
    assert code == 0
    d = json.loads(stdout)
    assert d["attack"] == "universal_perturbation" and d["metrics"]["n"] == 128
    assert d["metrics"]["fooling_rate"] > 0.3  # one perturbation for all 128 held-out digits
    v = np.load(out)["v"]
    assert v.shape == (1, 28, 28) and np.abs(v).max() <= 0.2 + 1e-6
    assert out.with_suffix(".png").stat().st_size > 0


def test_universal_patch_table_and_errors() -> None:
    code, stdout, _ = _run("universal", "patch", "--target-class", "3", "--steps", "3", "--n-train", "64",
                           "--n", "32")
    assert code == 0 and "targeted_success_rate" in stdout and "area_fraction" in stdout
    code, _, err = _run("universal", "patch", "--n-train", "8", "--n", "8")
    assert code == EXIT_INPUT and "--target-class" in err
    code, _, err = _run("universal", "perturbation", "--target-class", "3", "--n-train", "8", "--n", "8")
    assert code == EXIT_INPUT and "untargeted" in err
    code, _, err = _run("universal", "patch", "--target-class", "12", "--steps", "1", "--n-train", "8", "--n", "8")
    assert code == EXIT_INPUT and "target_class" in err
    code, stdout, _ = _run("universal", "patch", "--target-class", "3", "--steps", "2", "--n-train", "16", "--n", "16",
                           "--region", "0.3", "--max-scale", "1.0", "--json")
    d = json.loads(stdout)
    assert code == 0 and d["params"]["region"] == 0.3 and list(d["params"]["scale"]) == [0.8, 1.0]
    assert d["metrics"]["area_fraction"] <= 0.1 + 1e-6  # never above --size at --max-scale 1.0
    code, _, err = _run("universal", "patch", "--target-class", "3", "--steps", "1", "--n-train", "8", "--n", "8",
                        "--region", "1.5")
    assert code == EXIT_INPUT and "region" in err
    code, _, err = _run("universal", "patch", "--target-class", "3", "--steps", "1", "--n-train", "8", "--n", "8",
                        "--max-scale", "0.5")  # below the smallest scale, 0.8
    assert code == EXIT_INPUT and "scale" in err
