"""`sparring init` on tabular data writes per-feature budgets (units: range), the audit runs in them, and a random
forest saved with skops is set up with trusted types. The issue's case: breast cancer, whose feature ranges run from
0.03 to 4069, got eps [41, 120, 410] from the widest feature (25 of 30 features entirely free) and read 0.96 -> 0.00.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import skops.io as sio
from click.testing import CliRunner

from sparring import zoo
from sparring.audit.runner import load_system, run_audit
from sparring.audit.threat import load_threat_model, parse_threat_model
from sparring.cli import build_cli
from sparring.errors import ThreatModelError
from sparring.targets import TorchTarget

pytestmark = pytest.mark.usefixtures("one_thread")

TREE = "sklearn.tree._tree.Tree"


def _init(*args: str) -> Any:
    return CliRunner().invoke(build_cli(), ["init", *args])


def test_init_writes_per_feature_budgets_and_the_audit_runs_in_them(tmp_path: Path) -> None:
    path = tmp_path / "bc.yaml"
    r = _init("-m", "breast-cancer-mlp", "--n", "500", "-o", str(path))
    assert r.exit_code == 0, r.output
    text = path.read_text()
    assert "{this file}" not in text and f"sparring audit {path}" in text
    tm = load_threat_model(path)
    assert tm.system.units == "range"
    assert tm.attacker.evasion[0].norm == "linf" and tm.attacker.evasion[0].eps == [0.01, 0.03, 0.1]  # was 41..410
    assert tm.system.data.n == len(zoo.data("breast-cancer-mlp").y_test) < 500  # the rows there are, not 500
    target, _, x, _ = load_system(tm)
    assert isinstance(target, TorchTarget) and float(x.min()) >= 0 and float(x.max()) <= 1
    quick = parse_threat_model({**tm.model_dump(), "effort": "quick",
                                "system": {**tm.system.model_dump(), "data": {"source": "zoo", "n": 30}}})
    res = run_audit(quick, tmp_path / "out", progress=False)
    gate = next(g for g in res.gates if g.metric == "robust_accuracy")
    assert gate.value is not None and 0.6 <= gate.value < 1.0  # eps 0.01 of each range; raw eps 41 gave 0.00
    assert any(r.params.get("eps") == 0.01 and r.params.get("norm") == "linf" for r in res.results)
    from sparring.audit.report import write_reports

    html = write_reports(res, tmp_path / "out", ("html",))["html"].read_text()
    assert "fraction of each feature&#39;s range" in html or "fraction of each feature's range" in html


def test_units_refuse_raw_only_checks_and_unknown_values(tmp_path: Path) -> None:
    base = {"schema_version": 1, "system": {"model": "breast-cancer-mlp", "units": "range",
                                            "constraints": str(tmp_path / "c.json")}}
    with pytest.raises(ThreatModelError, match=r"system\.constraints"):
        load_system(parse_threat_model(base))
    with pytest.raises(ThreatModelError, match="units"):
        parse_threat_model({"schema_version": 1, "system": {"model": "breast-cancer-mlp", "units": "percent"}})


def _write_spec_and_rows(folder: Path, ds: Any) -> None:
    """``spec.json`` and ``rows.csv`` (header f0..f29, label) of the breast-cancer test split, as users have them."""
    (folder / "spec.json").write_text(json.dumps(ds.spec.to_dict()))
    with (folder / "rows.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*(f"f{j}" for j in range(30)), "label"])
        for row, label in zip(ds.x_test.numpy(), ds.y_test.numpy(), strict=True):
            w.writerow([*(f"{v:.9g}" for v in row), int(label)])


def test_init_sets_up_a_random_forest_with_trusted_skops_types(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    ds = zoo.data("breast-cancer-mlp")
    rf = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0).fit(ds.x_train.numpy(),
                                                                                  ds.y_train.numpy())
    sio.dump(rf, tmp_path / "rf.skops")
    _write_spec_and_rows(tmp_path, ds)
    args = ["-m", str(tmp_path / "rf.skops"), "--spec", str(tmp_path / "spec.json"), "--data",
            str(tmp_path / "rows.csv"), "--n", "50"]
    refused = _init(*args, "-o", str(tmp_path / "no.yaml"))
    assert refused.exit_code == 4 and TREE in refused.output and "--trusted-type" in refused.output
    r = _init(*args, "--trusted-type", TREE, "-o", str(tmp_path / "rf.yaml"))
    assert r.exit_code == 0, r.output
    tm = load_threat_model(tmp_path / "rf.yaml")
    assert tm.system.trusted_types == [TREE] and tm.system.units == "range"
    target, _, x, y = load_system(tm)
    acc = float((target.query_labels(x) == y).float().mean())
    assert acc == pytest.approx(float((rf.predict(ds.x_test[:50].numpy()) == ds.y_test[:50].numpy()).mean()))
    assert f"clean accuracy {acc:.4f}" in (tmp_path / "rf.yaml").read_text()


def test_init_sets_up_a_joblib_model_only_with_trust_pickle(tmp_path: Path) -> None:
    """A joblib (pickle) file is refused without ``--trust-pickle`` (it can run code); with it, the written threat
    model says so and loads the model with its own accuracy."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    ds = zoo.data("breast-cancer-mlp")
    lr = LogisticRegression(max_iter=2000).fit(ds.x_train.numpy(), ds.y_train.numpy())
    joblib.dump(lr, tmp_path / "lr.joblib")
    _write_spec_and_rows(tmp_path, ds)
    args = ["-m", str(tmp_path / "lr.joblib"), "--spec", str(tmp_path / "spec.json"), "--data",
            str(tmp_path / "rows.csv"), "--n", "50"]
    refused = _init(*args, "-o", str(tmp_path / "no.yaml"))
    assert refused.exit_code != 0 and "--trust-pickle" in refused.output and not (tmp_path / "no.yaml").exists()
    r = _init(*args, "--trust-pickle", "-o", str(tmp_path / "lr.yaml"))
    assert r.exit_code == 0, r.output
    assert "trust_pickle: true" in (tmp_path / "lr.yaml").read_text()
    tm = load_threat_model(tmp_path / "lr.yaml")
    target, _, x, y = load_system(tm)
    acc = float((target.query_labels(x) == y).float().mean())
    assert acc == pytest.approx(float((lr.predict(ds.x_test[:50].numpy()) == ds.y_test[:50].numpy()).mean()))


def test_cli_attack_takes_per_feature_units(tmp_path: Path) -> None:
    import numpy as np

    ds = zoo.data("breast-cancer-mlp")
    out = tmp_path / "adv.npz"
    r = CliRunner().invoke(build_cli(), ["attack", "pgd", "-m", "breast-cancer-mlp", "--eps", "0.03", "--units",
                                         "range", "--n", "60", "--json", "--save-adv", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["units"] == "range" and s["robust_accuracy"] < s["clean_accuracy"]
    lo, hi = (v.reshape(-1).numpy() for v in ds.spec.bounds_tensors())
    frac = np.abs(np.load(out)["x_adv"] - ds.x_test[:60].numpy()) / (hi - lo)  # saved in raw units
    assert frac.max() <= 0.03 + 1e-5 and int((frac.max(0) > 0.02).sum()) >= 20
    bad = CliRunner().invoke(build_cli(), ["attack", "pgd", "-m", "breast-cancer-mlp", "--units", "percent"])
    assert bad.exit_code == 3 and "'percent'" in bad.stderr
