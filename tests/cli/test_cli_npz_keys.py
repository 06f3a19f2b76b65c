"""``--x-key``/``--y-key``: .npz data files whose arrays are not called x and y, on every command that reads data
files; the error for a missing array names the CLI flags (issue 17: hints in the user's own terms)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from sparring import zoo
from sparring.cli import build_cli


def _attack(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), ["attack", "fgsm", "-m", "digits-mlp", "--eps", "0.1", "--n", "40", "--json",
                                         *args])
    return r.exit_code, r.stdout, r.stderr


def test_npz_arrays_under_other_names_are_picked_with_x_key_and_y_key(tmp_path: Path) -> None:
    ds = zoo.data("digits-mlp")
    x, y = ds.x_test[:40].numpy(), ds.y_test[:40].numpy()
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez(tmp_path / "named.npz", images=x, labels=y)
    code, out, err = _attack("--data", str(tmp_path / "plain.npz"))
    assert code == 0, err
    code2, out2, err2 = _attack("--data", str(tmp_path / "named.npz"), "--x-key", "images", "--y-key", "labels")
    assert code2 == 0, err2
    a, b = json.loads(out), json.loads(out2)
    assert (a["clean_accuracy"], a["robust_accuracy"]) == (b["clean_accuracy"], b["robust_accuracy"])
    code3, _, err3 = _attack("--data", str(tmp_path / "named.npz"))
    assert code3 != 0 and "--x-key/--y-key" in err3 and "['images', 'labels']" in err3
    r = CliRunner().invoke(build_cli(), ["certify", "smoothing", "-m", "digits-mlp", "--data",
                                         str(tmp_path / "named.npz"), "--x-key", "images", "--y-key", "labels",
                                         "--n", "4", "--n0", "8", "--n-samples", "32", "--json"])
    assert r.exit_code == 0, r.stderr
