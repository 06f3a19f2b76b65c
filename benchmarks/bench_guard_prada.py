"""Which guard mechanism catches which model-extraction client, over HTTP on digits, and after how many queries.

One guard (digits-cnn; Mahalanobis over three layers calibrated at 5% FPR, policy log, so the per-client
detector-rate alert is on; PRADA delta 0.9 after 100 distances, at most 500 stored queries per client; SQLite store)
on 127.0.0.1. Clients are sparring's own attacks driven through ``HttpTarget`` (their real query streams):
``KnockoffNets`` jacobian (Papernot et al. 2017 Jacobian augmentation with a trained surrogate; 200 queries, 4
rounds, seeded from 100 test digits), random (uniform noise, 200), natural (Knockoff Nets on the training digits:
200, 500, 1000), plus a Papernot-style stream with random step directions (200, grown from 10 test digits), each for
``--seeds`` seeds, and ``--natural`` honest clients of 200 distinct digits each. Per client: PRADA's flag (the query
it came at), its final Shapiro-Wilk W, and the detector-rate alert (the examples it came at).

    python benchmarks/bench_guard_prada.py --seeds 3 --natural 40 --out benchmarks/results/guard-prada.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from sparring import zoo
from sparring.attacks.extraction.knockoff import KnockoffNets
from sparring.guard.auth import create_key
from sparring.guard.config import parse_config
from sparring.guard.server import GuardServer
from sparring.guard.service import GuardService
from sparring.targets.http import HttpTarget

_MAHA = {"kind": "mahalanobis", "policy": "log", "fit": {"data": "train"},
         "combine": {"data": "test", "start": 150, "stop": 250},
         "calibrate": {"data": "test", "stop": 150, "fpr": 0.05}}


def papernot_stream(seeds: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Signed 0.1 steps from the previous generation in random directions, grown from natural seeds."""
    queries = [seeds]
    while sum(len(q) for q in queries) < n:
        queries.append((queries[-1] + 0.1 * torch.randn(queries[-1].shape, generator=gen).sign()).clamp(0, 1))
    return torch.cat(queries)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--natural", type=int, default=40)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = zoo.data("digits-cnn")
    tmp = Path(tempfile.mkdtemp())
    svc = GuardService(parse_config({
        "model": "digits-cnn", "store": {"url": f"sqlite:///{tmp / 'guard.db'}"}, "drift": {"enabled": False},
        "rate_limit": {"rate": 10_000, "burst": 10_000}, "detectors": [_MAHA],
        "prada": {"delta": 0.9, "min_queries": 100, "max_samples": 500}}, base_dir=tmp))
    rows: list[dict[str, Any]] = []
    t0 = time.time()

    def row(name: str, kind: str, seed: int | None) -> None:
        st = svc.store.get_state(f"prada:{name}") or {}
        al = {a["kind"]: a["detail"] for a in svc.store.alerts(client_id=name)}
        rows.append({"client": name, "kind": kind, "seed": seed, "queries": st.get("queries"),
                     "prada_flagged_at": st.get("flagged_at"), "prada_final_w": st.get("statistic"),
                     "detector_rate_at": al.get("detector-rate", {}).get("examples")})
        print(json.dumps(rows[-1]), flush=True)

    with GuardServer(svc) as server:
        def api(name: str, batch_size: int = 10) -> HttpTarget:
            key, _ = create_key(svc.store, name)
            return HttpTarget(server.predict_url, svc.spec, score_kind="logits", batch_size=batch_size,
                              headers={"Authorization": f"Bearer {key}"})

        for seed in range(args.seeds):
            with api(f"jacobian-{seed}") as a:
                KnockoffNets(budget=200, strategy="jacobian", rounds=4, epochs=10, seed=seed)(a, data.x_test[:100])
            row(f"jacobian-{seed}", "jacobian", seed)
            with api(f"synthetic-{seed}") as a:
                a.query(papernot_stream(data.x_test[10 * seed : 10 * seed + 10], 200,
                                        torch.Generator().manual_seed(seed)))
            row(f"synthetic-{seed}", "papernot-random-direction", seed)
            with api(f"noise-{seed}") as a:
                KnockoffNets(budget=200, strategy="random", rounds=1, epochs=1, seed=seed)(a)
            row(f"noise-{seed}", "uniform-noise", seed)
        for budget in (200, 500, 1000):
            with api(f"knockoff-natural-{budget}", 20) as a:
                KnockoffNets(budget=budget, strategy="natural", rounds=1, epochs=1, seed=0)(a, data.x_train)
            row(f"knockoff-natural-{budget}", "knockoff-natural", 0)
        natural = torch.cat([data.x_train, data.x_test])
        gen = torch.Generator().manual_seed(2)
        with httpx.Client(timeout=30) as http:
            for c in range(args.natural):
                key, _ = create_key(svc.store, f"natural-{c}")
                x = natural[torch.randperm(len(natural), generator=gen)[:200]]
                for i in range(0, 200, 20):
                    http.post(server.predict_url, json={"inputs": x[i : i + 20].tolist()},
                              headers={"Authorization": f"Bearer {key}"}).raise_for_status()
                row(f"natural-{c}", "natural", None)
    svc.store.close()
    nat = [r for r in rows if r["kind"] == "natural"]
    summary = {"natural_clients": len(nat), "natural_prada_flagged": sum(r["prada_flagged_at"] is not None
                                                                         for r in nat),
               "natural_rate_alerted": sum(r["detector_rate_at"] is not None for r in nat),
               "seconds": round(time.time() - t0, 1), "load_average": os.getloadavg()}
    print(json.dumps(summary))
    if args.out is not None:
        args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
