"""``GET /admin/dashboard``: one self-contained HTML page over the guard's store, drawn on the server.

What it shows: alerts over time (one lane per kind), the drift window's KS p-value per window over time, the top
clients of the last 24 hours by requests and by rejections, and the most recent rejected inputs (images for image
specs, escaped text for text models, the first values for feature vectors). Plots are inline SVG and PNG data URIs
(matplotlib through :mod:`sparring.audit.report.plots`); the page has no JavaScript, loads nothing from the network
and is served with a ``Content-Security-Policy`` that forbids scripts, so every string from the store (client ids,
alert details, text inputs) is HTML-escaped text.

The drift p-values are recomputed from the events' stored confidences with the live window's reference, size and
level (the windows are aligned on the live one: the newest ``len(current)`` confidences are its partial window), so
the plot needs no state besides the store. Rejected inputs are kept in the table ``guard_rejected_inputs`` (the last
``dashboard.rejected_samples`` fired examples, written by a background thread after the event is committed; 0 keeps
none, for deployments that must not store raw inputs).

Auth: an admin key in the ``Authorization``/``X-API-Key`` header as on every route, or, for a browser, once as
``?key=<admin key>``: the guard answers ``303`` to ``/admin/dashboard`` with an ``HttpOnly; SameSite=Strict`` session
cookie (a random token, kept in this process's memory for ``dashboard.session_hours``; a revoked key ends its
sessions). The key is never logged or stored; a reverse proxy in front may log query strings, so prefer the header
there. This module imports FastAPI (the ``guard`` extra), as :mod:`sparring.guard.app` does.
"""

from __future__ import annotations

import html
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request  # at module level: FastAPI resolves the route's annotation here

from sparring.guard.webhooks import backend, execute

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sparring.guard.service import GuardService
    from sparring.guard.store import Store

__all__ = ["COOKIE", "RejectedSamples", "add_dashboard", "render_dashboard"]

logger = logging.getLogger(__name__)

COOKIE = "sparring_guard_session"
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; " \
       "frame-ancestors 'none'"
_PER_EVENT = 4  # rejected examples kept per event at most
_DDL = {
    "sqlite": "CREATE TABLE IF NOT EXISTS guard_rejected_inputs (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id "
              "INTEGER NOT NULL, ts REAL NOT NULL, client_id TEXT, detector TEXT, idx INTEGER NOT NULL, shape TEXT, "
              "data BLOB, text TEXT)",
    "postgresql": "CREATE TABLE IF NOT EXISTS guard_rejected_inputs (id BIGSERIAL PRIMARY KEY, event_id BIGINT NOT "
                  "NULL, ts DOUBLE PRECISION NOT NULL, client_id TEXT, detector TEXT, idx INTEGER NOT NULL, shape "
                  "TEXT, data BYTEA, text TEXT)",
}


class RejectedSamples:
    """The last ``keep`` rejected examples (float32 with their shape, or the text), written off the request path."""

    def __init__(self, store: Store, keep: int) -> None:
        self.store, self.keep = store, int(keep)
        self.dropped = 0
        self._png: dict[int, str | None] = {}  # row id -> data URI (insertion order: oldest first)
        self._lock = threading.Lock()
        self._q: queue.Queue[tuple[int, str | None, str | None, list[tuple[int, Any]]]] = queue.Queue(256)
        if self.keep > 0:
            execute(store, _DDL[backend(store)], what="create the guard_rejected_inputs table")
            threading.Thread(target=self._run, name="sparring-guard-samples", daemon=True).start()

    def submit(self, event_id: int, client_id: str | None, detector: str | None, inputs: Any,
               examples: list[int]) -> None:
        """Queue the fired ``examples`` of a committed, rejected batch (a tensor or a list of texts)."""
        if self.keep <= 0 or not examples:
            return
        rows = []
        for i in examples[:_PER_EVENT]:
            v = inputs[i]
            rows.append((i, v if isinstance(v, str) else np.asarray(v.detach().cpu(), dtype=np.float32).copy()))
        try:
            self._q.put_nowait((event_id, client_id, detector, rows))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            event_id, cid, det, rows = self._q.get()
            try:
                now = time.time()
                for i, v in rows:
                    text, shape, data = (v, None, None) if isinstance(v, str) else (None, json.dumps(v.shape),
                                                                                    v.tobytes())
                    execute(self.store, "INSERT INTO guard_rejected_inputs (event_id, ts, client_id, detector, idx, "
                            "shape, data, text) VALUES (?,?,?,?,?,?,?,?)", (event_id, now, cid, det, i, shape, data,
                                                                            text), what="keep a rejected input")
                execute(self.store, "DELETE FROM guard_rejected_inputs WHERE id <= (SELECT MAX(id) FROM "
                        "guard_rejected_inputs) - ?", (self.keep,), what="trim the rejected inputs")
            except Exception:  # an observability sample; the event itself is already committed
                logger.exception("a rejected input could not be kept for the dashboard")
            finally:
                self._q.task_done()

    def flush(self) -> None:
        """Wait until every queued sample is written (tests)."""
        if self.keep > 0:
            self._q.join()

    def recent(self, limit: int = 12) -> list[dict[str, Any]]:
        if self.keep <= 0:
            return []
        rows = execute(self.store, "SELECT id, event_id, ts, client_id, detector, idx, shape, data, text FROM "
                       "guard_rejected_inputs ORDER BY id DESC LIMIT ?", (int(limit),),
                       what="read the rejected inputs", fetch=True)
        out = []
        for rid, eid, ts, cid, det, idx, shape, data, text in rows:
            x = None if data is None else np.frombuffer(bytes(data), dtype=np.float32).reshape(json.loads(shape))
            out.append({"id": int(rid), "event_id": eid, "ts": float(ts), "client_id": cid, "detector": det,
                        "index": idx, "x": x, "text": text})
        return out

    def image(self, row_id: int, make: Callable[[], str | None]) -> str | None:
        """The PNG of a kept input, drawn once by ``make()`` (matplotlib takes tens of ms per image) and cached."""
        with self._lock:
            if row_id in self._png:
                return self._png[row_id]
        uri = make()
        with self._lock:
            self._png[row_id] = uri
            while len(self._png) > max(64, 2 * self.keep):
                self._png.pop(next(iter(self._png)))
        return uri


# ---------------------------------------------------------------------- what the page shows
def _drift_windows(service: GuardService, max_windows: int = 40) -> list[dict[str, Any]]:
    drift = service.drift
    if drift is None:
        return []
    from scipy.stats import ks_2samp

    events = service.store.events(limit=max(200, (max_windows * drift.window) // 1 + len(drift.current)))
    conf: list[float] = []
    ts: list[float] = []
    for e in reversed(events):  # oldest first
        p = e.get("prediction") or {}
        if e["status"] == 200 and p.get("confidence"):
            conf.extend(p["confidence"])
            ts.extend([e["ts"]] * len(p["confidence"]))
    end = len(conf) - len(drift.current)  # the live partial window is not a test yet
    out: list[dict[str, Any]] = []
    while end >= drift.window and len(out) < max_windows:
        w = np.asarray(conf[end - drift.window:end])
        p_value = float(ks_2samp(w, drift.reference).pvalue)
        out.append({"ts": ts[end - 1], "p_value": p_value, "drift": p_value < drift.alpha})
        end -= drift.window
    return out[::-1]


def _top_clients(store: Store, since: float, order: str) -> list[tuple[str, int, int, int]]:
    rows = execute(store, "SELECT client_id, COUNT(*), SUM(CASE WHEN decision = 'reject' THEN 1 ELSE 0 END), "
                   "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) FROM events WHERE ts >= ? AND client_id IS NOT "
                   f"NULL GROUP BY client_id ORDER BY {order} DESC, client_id LIMIT 10", (since,),
                   what="count requests by client", fetch=True)
    return [(str(r[0]), int(r[1]), int(r[2] or 0), int(r[3] or 0)) for r in rows]


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _svg_alerts(alerts: list[dict[str, Any]], now: float) -> str:
    if not alerts:
        return '<p class="none">No alerts in the store.</p>'
    kinds = sorted({a["kind"] for a in alerts})
    t0 = min(a["ts"] for a in alerts)
    t1 = max(now, t0 + 1)
    w, lane, left = 760, 28, 120
    h = 30 + lane * len(kinds)
    parts = [f'<svg class="plot" id="alerts-plot" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 20}" '
             f'role="img" aria-label="alerts over time">']
    for k, kind in enumerate(kinds):
        y = 20 + lane * k
        parts.append(f'<text x="4" y="{y + 4}" font-size="12">{_esc(kind)}</text>'
                     f'<line x1="{left}" y1="{y}" x2="{w - 10}" y2="{y}" stroke="#ddd"/>')
    for a in alerts:
        x = left + (w - 10 - left) * (a["ts"] - t0) / (t1 - t0)
        y = 20 + lane * kinds.index(a["kind"])
        tip = f"{_when(a['ts'])} {a['kind']} client {a['client_id']}"
        parts.append(f'<circle cx="{x:.1f}" cy="{y}" r="5" fill="crimson" fill-opacity="0.7">'
                     f'<title>{_esc(tip)}</title></circle>')
    parts.append(f'<text x="{left}" y="{h + 12}" font-size="11">{_when(t0)}</text>'
                 f'<text x="{w - 10}" y="{h + 12}" font-size="11" text-anchor="end">{_when(t1)} UTC</text></svg>')
    return "".join(parts)


def _svg_drift(windows: list[dict[str, Any]], alpha: float) -> str:
    if not windows:
        return '<p class="none">No completed drift window in the stored events yet.</p>'
    w, h, left, top, bottom = 760, 220, 60, 10, 30
    lo = min(-6.0, min(np.log10(max(x["p_value"], 1e-300)) for x in windows))

    def y(p: float) -> float:
        return float(top + (h - top - bottom) * (np.log10(max(p, 10 ** lo)) / lo))

    n = len(windows)

    def x(i: int) -> float:
        return left + (w - 10 - left) * (i / max(1, n - 1))

    pts = " ".join(f"{x(i):.1f},{y(v['p_value']):.1f}" for i, v in enumerate(windows))
    parts = [f'<svg class="plot" id="drift-plot" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             'role="img" aria-label="drift p-value per window">',
             f'<line x1="{left}" y1="{y(alpha):.1f}" x2="{w - 10}" y2="{y(alpha):.1f}" stroke="orange" '
             f'stroke-dasharray="4 3"/><text x="{w - 12}" y="{y(alpha) - 4:.1f}" font-size="11" text-anchor="end">'
             f'alpha {alpha:g}</text>']
    for e in range(0, int(np.floor(lo)) - 1, -2):
        parts.append(f'<text x="{left - 6}" y="{y(10.0 ** e) + 4:.1f}" font-size="11" text-anchor="end">1e{e}</text>')
    parts.append(f'<polyline points="{pts}" fill="none" stroke="steelblue" stroke-width="1.5"/>')
    for i, v in enumerate(windows):
        colour = "crimson" if v["drift"] else "steelblue"
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v["p_value"]):.1f}" r="3.5" fill="{colour}"><title>'
                     f'{_esc(_when(v["ts"]))} p={v["p_value"]:.3g}</title></circle>')
    parts.append(f'<text x="{left}" y="{h - 8}" font-size="11">{_esc(_when(windows[0]["ts"]))}</text>'
                 f'<text x="{w - 10}" y="{h - 8}" font-size="11" text-anchor="end">{_esc(_when(windows[-1]["ts"]))} '
                 'UTC</text></svg>')
    return "".join(parts)


def _image(x: np.ndarray, layout: str, bounds: tuple[float, float]) -> str | None:
    """A PNG data URI of one image example (chw or hwc, 1 or 3 channels); None for other shapes."""
    from sparring.audit.report.plots import figure, png

    a = x.transpose(1, 2, 0) if layout == "chw" and x.ndim == 3 else x
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        return None
    lo, hi = bounds
    fig = figure(1.2, 1.2)
    ax = fig.add_subplot()
    ax.imshow(np.clip((a - lo) / (hi - lo), 0, 1), cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_axis_off()
    return png(fig)


def _sample_html(s: dict[str, Any], service: GuardService, samples: RejectedSamples) -> str:
    cap = (f'<figcaption>{_esc(_when(s["ts"]))}<br>client {_esc(s["client_id"])}<br>{_esc(s["detector"])}, event '
           f'{_esc(s["event_id"])}</figcaption>')
    if s["text"] is not None:
        return f'<figure class="sample"><pre class="text-input">{_esc(s["text"])}</pre>{cap}</figure>'
    x = s["x"]
    spec = service.spec if hasattr(service, "spec") else None  # a text service has none
    uri = None
    if spec is not None and spec.layout in ("chw", "hwc") and np.ndim(spec.bounds[0]) == 0:
        lo, hi, layout = float(spec.bounds[0]), float(spec.bounds[1]), spec.layout
        uri = samples.image(s["id"], lambda: _image(x, layout, (lo, hi)))
    if uri is not None:
        return f'<figure class="sample"><img class="rejected-input" alt="rejected input" src="{uri}">{cap}</figure>'
    flat = ", ".join(f"{v:.4g}" for v in x.reshape(-1)[:12])
    return f'<figure class="sample"><pre class="text-input">[{_esc(flat)}{", ..." if x.size > 12 else ""}]</pre>' \
           f'{cap}</figure>'


def _clients_table(rows: list[tuple[str, int, int, int]], bar: int, cls: str) -> str:
    if not rows:
        return '<p class="none">No client requests in the last 24 hours.</p>'
    top = max(1, *[(n, rej, bad)[bar - 1] for _, n, rej, bad in rows])
    body = "".join(f'<tr><td class="client">{_esc(c)}</td><td>{n}</td><td>{rej}</td><td>{bad}</td><td><span class="bar"'
                   f' style="width:{int(160 * (n, rej, bad)[bar - 1] / top)}px"></span></td></tr>'
                   for c, n, rej, bad in rows)
    return (f'<table class="{cls}"><tr><th>client</th><th>requests</th><th>rejected by detectors</th>'
            f'<th>refused (4xx/5xx)</th><th></th></tr>{body}</table>')


def render_dashboard(service: GuardService, samples: RejectedSamples | None = None, *, now: float | None = None) -> str:
    """The dashboard's HTML for ``service``'s store and the rejected inputs ``samples`` keeps (a plain function, for
    tests and notebooks)."""
    now = time.time() if now is None else now
    alerts = service.store.alerts(limit=500)
    windows = _drift_windows(service)
    by_req = _top_clients(service.store, now - 86400, "COUNT(*)")
    by_rej = _top_clients(service.store, now - 86400, "SUM(CASE WHEN decision = 'reject' THEN 1 ELSE 0 END)")
    by_rej = [r for r in by_rej if r[2] > 0]
    kept = [] if samples is None else samples.recent()
    alert_rows = "".join(f'<tr><td>{_esc(_when(a["ts"]))}</td><td>{_esc(a["kind"])}</td><td class="client">'
                         f'{_esc(a["client_id"] if a["client_id"] is not None else "-")}</td><td><code>'
                         f'{_esc(json.dumps(a["detail"], sort_keys=True)[:300])}</code></td></tr>' for a in alerts[:20])
    drift = service.drift
    drift_note = ("" if drift is None else f"KS test of each window of {drift.window} answered confidences against "
                  f"{drift.reference.size} reference confidences at level {drift.alpha:g}; windows tested live: "
                  f"{drift.tested}, alarms: {drift.alarms}.")
    sample_html = "".join(_sample_html(s, service, samples) for s in kept if samples is not None)
    sample_html = sample_html or '<p class="none">No rejected inputs kept.</p>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sparring guard dashboard</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1000px; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ padding: 3px 8px; text-align: left; }}
tr:nth-child(even) {{ background: #f6f6f6; }} .none {{ color: #777; }} code {{ font-size: 11px; }}
.bar {{ display: inline-block; height: 10px; background: steelblue; }}
.sample {{ display: inline-block; margin: 6px; vertical-align: top; font-size: 11px; max-width: 220px; }}
.text-input {{ white-space: pre-wrap; word-break: break-all; background: #fff4f4; padding: 4px; max-width: 220px; }}
.rejected-input {{ width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #ccc; }}
</style></head><body>
<h1>sparring guard</h1>
<p id="summary">Store {_esc(service.store.url)}; {len(alerts)} recent alert(s); generated {_esc(_when(now))} UTC.</p>
<h2>Alerts over time</h2>{_svg_alerts(alerts, now)}
<table id="alerts"><tr><th>time (UTC)</th><th>kind</th><th>client</th><th>detail</th></tr>{alert_rows}</table>
<h2>Drift p-value per window</h2><p>{_esc(drift_note) or "No drift window (disabled, labels output, or a text model)."}
</p>{_svg_drift(windows, drift.alpha) if drift is not None else ""}
<h2>Top clients by requests (last 24 h)</h2>{_clients_table(by_req, 1, "top-requests")}
<h2>Top clients by rejections (last 24 h)</h2>{_clients_table(by_rej, 2, "top-rejections")}
<h2>Recent rejected inputs</h2><div id="rejected">{sample_html}</div>
</body></html>
"""


# ---------------------------------------------------------------------- the route
class _Sessions:
    def __init__(self, hours: float) -> None:
        self.seconds = hours * 3600
        self._s: dict[str, tuple[float, str, str]] = {}  # token -> (expiry, key id, client id)
        self._lock = threading.Lock()

    def open(self, key_id: str, client_id: str) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._s = {t: v for t, v in self._s.items() if v[0] > now}
            self._s[token] = (now + self.seconds, key_id, client_id)
        return token

    def get(self, token: str | None) -> tuple[str, str] | None:
        if not token:
            return None
        with self._lock:
            v = self._s.get(token)
            if v is None or v[0] <= time.monotonic():
                self._s.pop(token, None)
                return None
            return v[1], v[2]


def add_dashboard(app: FastAPI, service: GuardService, authorise: Any, refuse: Any) -> RejectedSamples:
    """Add ``GET /admin/dashboard`` to the guard's FastAPI ``app`` (``authorise``/``refuse``: the app's helpers);
    the :class:`RejectedSamples` the app feeds with the fired examples of rejected requests."""
    from anyio import to_thread
    from fastapi.responses import HTMLResponse, RedirectResponse

    from sparring.guard.store import Event

    samples = RejectedSamples(service.store, service.config.dashboard.rejected_samples)
    sessions = _Sessions(service.config.dashboard.session_hours)
    headers = {"Content-Security-Policy": _CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}

    @app.get("/admin/dashboard")
    async def dashboard(request: Request) -> Any:
        started = time.perf_counter()
        key = request.query_params.get("key")
        if key is not None:  # a browser's first visit: trade the key for a session cookie, drop it from the URL
            who = await to_thread.run_sync(service.keys.verify, key)
            if who is None or who.role != "admin":
                return await refuse(401 if who is None else 403, "unauthorised" if who is None else "forbidden",
                                    "open /admin/dashboard?key=<an admin key> (a valid, unrevoked admin key).",
                                    request, started, who=who)
            token = sessions.open(who.key_id, who.client_id)
            await to_thread.run_sync(lambda: service.record(Event(who.client_id, request.url.path, 303, "ok",
                                                                  message="dashboard session opened")))
            resp = RedirectResponse("/admin/dashboard", status_code=303, headers={"Cache-Control": "no-store",
                                                                                  "Referrer-Policy": "no-referrer"})
            resp.set_cookie(COOKIE, token, max_age=int(sessions.seconds), path="/admin/dashboard", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
            return resp
        held = sessions.get(request.cookies.get(COOKIE))
        if held is not None:
            rec = await to_thread.run_sync(service.store.get_key, held[0])
            if rec is None or rec.revoked is not None or rec.role != "admin":
                held = None
        if held is None:
            _, refused = await authorise(request, started, "admin")
            if refused is not None:
                return refused
        page = await to_thread.run_sync(lambda: render_dashboard(service, samples))
        service.metrics.latency.labels("/admin/dashboard").observe(time.perf_counter() - started)
        return HTMLResponse(page, headers=headers)

    return samples
