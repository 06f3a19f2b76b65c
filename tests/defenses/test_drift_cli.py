"""`sparring drift REFERENCE CURRENT`: real digits and breast-cancer files, JSON and HTML out, documented exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sparring.cli import EXIT_GATE, EXIT_INPUT, build_cli
from sparring.data import load_breast_cancer, load_digits
from sparring.defenses.detect.drift.report import drift_report, read_samples

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """8×8 digits: a 600-row reference, 300 held-out rows, the held-out rows with noise (sd 0.2), and 300 rows
    whose second half has classes 0-4 knocked out (a shift that starts mid-file)."""
    ds = load_digits(size=8)
    x = np.concatenate([ds.x_train.numpy(), ds.x_test.numpy()]).reshape(-1, 64).astype(np.float64)
    y = np.concatenate([ds.y_train.numpy(), ds.y_test.numpy()])
    p = np.random.default_rng(0).permutation(len(x))
    ref, held, rest = p[:600], p[600:900], p[900:]
    noisy = np.clip(x[held] + 0.2 * np.random.default_rng(1).standard_normal((300, 64)), 0, 1)
    later = np.r_[rest[:150], rest[150:][y[rest[150:]] >= 5][:150]]
    d = tmp_path_factory.mktemp("drift")
    files = {"ref": d / "ref.npz", "held": d / "held.npz", "noisy": d / "noisy.npz", "later": d / "later.npz"}
    np.savez(files["ref"], x=x[ref], y=y[ref])
    np.savez(files["held"], x=x[held])
    np.savez(files["noisy"], x=noisy)
    np.savez(files["later"], x=x[later])
    return files


def test_no_drift_on_held_out_digits_and_drift_on_noise_with_json(digit_files: dict[str, Path]) -> None:
    code, out, _ = _run("drift", str(digit_files["ref"]), str(digit_files["held"]), "--json",
                        "--n-permutations", "100")
    assert code == 0
    d = json.loads(out)
    assert d["drift"] is False and d["result"]["method"] == "mmd" and d["result"]["n_current"] == 300
    assert d["result"]["p_value"] >= 0.05 and len(d["features"]) == 64
    code, out, _ = _run("drift", str(digit_files["ref"]), str(digit_files["noisy"]), "--json",
                        "--n-permutations", "100", "--fail-on-drift")
    assert code == EXIT_GATE
    d = json.loads(out)
    assert d["drift"] is True and d["result"]["p_value"] < 0.05
    code, _, _ = _run("drift", str(digit_files["ref"]), str(digit_files["held"]), "--n-permutations", "100",
                      "--fail-on-drift")
    assert code == 0  # no drift, so --fail-on-drift does not fire


def test_windows_find_a_shift_that_starts_mid_file_and_html_is_written(digit_files: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    code, out, _ = _run("drift", str(digit_files["ref"]), str(digit_files["later"]), "--method", "lsdd",
                        "--window", "75", "--n-permutations", "100", "--out", str(tmp_path / "rep"))
    assert code == 0 and "windows of 75:" in out
    d = json.loads((tmp_path / "rep" / "drift.json").read_text())
    flags = [w["drift"] for w in d["windows"]]
    assert flags[2:] == [True, True], flags  # the knockout half (rows 150-299)
    assert sum(flags[:2]) <= 1, flags
    page = (tmp_path / "rep" / "drift.html").read_text()
    assert "<svg" in page and "statistic per window" in page and "DRIFT" in page


def test_csv_with_a_label_column_and_per_feature_tests(tmp_path: Path) -> None:
    bc = load_breast_cancer()
    x = np.concatenate([bc.x_train.numpy(), bc.x_test.numpy()]).astype(np.float64)
    y = np.concatenate([bc.y_train.numpy(), bc.y_test.numpy()])
    header = ",".join([f"f{j}" for j in range(30)] + ["label"])
    ref, cur = tmp_path / "ref.csv", tmp_path / "cur.csv"
    np.savetxt(ref, np.c_[x[:300], y[:300]], delimiter=",", header=header, comments="")
    shifted = x[300:].copy()
    shifted[:, 0] = shifted[:, 0] * 1.5  # one feature rescaled (a unit change upstream)
    np.savetxt(cur, np.c_[shifted, y[300:]], delimiter=",", header=header, comments="")
    assert read_samples(ref).shape == (300, 30)  # the label column is left out
    code, out, _ = _run("drift", str(ref), str(cur), "--method", "ks", "--correction", "fdr", "--json")
    d = json.loads(out)
    assert code == 0 and d["drift"] is True
    flagged = [f["feature"] for f in d["features"] if f["drift"]]
    assert flagged[0] == 0 and len(flagged) <= 3, flagged


def test_bad_files_exit_3_with_the_reason(digit_files: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros((50, 10)))
    code, _, err = _run("drift", str(digit_files["ref"]), str(other))
    assert code == EXIT_INPUT and "64 features per example and current 10" in err
    nan = tmp_path / "nan.npz"
    arr = np.random.default_rng(0).random((40, 64))
    arr[7, 3] = np.nan
    np.savez(nan, x=arr)
    code, _, err = _run("drift", str(digit_files["ref"]), str(nan))
    assert code == EXIT_INPUT and "NaN" in err
    code, _, err = _run("drift", str(digit_files["ref"]), str(tmp_path / "missing.npz"))
    assert code == EXIT_INPUT and "not found" in err
    code, _, err = _run("drift", str(digit_files["ref"]), str(digit_files["held"]), "--window", "500")
    assert code == EXIT_INPUT and "longer than the current sample" in err
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n1,2\n3,red\n")
    code, _, err = _run("drift", str(bad_csv), str(bad_csv))
    assert code == EXIT_INPUT and "'red', not a number" in err
    code, _, err = _run("drift", str(digit_files["ref"]), str(digit_files["held"]), "--key", "nope")
    assert code == EXIT_INPUT and "no array 'nope'" in err


def test_drift_report_is_the_library_call_behind_the_command() -> None:
    g = np.random.default_rng(3)
    a, b = g.standard_normal((200, 3)), g.standard_normal((200, 3)) + np.array([0, 0, 0.6])
    r = drift_report(a, b, method="cvm", window=100)
    assert r["drift"] and [f["feature"] for f in r["features"] if f["drift"]] == [2]
    assert len(r["windows"]) == 2 and all(w["drift"] for w in r["windows"])


@pytest.mark.slow  # loads MiniLM and embeds 500 messages (~15 s of CPU, more on a busy machine)
def test_text_files_are_embedded_and_a_spam_campaign_is_drift(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    from sparring.data.text import load_sms_spam

    ds = load_sms_spam()
    ham = [m for m, y in zip(ds.x_train, ds.y_train.tolist(), strict=True) if y == 0]
    spam = [m for m, y in zip(ds.x_train, ds.y_train.tolist(), strict=True) if y == 1]
    files = {"ref": ham[:200], "same": ham[200:300], "campaign": ham[300:350] + spam[:50]}
    for name, msgs in files.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(m.replace("\n", " ") for m in msgs) + "\n")
    code, out, _ = _run("drift", str(tmp_path / "ref.txt"), str(tmp_path / "same.txt"), "--json",
                        "--n-permutations", "100")
    d = json.loads(out)
    assert code == 0 and d["drift"] is False and len(d["features"]) == 384  # MiniLM dimensions
    code, out, _ = _run("drift", str(tmp_path / "ref.txt"), str(tmp_path / "campaign.txt"), "--json",
                        "--n-permutations", "100")
    d = json.loads(out)
    assert d["drift"] is True and d["result"]["p_value"] < 0.05
