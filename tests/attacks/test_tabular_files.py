"""`sparring attack-tabular` on the user's own files, all made here: a gradient-boosting model trained in the test
and saved with skops, its InputSpec JSON, a CSV with a header and a named label column, a constraints JSON.

The CLI's numbers must equal the library's on the same rows; every broken file is an exit-3 error naming the fix.
"""

from __future__ import annotations

import csv
import json
import warnings
from typing import Any

import numpy as np
import pytest
import skops.io as sio
import torch
from click.testing import CliRunner

from sparring import zoo
from sparring.attacks.tabular import CostSearch, TreeEvasion
from sparring.cli import build_cli
from sparring.data.transactions import transactions_constraints
from sparring.targets import SklearnTarget

pytestmark = pytest.mark.usefixtures("one_thread")

TREE = "sklearn.tree._tree.Tree"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from sklearn.ensemble import GradientBoostingClassifier

    ds = zoo.data("fraud-gbm")
    gb = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0)
    gb.fit(ds.x_train[:3000].numpy(), ds.y_train[:3000].numpy())
    d = tmp_path_factory.mktemp("tabular_files")
    c = transactions_constraints()
    sio.dump(gb, d / "gb.skops")
    (d / "spec.json").write_text(json.dumps(ds.spec.to_dict()))
    c.save(d / "c.json")
    x, y = ds.x_test[:200].numpy(), ds.y_test[:200].numpy()
    with (d / "rows.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*c.names, "fraud"])
        for row, label in zip(x, y, strict=True):
            w.writerow([*(f"{v:.9g}" for v in row), int(label)])
    return {"dir": d, "model": gb, "spec": ds.spec, "x": x, "y": y, "c": c}


def _cli(files: dict[str, Any], *extra: str, attack: str = "search", model: str = "gb.skops") -> Any:
    d = files["dir"]
    args = ["attack-tabular", attack, "-m", str(d / model), "--trusted-type", TREE, "--spec", str(d / "spec.json"),
            "--data", str(d / "rows.csv"), "--label-column", "fraud", "--constraints", str(d / "c.json"),
            "--n", "10", "--json", *extra]
    return CliRunner().invoke(build_cli(), args)


def _detected(files: dict[str, Any], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    csv_x = np.loadtxt(files["dir"] / "rows.csv", delimiter=",", skiprows=1, dtype=np.float32)
    x, y = torch.from_numpy(csv_x[:, :-1]), torch.from_numpy(csv_x[:, -1]).long()
    keep = (torch.from_numpy(files["model"].predict(x.numpy())) == y) & (y == 1)
    return x[keep][:n], y[keep][:n]


def test_cli_attacks_a_users_skops_model_on_a_csv_with_the_librarys_numbers(files: dict[str, Any]) -> None:
    r = _cli(files)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    con, unc = out["results"]
    x, y = _detected(files, 10)
    assert out["n"] == len(x) == 10
    lib = CostSearch(constraints=files["c"])(SklearnTarget(files["model"], files["spec"]), x, y)
    assert con["evasion_rate"] == lib.success_rate and con["median_cost"] == pytest.approx(lib.median_cost)
    assert con["robust_accuracy"] == lib.robust_accuracy and con["n_unknown"] == 0
    assert con["feasible_rows"] == 1.0 and con["evasion_rate"] >= 0.8
    assert not unc["constrained"] and unc["violations"]
    milp = _cli(files, "--n", "4", attack="tree-milp")
    assert milp.exit_code == 0, milp.output
    exact = TreeEvasion(constraints=files["c"])(SklearnTarget(files["model"], files["spec"]), x[:4], y[:4])
    (res,) = json.loads(milp.stdout)["results"]
    assert res["evasion_rate"] == exact.success_rate == 1.0
    assert res["median_cost"] == pytest.approx(exact.median_cost)


def test_cli_budget_exhausted_exits_5_naming_the_unknown_rows(files: dict[str, Any]) -> None:
    r = _cli(files, "--query-budget", "300", "--no-compare")
    assert r.exit_code == 5, r.output
    (res,) = json.loads(r.stdout)["results"]
    assert res["budget_exhausted"] and res["n_unknown"] > 0 and res["queries"] <= 300
    assert res["robust_accuracy"] + res["n_unknown"] / 10 + res["evasion_rate"] == pytest.approx(1.0)
    assert f"{res['n_unknown']} of 10 rows unknown" in r.stderr and "--query-budget" in r.stderr


def _write(files: dict[str, Any], name: str, content: Any) -> str:
    p = files["dir"] / name
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(p)


def test_cli_refuses_broken_files_with_exit_3_naming_the_fix(files: dict[str, Any]) -> None:
    d, c = files["dir"], files["c"].to_dict()
    bad_type = json.loads(json.dumps(c))
    bad_type["features"][0]["low"] = "zero"
    short = dict(c, features=c["features"][:-1], one_hot=[])
    typo = json.loads(json.dumps(c))
    typo["features"][1]["hihg"] = 3
    renamed = json.loads(json.dumps(c))
    renamed["features"][3]["name"] = "distance"
    renamed["inequalities"] = []
    cases = {
        _write(files, "type.json", bad_type): ["'amount'", "'low'", "'zero'"],
        _write(files, "short.json", short): ["declares 16 features but the model takes 17"],
        _write(files, "typo.json", typo): ["'hihg'", "'n_items'"],
        _write(files, "renamed.json", renamed): ["'distance'", "'distance_km'"],
        str(d / "missing.json"): ["does not exist"],
    }
    for path, needles in cases.items():
        r = _cli(files, "--constraints", path)
        assert r.exit_code == 3, (path, r.output)  # "low": "zero" used to crash with a traceback (exit 1)
        for needle in needles:
            assert needle in r.stderr, (needle, r.stderr)
    untrusted = CliRunner().invoke(build_cli(), ["attack-tabular", "search", "-m", str(d / "gb.skops"), "--spec",
                                                 str(d / "spec.json"), "--data", str(d / "rows.csv"),
                                                 "--label-column", "fraud", "--constraints", str(d / "c.json")])
    assert untrusted.exit_code == 4 and TREE in untrusted.stderr and "--trusted-type" in untrusted.stderr
    no_label = _cli(files, "--label-column", "is_fraud")
    assert no_label.exit_code == 3 and "'is_fraud'" in no_label.stderr


def test_cli_attacks_a_prediction_api_with_the_librarys_numbers(files: dict[str, Any]) -> None:
    from sparring.serving import make_server

    served = SklearnTarget(files["model"], files["spec"])
    with make_server(served, output="labels") as srv:
        d = files["dir"]
        r = CliRunner().invoke(build_cli(), [
            "attack-tabular", "search", "--url", srv.url + "/predict", "--output", "labels", "--spec",
            str(d / "spec.json"), "--data", str(d / "rows.csv"), "--label-column", "fraud", "--constraints",
            str(d / "c.json"), "--n", "6", "--no-compare", "--json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)["results"]
    x, y = _detected(files, 6)
    from sparring.targets.spec import Access

    lib = CostSearch(constraints=files["c"])(SklearnTarget(files["model"], files["spec"], access=Access.LABELS), x, y)
    assert res["evasion_rate"] == lib.success_rate and res["queries"] == lib.cost.queries
    assert res["median_cost"] == pytest.approx(lib.median_cost)
    # the HTTP options every --url command takes; a wrong answer key is the endpoint's problem (exit 4, named)
    with make_server(served, output="labels") as srv:
        r = CliRunner().invoke(build_cli(), [
            "attack-tabular", "search", "--url", srv.url + "/predict", "--output", "labels", "--spec",
            str(d / "spec.json"), "--data", str(d / "rows.csv"), "--label-column", "fraud", "--constraints",
            str(d / "c.json"), "--n", "6", "--no-compare", "--json", "--timeout", "5", "--output-key", "preds"])
    assert r.exit_code == 4 and "preds" in r.stderr, r.output
    r = CliRunner().invoke(build_cli(), ["attack-tabular", "search", "--timeout", "3"])
    assert r.exit_code == 3 and "--timeout applies to --url only" in r.stderr


def test_cli_attacks_a_torchscript_model_on_npz_rows(files: dict[str, Any]) -> None:
    from sparring.attacks.tabular import CPGD

    mlp = zoo.load("fraud-mlp")
    d = files["dir"]
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is how many users ship models
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.trace(mlp.model, torch.zeros(1, mlp.spec.n_features))  # type: ignore[attr-defined]
        scripted.save(str(d / "mlp.pt"))
    (d / "mlp_spec.json").write_text(json.dumps(mlp.spec.to_dict()))
    np.savez(d / "rows.npz", x=files["x"], y=files["y"])
    r = CliRunner().invoke(build_cli(), [
        "attack-tabular", "cpgd", "-m", str(d / "mlp.pt"), "--spec", str(d / "mlp_spec.json"), "--data",
        str(d / "rows.npz"), "--constraints", str(d / "c.json"), "--n", "8", "--steps", "10", "--no-compare",
        "--json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)["results"]
    x, y = torch.from_numpy(files["x"]), torch.from_numpy(files["y"]).long()
    keep = (mlp.predict(x) == y) & (y == 1)
    lib = CPGD(constraints=files["c"], steps=10)(mlp, x[keep][:8], y[keep][:8])
    assert res["evasion_rate"] == lib.success_rate > 0 and res["feasible_rows"] == 1.0


def test_sparring_audit_yaml_on_the_users_gbm_csv_and_constraints(files: dict[str, Any]) -> None:
    """The same user files through ``sparring audit``: the CSV's label column named in ``system.data.label_column``,
    the skops model's flagged type trusted in YAML, the constraints file checked against the CSV header."""
    import yaml

    d = files["dir"]
    tm: dict[str, Any] = {
        "schema_version": 1, "name": "users-gbm", "effort": "quick", "seed": 0,
        "system": {"model": str(d / "gb.skops"), "trusted_types": [TREE], "spec": str(d / "spec.json"),
                   "constraints": str(d / "c.json"),
                   "data": {"source": str(d / "rows.csv"), "label_column": "fraud", "n": 60}},
        "attacker": {"knowledge": "black-box"},
        "gates": [{"metric": "clean_accuracy", "min": 0.5}],
    }
    (d / "gb.yaml").write_text(yaml.safe_dump(tm), encoding="utf-8")
    r = CliRunner().invoke(build_cli(), ["audit", str(d / "gb.yaml"), "--out", str(d / "gb-audit"), "--no-progress"])
    assert r.exit_code in (0, 6), r.output
    report = json.loads((d / "gb-audit" / "report.json").read_text())
    steps = {x["id"]: x for x in report["steps"]}
    metric = {k: {m["metric"]: m["value"] for m in x["measurements"]} for k, x in steps.items()}
    truth = float((files["model"].predict(files["x"][:60]) == files["y"][:60]).mean())
    assert metric["baseline/clean"]["clean_accuracy"] == pytest.approx(truth)
    assert steps["tabular/search/constrained"]["status"] == "done"
    con = metric["tabular/search/constrained"]
    assert con["feasible_rate"] == 1.0 and con["tabular_evasion_rate"] >= 0.8
    # the label column left at its default: the CSV has none of that name, said in YAML terms (exit 3)
    tm["system"]["data"].pop("label_column")
    (d / "gb-nolabel.yaml").write_text(yaml.safe_dump(tm), encoding="utf-8")
    r = CliRunner().invoke(build_cli(), ["audit", str(d / "gb-nolabel.yaml"), "--out", str(d / "gb-nolabel")])
    assert r.exit_code == 3 and "'label'" in r.output and "label_column" in r.output, r.output
