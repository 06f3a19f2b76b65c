"""GET /admin/dashboard over real HTTP: admin key or a session cookie traded for it once, alerts and drift plots, top
clients, rejected digits as PNG images, every store string escaped; rendered in headless Chromium (no console errors,
no script run, the rejected-input image loaded)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

pytest.importorskip("fastapi", reason="the guard needs the 'guard' extra")

from sparring.data import Dataset
from sparring.guard.auth import create_key
from sparring.guard.config import parse_config
from sparring.guard.dashboard import COOKIE, _drift_windows
from sparring.guard.server import GuardServer
from sparring.guard.service import GuardService
from sparring.guard.store import Alert, Event, StoreBatch
from sparring.targets.torch import TorchTarget
from tests.guard_helpers import bearer

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL_CLIENT = "<script>alert(1)</script>"
EVIL_DETAIL = "<img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory, digits_cnn: TorchTarget,
          digits: Dataset) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("guard-dash")
    cfg = {"model": "digits-cnn", "store": {"url": f"sqlite:///{tmp / 'guard.db'}"}, "prada": {"enabled": False},
           "rate_limit": {"rate": 10_000, "burst": 10_000},
           "detectors": [{"kind": "max-softmax", "policy": "reject", "threshold": -0.6}],  # confidence < 0.6
           "drift": {"window": 10, "reference": {"data": "test", "stop": 200}}}
    svc = GuardService(parse_config(cfg, base_dir=tmp), target=digits_cnn)
    alice, _ = create_key(svc.store, "alice")
    mallory, _ = create_key(svc.store, "mallory")
    admin, admin_rec = create_key(svc.store, "ops", "admin")
    # what a hostile id or detail would look like if one reached the store: it must render as text
    svc.store.record(StoreBatch(Event(EVIL_CLIENT, "/predict", 403, "reject", message=EVIL_DETAIL),
                                alerts=[Alert(EVIL_CLIENT, "prada", {"note": EVIL_DETAIL})]))
    noise = torch.rand(30, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with GuardServer(svc) as server, httpx.Client(base_url=server.url) as http:
        for i in range(40):  # clean digits, one per request
            assert http.post("/predict", json={"inputs": digits.x_test[200 + i:201 + i].tolist()},
                             headers=bearer(alice)).status_code in (200, 403)
        rejected = 0
        for i in range(30):  # uniform noise: the least confident rejected, the others drift the confidences
            r = http.post("/predict", json={"inputs": noise[i:i + 1].tolist()}, headers=bearer(mallory))
            rejected += r.status_code == 403
        assert rejected >= 4
        yield {"svc": svc, "server": server, "admin": admin, "admin_rec": admin_rec, "alice": alice,
               "db": tmp / "guard.db", "tmp": tmp}


def _page(guard: dict[str, Any]) -> str:
    r = httpx.get(guard["server"].url + "/admin/dashboard", headers=bearer(guard["admin"]))
    assert r.status_code == 200, r.text
    return r.text


def test_dashboard_shows_alerts_drift_clients_and_rejected_images(guard: dict[str, Any]) -> None:
    html = _page(guard)
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert "<script" not in html and "onerror=" not in html.replace("onerror=alert(2)&gt;", "")
    assert html.count('id="alerts-plot"') == 1 and html.count('id="drift-plot"') == 1
    assert html.count('class="rejected-input" alt="rejected input" src="data:image/png;base64,') >= 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    top = html.split('class="top-requests"')[1].split("</table>")[0]
    assert top.index(">alice<") < top.index(">mallory<")  # 40 requests before 30
    rej = html.split('class="top-rejections"')[1].split("</table>")[0]
    assert rej.index(">mallory<") < rej.index("&lt;script&gt;")
    alerts = html.split('id="alerts"')[1].split("</table>")[0]
    assert "<td>drift</td>" in alerts and "<td>prada</td>" in alerts  # the noise drifted the confidence window


def test_drift_plot_recomputes_the_live_windows(guard: dict[str, Any]) -> None:
    svc = guard["svc"]
    windows = _drift_windows(svc)
    assert svc.drift is not None and len(windows) == svc.drift.tested >= 3
    assert windows[-1]["p_value"] == pytest.approx(svc.drift.last_p, rel=1e-9)
    assert sum(w["drift"] for w in windows) == svc.drift.alarms >= 1


def test_dashboard_needs_an_admin_key_then_a_cookie_not_the_key(guard: dict[str, Any]) -> None:
    url = guard["server"].url + "/admin/dashboard"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=bearer(guard["alice"])).status_code == 403
    assert httpx.get(url, params={"key": guard["alice"]}).status_code == 403
    assert httpx.get(url, params={"key": guard["admin"][:-2] + "zz"}).status_code == 401
    r = httpx.get(url, params={"key": guard["admin"]})
    assert r.status_code == 303 and r.headers["location"] == "/admin/dashboard"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin/dashboard" in cookie
    assert guard["admin"] not in cookie and guard["admin"].split("_", 2)[2] not in cookie  # the secret may hold "_"
    token = r.cookies[COOKIE]
    page = httpx.get(url, cookies={COOKIE: token})
    assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none': no script at all
    assert httpx.get(url, cookies={COOKIE: token + "x"}).status_code == 401
    assert httpx.get(guard["server"].url + "/admin/events", cookies={COOKIE: token}).status_code == 401  # page only
    with sqlite3.connect(guard["db"]) as conn:  # the key is in no event (only the session opening is recorded)
        rows = conn.execute("SELECT path, status, message FROM events").fetchall()
    assert not any(guard["admin"] in str(r) for r in rows)
    assert ("/admin/dashboard", 303, "dashboard session opened") in rows


def test_revoked_key_ends_its_dashboard_sessions(guard: dict[str, Any]) -> None:
    svc, url = guard["svc"], guard["server"].url + "/admin/dashboard"
    key, rec = create_key(svc.store, "ops2", "admin")
    token = httpx.get(url, params={"key": key}).cookies[COOKIE]
    assert httpx.get(url, cookies={COOKIE: token}).status_code == 200
    assert httpx.delete(guard["server"].url + f"/admin/keys/{rec.key_id}", headers=bearer(guard["admin"])).status_code \
        == 200
    assert httpx.get(url, cookies={COOKIE: token}).status_code == 401


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (scripts/test.sh installs "
                    "it when it can: apt-get install chromium)")
def test_dashboard_renders_in_headless_chromium(guard: dict[str, Any], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    dialogs: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                    "--disable-background-networking",
                                                                    "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        resp = page.goto(guard["server"].url + "/admin/dashboard?key=" + guard["admin"])
        page.wait_for_load_state("load")
        assert resp is not None and resp.status == 200
        assert page.url == guard["server"].url + "/admin/dashboard"  # the key is gone from the address bar
        images: list[dict[str, Any]] = page.eval_on_selector_all(
            "img.rejected-input", "els => els.map(e => ({w: e.naturalWidth, h: e.naturalHeight, done: e.complete}))")
        plots = page.eval_on_selector_all("svg.plot", "els => els.map(e => e.getBoundingClientRect().width)")
        clients = page.eval_on_selector_all("td.client", "els => els.map(e => e.textContent)")
        cookies = page.context.cookies()
        shot = Path(os.environ.get("SPARRING_SCREENSHOT_DIR", tmp_path)) / "guard-dashboard.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == [] and dialogs == []
    assert images and all(i["done"] and i["w"] > 50 and i["h"] > 50 for i in images), images
    assert len(plots) == 2 and all(w > 500 for w in plots)
    assert EVIL_CLIENT in clients  # shown as text, not run
    (c,) = [c for c in cookies if c["name"] == COOKIE]
    assert c["httpOnly"] and c["sameSite"] == "Strict"
    assert shot.stat().st_size > 20_000


def test_text_model_rejected_messages_are_shown_as_escaped_text(tmp_path: Path) -> None:
    from sparring.guard.open import open_service

    cfg = {"model": "spam-tfidf-logreg", "detectors": [{"kind": "unicode", "policy": "reject"}],
           "store": {"url": f"sqlite:///{tmp_path / 'guard.db'}"}, "rate_limit": {"rate": 10_000, "burst": 10_000}}
    svc = open_service(parse_config(cfg, base_dir=tmp_path))
    evil = "WIN \u200bcash <script>alert(3)</script> now"  # a zero-width space: the unicode detector rejects it
    with GuardServer(svc) as server:
        client, _ = create_key(svc.store, "texter")
        admin, _ = create_key(svc.store, "ops", "admin")
        ok = httpx.post(server.predict_url, json={"inputs": ["see you at lunch"]}, headers=bearer(client))
        r = httpx.post(server.predict_url, json={"inputs": ["hello", evil]}, headers=bearer(client))
        assert ok.status_code == 200 and r.status_code == 403 and r.json()["guard"]["examples"] == [1]
        for _ in range(100):  # the sample is written by a background thread after the commit
            page = httpx.get(server.url + "/admin/dashboard", headers=bearer(admin)).text
            if "text-input" in page.split('id="rejected"')[1]:
                break
    shown = page.split('id="rejected"')[1]
    assert '<pre class="text-input">WIN \u200bcash &lt;script&gt;alert(3)&lt;/script&gt; now</pre>' in shown
    assert "<script" not in page and "hello" not in shown  # only the fired message is kept
    assert "No drift window" in page and "<td class=\"client\">texter</td>" in page
