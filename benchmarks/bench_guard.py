"""Latency the guard adds over the bare model, under an open-loop load on loopback, and events lost.

Two servers run as their own processes on 127.0.0.1: the bare model (``sparring.serving``, the same protocol) and
``sparring guard serve`` in front of the same zoo model (Mahalanobis detector over three layers with policy log,
PRADA per client, the KS drift window, SQLite WAL + synchronous=FULL). A load generator (asyncio streams, one
process) sends one 1×28×28 digit per request at a fixed rate from ``--clients`` clients, open-loop: request ``i``
is due at ``t0 + i/rate`` whatever happened before, and its latency is measured from that due time (so a server
that falls behind is charged for the queueing, Tene's "coordinated omission"). Reported per server: the rate held,
p50/p95/p99 latency, errors; for the guard also p50/p95/p99 minus the bare model's (the latency it adds), and the
events lost: 200 answers whose event is not in the store (expected 0).

``--model spam`` serves the SMS spam text model (``spam-tfidf-logreg``) instead, one message per request, with the
``unicode`` detector (policy log); its bare server is a stdlib HTTP server around the same ``TextTarget`` (the
protocol of ``HttpTextTarget``). Each row also gives the CPU time each server process spent per request (from
``/proc/<pid>/stat``) and the load average before the run. Each measured run follows ``--warmup`` seconds of the
same load (default 2, not counted; the worst latency of its first second is reported as the cold start), and each
row gives the worst latency of every second (``max_ms_per_second``), which shows where a stall happened.

    python benchmarks/bench_guard.py --rate 300 --seconds 60 --out benchmarks/results/guard.json
    python benchmarks/bench_guard.py --model spam --rate 50 100 300 --seconds 15

Every run here shares two cores with the load generator; say so when quoting the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

_BARE = ("import sys; from sparring import zoo; from sparring.serving import make_server; "
         "s = make_server(zoo.load('digits-cnn'), port=0); print('listening on', s.url, file=sys.stderr, flush=True);"
         " s.serve_forever()")


_BARE_TEXT = (
    "import json, sys\n"
    "from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
    "from sparring.data.text import load_text_model\n"
    "model = load_text_model('spam-tfidf-logreg')\n"
    "class H(BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def do_POST(self):\n"
    "        body = self.rfile.read(int(self.headers['Content-Length']))\n"
    "        out = json.dumps({'scores': model.query(json.loads(body)['inputs']).tolist()}).encode()\n"
    "        self.send_response(200); self.send_header('Content-Type', 'application/json')\n"
    "        self.send_header('Content-Length', str(len(out))); self.end_headers(); self.wfile.write(out)\n"
    "    def log_message(self, *a):\n"
    "        pass\n"
    "ThreadingHTTPServer.daemon_threads = True\n"
    "s = ThreadingHTTPServer(('127.0.0.1', 0), H)\n"
    "print('listening on', f'http://127.0.0.1:{s.server_address[1]}', file=sys.stderr, flush=True)\n"
    "s.serve_forever()\n")

_MAHALANOBIS = ("detectors:\n  - {kind: mahalanobis, policy: log, fit: {data: train}, "
                "combine: {data: test, start: 150, stop: 250}, calibrate: {data: test, stop: 150, fpr: 0.05}}\n"
                "drift: {window: 200, reference: {data: test, stop: 150}}\n")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(cmd: list[str], log: Path, marker: str) -> tuple[subprocess.Popen[bytes], str]:
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stderr=err, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if marker in text:
            return proc, text.split(marker, 1)[1].split()[0]
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text(errors='replace')[-2000:]}")


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes) -> int:
    """One HTTP/1.1 keep-alive POST on an open connection; the status (the body is read and dropped)."""
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    header = await reader.readuntil(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    length = 0
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _load(url: str, keys: list[str], bodies: list[bytes], rate: float, seconds: float) -> dict[str, Any]:
    """Open loop over ``len(keys) * 8`` keep-alive connections (raw asyncio streams: a pooled HTTP client spends
    more CPU than the servers once a backlog forms, and then measures itself). Request ``i`` is due at
    ``t0 + i / rate``; a connection takes the next request when it is free, sends it at once if it is late, and the
    latency is counted from the due time."""
    host, _, port = url.split("//", 1)[1].split("/", 1)[0].rpartition(":")
    path = "/" + url.split("//", 1)[1].split("/", 1)[1]
    n = int(rate * seconds)
    lat = np.full(n, np.nan)
    status = np.zeros(n, dtype=int)
    heads = [(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
              + (f"Authorization: Bearer {k}\r\n" if k else "") + "Content-Length: ").encode() for k in keys]
    nxt = iter(range(n))
    t0 = time.perf_counter() + 0.5
    c0 = time.process_time()

    async def worker() -> None:
        conn = await asyncio.open_connection(host, int(port))
        for i in nxt:
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                status[i] = await _post(*conn, heads[i % len(keys)], bodies[i % len(bodies)])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status[i] = -1
                conn[1].close()
                conn = await asyncio.open_connection(host, int(port))
            lat[i] = time.perf_counter() - due
        conn[1].close()

    await asyncio.gather(*(worker() for _ in range(len(keys) * 8)))
    wall = time.perf_counter() - t0
    ok = status == 200
    q = np.percentile(lat[ok] * 1000, [50, 95, 99]) if ok.any() else [float("nan")] * 3
    sec = (np.arange(n) / rate).astype(int)  # the second each request was due in: where a stall happened
    timeline = [round(float(np.max(lat[(sec == s) & ok])) * 1000, 1) if ((sec == s) & ok).any() else None
                for s in range(int(sec.max()) + 1)]
    return {"requests": n, "ok": int(ok.sum()), "errors": int((~ok).sum()), "held_rps": round(n / wall, 1),
            "p50_ms": round(float(q[0]), 2), "p95_ms": round(float(q[1]), 2), "p99_ms": round(float(q[2]), 2),
            "max_ms_per_second": timeline, "load_generator_cpu_s": round(time.process_time() - c0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, nargs="+", default=[300.0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--warmup", type=float, default=2.0,
                    help="seconds of the same load before each measured run, not counted (the first second of a "
                         "fresh guard pays each client's key hash and thread start-up: reported as warmup.*_max_ms)")
    ap.add_argument("--model", choices=["digits-cnn", "spam"], default="digits-cnn",
                    help="digits-cnn: Mahalanobis + PRADA + drift; spam: spam-tfidf-logreg with the unicode detector")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from sparring import zoo
    from sparring.guard.auth import create_key
    from sparring.guard.store import open_store

    tmp = Path(tempfile.mkdtemp(prefix="bench-guard-"))
    db = tmp / "guard.db"
    text = args.model == "spam"
    (tmp / "guard.yaml").write_text(
        f"model: {'spam-tfidf-logreg' if text else 'digits-cnn'}\nstore: {{url: 'sqlite:///{db}'}}\n"
        "queue: {max_size: 512}\nrate_limit: {rate: 100000, burst: 100000}\nlimits: {max_batch: 16}\n"
        + ("detectors:\n  - {kind: unicode, policy: log}\n" if text else _MAHALANOBIS))
    with open_store(f"sqlite:///{db}") as st:
        keys = [create_key(st, f"client-{c}")[0] for c in range(args.clients)]
    if text:
        from sparring.data.text import load_sms_spam

        msgs = load_sms_spam().x_test
        bodies = [json.dumps({"inputs": [m]}).encode() for m in msgs]
    else:
        x = zoo.data("digits-cnn").x_test[250:]
        bodies = [json.dumps({"inputs": x[i : i + 1].tolist()}).encode() for i in range(len(x))]
    bare, bare_url = _start([sys.executable, "-c", _BARE_TEXT if text else _BARE], tmp / "bare.log", "listening on ")
    guard, guard_url = _start([sys.executable, "-m", "sparring.cli", "guard", "serve", str(tmp / "guard.yaml"),
                               "--port", "0"], tmp / "guard.log", "guard listening on ")
    results: list[dict[str, Any]] = []
    try:
        for rate in args.rate:
            load = [round(v, 2) for v in os.getloadavg()]
            wb = asyncio.run(_load(bare_url + "/predict", [""] * args.clients, bodies, rate, args.warmup))
            c0 = _cpu_seconds(bare.pid)
            b = asyncio.run(_load(bare_url + "/predict", [""] * args.clients, bodies, rate, args.seconds))
            b["cpu_ms_per_request"] = round((_cpu_seconds(bare.pid) - c0) * 1000 / b["requests"], 2)
            wg = asyncio.run(_load(guard_url + "/predict", keys, bodies, rate, args.warmup))
            before = _count(db)
            c0 = _cpu_seconds(guard.pid)
            g = asyncio.run(_load(guard_url + "/predict", keys, bodies, rate, args.seconds))
            g["cpu_ms_per_request"] = round((_cpu_seconds(guard.pid) - c0) * 1000 / g["requests"], 2)
            stored = _count(db) - before
            row = {"model": args.model, "rate": rate, "seconds": args.seconds, "load_avg_before": load,
                   "warmup": {"seconds": args.warmup, "bare_max_ms": wb["max_ms_per_second"][:1],
                              "guard_max_ms": wg["max_ms_per_second"][:1]},
                   "bare": b, "guard": g,
                   "added_ms": {k: round(g[k] - b[k], 2) for k in ("p50_ms", "p95_ms", "p99_ms")},
                   "events_lost": max(0, g["ok"] - stored), "events_stored": stored}
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for p in (bare, guard):
            p.terminate()
            p.wait(timeout=30)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cpus": os.cpu_count(), "load_avg_start": os.getloadavg(),
                                        "results": results}, indent=2))


def _count(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events WHERE status = 200").fetchone()[0])


if __name__ == "__main__":
    main()
