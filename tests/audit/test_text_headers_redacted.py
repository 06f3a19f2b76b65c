"""``system.text`` HTTP headers in reports: a literal header value (a token typed into the YAML) is never written to
report.json, report.html or the Markdown summary, as with ``system.http``; ``${VAR}`` values are written as given;
the API still gets the literal. The API is a real moderation endpoint on 127.0.0.1 (from test_text_user)."""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sparring.audit import parse_threat_model
from sparring.cli import EXIT_OK, build_cli

pytest.importorskip("skops")

from tests.attacks.test_text_user import CLASSES, TOKEN, _Moderation, _pipeline, _rows


def _tm(url: str, headers: dict[str, str], source: str = "x.csv") -> dict[str, object]:
    return {"schema_version": 1, "name": "moderation", "effort": "quick", "seed": 0,
            "system": {"model": url, "data": {"source": source, "n": 5},
                       "text": {"classes": CLASSES, "input_key": "texts", "output_key": "probs", "retries": 0,
                                "headers": headers}},
            "attacker": {"knowledge": "black-box", "query_budget": 60},
            "gates": [{"metric": "clean_accuracy", "min": 0.95}]}


def test_literal_text_headers_are_redacted_in_the_threat_models_json_form() -> None:
    tm = parse_threat_model(_tm("http://127.0.0.1:9/m", {"Authorization": f"Bearer {TOKEN}", "X-Org": "${ORG}"}))
    assert tm.system.text is not None and tm.system.text.headers["Authorization"] == f"Bearer {TOKEN}"
    shown = tm.to_dict()["system"]["text"]["headers"]
    assert shown == {"Authorization": "<redacted>", "X-Org": "${ORG}"}
    assert TOKEN not in json.dumps(tm.to_dict())
    other = parse_threat_model(_tm("http://127.0.0.1:9/m", {"Authorization": "Bearer another", "X-Org": "${ORG}"}))
    assert other.spec_hash() == tm.spec_hash()  # the hash is of the redacted form: no secret derived from it


@pytest.fixture()
def endpoint() -> Iterator[tuple[str, _Moderation]]:
    srv = _Moderation(_pipeline())
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/moderate", srv
    srv.shutdown()
    thread.join()
    srv.server_close()


def test_audit_of_a_text_api_with_a_literal_token_keeps_it_out_of_every_report(
        tmp_path: Path, endpoint: tuple[str, _Moderation]) -> None:
    url, srv = endpoint
    with open(tmp_path / "tox.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["message", "label"])
        w.writerows(_rows())
    tm = _tm(url, {"Authorization": f"Bearer {TOKEN}"}, str(tmp_path / "tox.csv"))
    (tmp_path / "tm.yaml").write_text(yaml.safe_dump(tm), encoding="utf-8")
    res = CliRunner().invoke(build_cli(), ["audit", str(tmp_path / "tm.yaml"), "--out", str(tmp_path / "rep"),
                                           "--no-progress", "--format", "json,html,markdown"])
    assert res.exit_code == EXIT_OK, res.output
    assert srv.requests > 0 and srv.unauthorised == 0  # the API got the literal token
    for name in ("report.json", "report.html", "summary.md"):
        assert TOKEN not in (tmp_path / "rep" / name).read_text(encoding="utf-8"), name
    report = json.loads((tmp_path / "rep" / "report.json").read_text(encoding="utf-8"))
    assert report["threat_model"]["system"]["text"]["headers"] == {"Authorization": "<redacted>"}
