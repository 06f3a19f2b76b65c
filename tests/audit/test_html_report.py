"""The HTML report renders in headless Chromium: plots and images load, no console errors; a screenshot is saved."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from sparring.audit import load_threat_model, run_audit
from sparring.audit.report import write_reports
from tests.audit.conftest import write_tm

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("html")
    tm = write_tm(d / "t.yaml", attacker={"evasion": [{"norm": "linf", "eps": [0.05, 0.15]},
                                                       {"norm": "l2", "eps": [1.5]}]})
    audit = run_audit(load_threat_model(tm), d / "out")
    return write_reports(audit, d / "out")["html"]


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert html.count('src="data:image/png;base64,') >= 5  # 2 curves, 2 example grids, 2 confusions, 1 certification
    for section in ("Gates", "Findings", "robust accuracy vs budget", "Adversarial examples",
                    "Where predictions move", "Certification", "Plan", "Environment"):
        assert section.lower() in html.lower(), section


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (scripts/test.sh installs "
                    "it when it can: apt-get install chromium)")
def test_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS[1:])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        images: list[dict[str, Any]] = page.eval_on_selector_all(
            "img", "els => els.map(e => ({w: e.naturalWidth, h: e.naturalHeight, done: e.complete}))")
        verdict = page.inner_text("#verdict")
        heights = page.evaluate("document.body.scrollHeight")
        shot = Path(os.environ.get("SPARRING_SCREENSHOT_DIR", tmp_path)) / "audit-report.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert len(images) >= 5 and all(i["done"] and i["w"] > 100 and i["h"] > 100 for i in images), images
    assert verdict in ("PASS", "FAIL", "NO GATES")
    assert heights > 2000
    assert shot.stat().st_size > 50_000
