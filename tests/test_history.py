"""The audit history: ``sparring audit --history`` records runs, ``sparring history`` lists them with their gates and
deltas and plots the trend; SQLite by default, PostgreSQL by URL (a real server on 127.0.0.1 when installed).

The end-to-end test audits an MLP on 8×8 digits (trained here, saved as TorchScript), then the same file overwritten
with a weaker model (noise on its weights) against the first report: the regression gate fails and the history shows
both runs, the second with the drop.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from sparring.audit.history import SQLiteHistory, open_history, plot_trend, run_summary
from sparring.cli import EXIT_GATE, EXIT_INPUT, EXIT_MODEL, EXIT_OK, build_cli
from sparring.data import load_digits
from sparring.errors import ParameterError, StoreError
from tests.guard_pg import postgres_server

pytestmark = pytest.mark.usefixtures("one_thread")
N = 32
ROBUST = {"metric": "robust_accuracy", "norm": "linf", "eps": 0.05}


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def _report(model: str, robust: float | None, clean: float = 0.9, delta: float | None = None,
            name: str = "tm") -> dict[str, Any]:
    """A report.json as the audit writes it, reduced to what the history reads."""
    gates: list[dict[str, Any]] = [
        {"gate": "clean_accuracy >= 0.5", "metric": "clean_accuracy", "status": "pass", "value": clean,
         "threshold": 0.5, "op": ">="},
        {"gate": "robust_accuracy (linf 0.05) >= 0.2", "metric": "robust_accuracy",
         "status": "pass" if robust is not None and robust >= 0.2 else "fail", "value": robust,
         "threshold": 0.2, "op": ">="}]
    base = None if delta is None else {"path": "old/report.json", "gates": [
        {"gate": gates[1]["gate"], "delta": delta, "before": None, "now": robust}]}
    return {"name": name, "verdict": "pass", "status": "complete", "gates": gates, "baseline": base,
            "threat_model": {"system": {"model": model}}, "environment": {"spec_hash": "abc", "sparring": "0.x"},
            "steps": [{"id": "big", "measurements": list(range(1000))}]}


def test_sqlite_history_records_and_lists_runs_with_changes(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with open_history(f"sqlite:///{db}") as store:
        ids = [store.record(_report("a", 0.6)), store.record(_report("b", 0.5)),
               store.record(_report("a", 0.45, delta=-0.15))]
        assert ids == [1, 2, 3]
        runs = store.runs(model="a")
    assert [r.id for r in runs] == [1, 3] and {r.model for r in runs} == {"a"}
    robust = [r.gates[1] for r in runs]
    assert robust[0]["change"] is None and robust[1]["change"] == pytest.approx(-0.15)  # vs run 1, not run 2 (b)
    assert robust[1]["baseline_delta"] == pytest.approx(-0.15) and robust[0]["baseline_delta"] is None
    with SQLiteHistory(db, create=False) as store:  # reopened: persisted; the per-step data is not kept
        assert len(store.runs()) == 3 and [r.id for r in store.runs(limit=1)] == [3]
        assert store.runs(name="other") == []
    with sqlite3.connect(db) as conn:
        (summary,) = conn.execute("SELECT summary FROM sparring_audit_runs WHERE id = 1").fetchone()
    assert "measurements" not in summary and len(summary) < 2000


def test_a_corrupted_file_a_foreign_table_and_a_locked_database_are_store_errors_naming_the_file(
        tmp_path: Path) -> None:
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"these are not the pages of an SQLite database" * 100)
    with pytest.raises(StoreError, match=r"notes\.db.*not an intact SQLite database"):
        open_history(bad)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE sparring_audit_runs (id INTEGER, what TEXT)")
    conn.close()
    with pytest.raises(StoreError, match=r"other\.db.*columns"):
        open_history(other)
    db = tmp_path / "h.db"
    SQLiteHistory(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with SQLiteHistory(db, busy_timeout_ms=200) as store, pytest.raises(StoreError, match=r"h\.db.*locked"):
            store.record(_report("a", 0.5))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with pytest.raises(StoreError, match="no audit history at"):
        open_history(tmp_path / "missing.db", create=False)
    with pytest.raises(ParameterError, match="postgresql://"):
        open_history("mysql://u:hunter2@h/db")
    with pytest.raises(ParameterError, match=r"report\.json"):
        run_summary({"name": "x"})


def test_trend_plot_is_a_png_or_svg_of_every_measured_gate(tmp_path: Path) -> None:
    with open_history(tmp_path / "h.db") as store:
        for v in (0.6, 0.55, None, 0.4):
            store.record(_report("a", v))
        runs = store.runs()
    png = plot_trend(runs, tmp_path / "t.png", metrics=["robust_accuracy"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (plot_trend(runs, tmp_path / "t.svg")).read_text(encoding="utf-8")
    assert "<svg" in svg and "sparring audit history" in svg
    with pytest.raises(ParameterError, match=r"\.png or \.svg"):
        plot_trend(runs, tmp_path / "t.pdf")
    with pytest.raises(ParameterError, match="nothing to plot"):
        plot_trend(runs, tmp_path / "t.png", metrics=["certified_accuracy"])


def test_postgres_history_on_a_real_server() -> None:
    with postgres_server() as url:
        with open_history(url) as store:
            assert store.record(_report("a", 0.6)) == 1
            store.record(_report("a", 0.5, delta=-0.1))
        with open_history(url) as store:  # a second connection (another CI runner) sees both runs
            runs = store.runs(model="a")
        assert [r.gates[1]["value"] for r in runs] == [0.6, 0.5]
        assert runs[1].gates[1]["change"] == pytest.approx(-0.1) and runs[1].baseline == "old/report.json"
        code, out, _ = _run("history", "--history", url, "--json")
        assert code == EXIT_OK and len(json.loads(out)["runs"]) == 2
    with pytest.raises(StoreError, match=r"postgresql://u:\*\*\*@127\.0\.0\.1:1/db") as err:
        open_history("postgresql://u:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(err.value)


def _train_mlp() -> tuple[nn.Module, Any]:
    ds = load_digits(8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(ds.x_train), ds.y_train).backward()
        opt.step()
    return model.eval(), ds


def _save(model: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():  # TorchScript warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(path))


def test_audit_history_shows_both_runs_and_the_regression_of_a_weaker_model(tmp_path: Path) -> None:
    model, ds = _train_mlp()
    _save(model, tmp_path / "model.pt")
    (tmp_path / "spec.json").write_text(json.dumps(ds.spec.to_dict()), encoding="utf-8")
    np.savez(tmp_path / "data.npz", x=ds.x_test[:N].numpy(), y=ds.y_test[:N].numpy())
    tm = {"schema_version": 1, "name": "history audit",
          "system": {"model": str(tmp_path / "model.pt"), "spec": str(tmp_path / "spec.json"),
                     "data": {"source": str(tmp_path / "data.npz"), "n": N}},
          "attacker": {"evasion": [{"norm": "linf", "eps": [0.05]}]}, "effort": "quick",
          "gates": [{"metric": "clean_accuracy", "min": 0.5}, {**ROBUST, "min": 0.0}, {**ROBUST, "max_drop": 0.02}]}
    (tmp_path / "tm.yaml").write_text(yaml.safe_dump(tm), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'audits.db'}"

    def audit(out: str, *extra: str) -> int:
        code, _, err = _run("audit", str(tmp_path / "tm.yaml"), "--out", str(tmp_path / out), "--no-progress",
                            "--format", "json,html", "--history", db, *extra)
        assert "recorded as run" in err, err
        return code

    assert audit("first") == EXIT_GATE  # the regression gate has no baseline yet: unmeasured
    weak = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in weak.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    _save(weak, tmp_path / "model.pt")
    assert not (tmp_path / "first" / "history.png").exists()  # one run: no trend yet
    assert audit("second", "--baseline", str(tmp_path / "first")) == EXIT_GATE
    assert (tmp_path / "second" / "history.png").read_bytes()[:4] == b"\x89PNG"
    assert "Over time" not in (tmp_path / "first" / "report.html").read_text(encoding="utf-8")
    page = (tmp_path / "second" / "report.html").read_text(encoding="utf-8")
    trend = page[page.index('<h2 id="history">'):page.index('<h2 id="findings">')]
    assert 'alt="gate values over the recorded runs" src="data:image/png;base64,' in trend  # the plot, inline
    assert "previous run #1" in trend and "this run #2" in trend

    code, out, err = _run("history", "--history", db, "--json", "--plot", str(tmp_path / "trend.svg"))
    assert code == EXIT_OK, err
    runs = json.loads(out)["runs"]
    assert [r["id"] for r in runs] == [1, 2] and {r["model"] for r in runs} == {str(tmp_path / "model.pt")}
    second = json.loads((tmp_path / "second" / "report.json").read_text(encoding="utf-8"))
    assert [g["value"] for g in runs[1]["gates"]] == [g["value"] for g in second["gates"]]
    drop = next(g for g in runs[1]["gates"] if g["gate"].endswith("vs baseline"))
    assert drop["status"] == "fail" and drop["change"] is not None and drop["change"] < -0.02
    before = {b["gate"]: b["delta"] for b in second["baseline"]["gates"]}
    assert drop["baseline_delta"] == pytest.approx(before[drop["gate"]])
    first = json.loads((tmp_path / "first" / "report.json").read_text(encoding="utf-8"))
    for g0, g1 in zip(first["gates"], second["gates"], strict=True):  # each gate: run 1's value beside run 2's
        if g0["value"] is not None and g1["value"] is not None:
            assert f"{g0['value']:.4f}" in trend and f"{g1['value']:.4f}" in trend
            assert f"{g1['value'] - g0['value']:+.4f}" in trend
    assert (tmp_path / "trend.svg").read_text(encoding="utf-8").startswith("<?xml")
    code, out, _ = _run("history", "--history", db)
    assert code == EXIT_OK and "fail" in out and "vs baseline" in out and "audit history" in out


def test_history_errors_are_typed_with_exit_codes_and_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00garbage" * 200)
    code, _, err = _run("history", "--history", str(bad))
    assert code == EXIT_MODEL and "bad.db" in err and "StoreError" in err
    code, out, _ = _run("history", "--history", str(bad), "--json")
    d = json.loads(out)
    assert code == EXIT_MODEL and d["type"] == "StoreError" and d["exit_code"] == EXIT_MODEL and "bad.db" in d["error"]
    code, _, err = _run("history", "--history", "ftp://h/x")
    assert code == EXIT_INPUT and "sqlite:///" in err
    code, _, err = _run("audit", "--history", str(bad), "--out", str(tmp_path / "o"))  # refused before it runs
    assert code == EXIT_MODEL and "bad.db" in err and not (tmp_path / "o").exists()
