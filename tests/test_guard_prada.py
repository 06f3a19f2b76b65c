"""The issue's PRADA criteria in the guard, on digits over real HTTP: every synthetic extraction client is alerted
within 200 queries and none of 40 natural clients is; which mechanism catches which client is stated per test.

Extraction clients are sparring's own attacks driven through :class:`HttpTarget` (their real query streams):
:class:`KnockoffNets` with ``strategy="jacobian"`` (Papernot et al. 2017 Jacobian augmentation with a trained
surrogate), ``"random"`` (uniform noise) and ``"natural"`` (Knockoff Nets, Orekondy et al. 2019, on natural digits),
plus a Papernot-style stream with random step directions (no surrogate).

Measured (benchmarks/bench_guard_prada.py, results/guard-prada.json: the same guard, seeds 0-2; digits-cnn, PRADA
delta 0.9 after 100 distances, Mahalanobis calibrated at 5% FPR, policy log): the Jacobian client is flagged by PRADA
at 112/110/123 queries (and by the detector rate at 70 examples); the random-direction synthetic one at 108/110/108
(detector rate at 20); uniform noise is missed by PRADA (final W 0.974/0.986/0.989) and caught by the detector-rate
alert at 20 examples (20 of 20 fired); 0 of 40 natural clients alerted by either (final W 0.956 to 0.99); Knockoff
on natural digits is missed by both after 200, 500 and 1000 queries (final W 0.969, 0.981, 0.995): it satisfies
PRADA's assumption that an honest client's queries look like natural data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import torch

from sparring.attacks.extraction.knockoff import KnockoffNets
from sparring.data import Dataset
from sparring.guard.auth import create_key
from sparring.guard.server import GuardServer
from sparring.guard.service import GuardService
from sparring.targets.http import HttpTarget
from tests.guard_helpers import bearer, make_service
from tests.test_guard_replicas import papernot_stream

pytestmark = pytest.mark.usefixtures("one_thread")

_MAHA = {"kind": "mahalanobis", "policy": "log", "fit": {"data": "train"},
         "combine": {"data": "test", "start": 150, "stop": 250},
         "calibrate": {"data": "test", "stop": 150, "fpr": 0.05}}


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GuardService, GuardServer]]:
    tmp = tmp_path_factory.mktemp("guard-prada")
    svc = make_service(tmp, detectors=[_MAHA], prada={"delta": 0.9, "min_queries": 100, "max_samples": 500})
    with GuardServer(svc) as server:
        yield svc, server
    svc.store.close()


def _api(guard: tuple[GuardService, GuardServer], client: str, batch_size: int = 10) -> HttpTarget:
    svc, server = guard
    key, _ = create_key(svc.store, client)
    return HttpTarget(server.predict_url, svc.spec, score_kind="logits", batch_size=batch_size,
                      headers=bearer(key))


def _alerts(svc: GuardService, client: str) -> dict[str, dict[str, Any]]:
    return {a["kind"]: a["detail"] for a in svc.store.alerts(client_id=client)}


def test_prada_flags_a_jacobian_augmentation_client_within_200_queries(guard: Any, digits: Dataset) -> None:
    svc, _ = guard
    with _api(guard, "jacobian") as api:
        res = KnockoffNets(budget=200, strategy="jacobian", rounds=4, epochs=10, seed=0)(api, digits.x_test[:100])
    assert res.queries == 200
    alerts = _alerts(svc, "jacobian")
    assert "prada" in alerts and alerts["prada"]["flagged_at"] <= 200, alerts
    assert alerts["prada"]["flagged_at"] > 100  # not before the test may run (min_queries distances)


def test_prada_flags_a_papernot_style_random_direction_client(guard: Any, digits: Dataset) -> None:
    svc, _ = guard
    x = papernot_stream(digits.x_test[:10], 200, torch.Generator().manual_seed(0))
    with _api(guard, "synthetic") as api:
        api.query(x)
    alerts = _alerts(svc, "synthetic")
    assert "prada" in alerts and alerts["prada"]["flagged_at"] <= 200, alerts


def test_uniform_noise_is_missed_by_prada_and_caught_by_the_detector_rate(guard: Any) -> None:
    svc, _ = guard
    with _api(guard, "noise") as api:
        KnockoffNets(budget=200, strategy="random", rounds=1, epochs=1, seed=0)(api)
    alerts = _alerts(svc, "noise")
    assert "prada" not in alerts  # its minimum distances look normal (the known limit in docs/guard.md)
    assert alerts["detector-rate"]["examples"] <= 40, alerts


def _natural_clients(guard: Any, digits: Dataset, n: int, prefix: str, seed: int) -> None:
    """``n`` clients, each 200 distinct natural digits (train and test) in batches of 20: no alert of any kind."""
    svc, server = guard
    natural = torch.cat([digits.x_train, digits.x_test])
    gen = torch.Generator().manual_seed(seed)
    with httpx.Client(timeout=30) as http:
        for c in range(n):
            key, _ = create_key(svc.store, f"{prefix}-{c}")
            x = natural[torch.randperm(len(natural), generator=gen)[:200]]
            for i in range(0, 200, 20):
                r = http.post(server.predict_url, json={"inputs": x[i : i + 20].tolist()}, headers=bearer(key))
                assert r.status_code == 200
    flagged = [a["client_id"] for a in svc.store.alerts() if str(a["client_id"]).startswith(f"{prefix}-")]
    assert flagged == []
    states = [svc.store.get_state(f"prada:{prefix}-{c}") for c in range(n)]
    assert all(s is not None and s["queries"] == 200 and s["statistic"] > 0.9 for s in states)


def test_no_alert_for_natural_clients(guard: Any, digits: Dataset) -> None:
    _natural_clients(guard, digits, 5, "natural", seed=3)


@pytest.mark.slow  # 40 clients x 200 digits over HTTP: about 48 s on the loaded 2-core machine (8 000 examples)
def test_no_alert_for_40_natural_clients(guard: Any, digits: Dataset) -> None:
    _natural_clients(guard, digits, 40, "natural40", seed=2)


def test_knockoff_on_natural_digits_evades_prada_and_the_detector_rate(guard: Any, digits: Dataset) -> None:
    """Reported as measured (a known limit, not a goal): Knockoff Nets querying natural digits looks like a natural
    client to both mechanisms. If this starts failing, the guard got better: update docs/guard.md."""
    svc, _ = guard
    with _api(guard, "knockoff", batch_size=20) as api:
        res = KnockoffNets(budget=500, strategy="natural", rounds=1, epochs=1, seed=0)(api, digits.x_train)
    assert res.queries == 500
    assert _alerts(svc, "knockoff") == {}
    state = svc.store.get_state("prada:knockoff")
    assert state is not None and state["queries"] == 500 and state["flagged_at"] is None
