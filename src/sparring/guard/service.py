"""The guard's request pipeline, independent of the web framework: model, detectors and policies, per-client PRADA,
the drift window, and the durable event written before the answer is returned.

One lock serialises the pipeline (model call, detectors, PRADA, store commit): PRADA's per-client state sees
requests in one order, and that order is the order of the events in the store. The drift window is advanced in the
event transactions themselves (:class:`~sparring.guard.drift.SharedDrift`), so replicas sharing a store share it. A
:class:`GuardService` is what :func:`sparring.guard.app.create_app` serves; it can also be driven directly.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparring.defenses.detect.extraction import PradaDetector
from sparring.defenses.detect.features import MahalanobisDetector
from sparring.errors import EndpointError, QueryBudgetExceeded, SparringError, StoreError
from sparring.guard.auth import KeyVerifier, Principal, TokenBucket
from sparring.guard.build import GuardDetector, build_detectors, load_data_ref, load_model
from sparring.guard.config import GuardConfig
from sparring.guard.drift import ConfidenceKS, SharedDrift
from sparring.guard.metrics import GuardMetrics
from sparring.guard.store import Alert, Event, Store, StoreBatch, open_store
from sparring.guard.webhooks import WebhookDispatcher
from sparring.targets.base import Target
from sparring.targets.torch import TorchTarget

__all__ = ["GuardService", "Outcome"]

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What to answer: the status, the JSON body and extra headers (the event is already stored)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    event_id: int | None = None


@dataclass
class _Pending:
    batch: StoreBatch
    outcome: Outcome
    cid: str


class GroupCommitter:
    """One writer thread: takes the batches waiting, writes them in one transaction (one fsync), then releases each
    waiting request (DeWitt et al. 1984, "Implementation Techniques for Main Memory Database Systems": group
    commit). Every request still returns only after its own event is committed; order is submission order.

    With a :class:`SharedDrift` (:meth:`share_drift`), each group's transaction also advances the drift window shared
    by every replica of the store; ``on_windows`` gets the committed windows' ``(event id, result)`` before the
    group's requests are released."""

    def __init__(self, store: Store, max_group: int = 256) -> None:
        self.store = store
        self.max_group = max_group
        self.drift: SharedDrift | None = None
        self._on_windows: Callable[[list[tuple[int, dict[str, Any]]]], None] | None = None
        self._q: queue.SimpleQueue[tuple[StoreBatch, Future[int]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sparring-guard-commit", daemon=True)
        self._thread.start()

    def share_drift(self, drift: SharedDrift, on_windows: Callable[[list[tuple[int, dict[str, Any]]]], None]) -> None:
        self.drift, self._on_windows = drift, on_windows

    def submit(self, batch: StoreBatch) -> int:
        fut: Future[int] = Future()
        self._q.put((batch, fut))
        return fut.result()

    def _run(self) -> None:
        while True:
            items = [self._q.get()]
            while len(items) < self.max_group:
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                ids = self.store.record_many([b for b, _ in items], self.drift)
                windows = self.drift.commit() if self.drift is not None else []
                if windows and self._on_windows is not None:
                    self._on_windows(windows)
            except StoreError as exc:
                for _, fut in items:
                    fut.set_exception(exc)
                continue
            except Exception as exc:  # never leave a request waiting
                for _, fut in items:
                    fut.set_exception(StoreError(f"the guard store failed: {type(exc).__name__}: {exc}"))
                continue
            for (_, fut), i in zip(items, ids, strict=True):
                fut.set_result(i)


def input_hash(x: torch.Tensor) -> str:
    """SHA-256 of a validated batch as C-ordered float32 bytes, with its shape (the same inputs hash alike however
    the JSON was formatted)."""
    a = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


class GuardService:
    """Everything one guard process holds: the target, detectors, PRADA, drift window, store, keys and metrics."""

    _store_reads = True  # False during one fail-open request while the store is down (memory state only)
    _shared_forward: GuardDetector | None = None

    def __init__(self, config: GuardConfig, *, target: Target | None = None, store: Store | None = None) -> None:
        self.target = target if target is not None else load_model(config)
        self.spec = self.target.spec
        self.detectors: list[GuardDetector] = build_detectors(config, self.target)
        # A Mahalanobis detector on the served in-process model reads the layers of the very forward pass that
        # answers the request (its score_with_output); every other detector scores the input separately.
        self._shared_forward = next((d for d in self.detectors if isinstance(self.target, TorchTarget)
                                     and isinstance(d.detector, MahalanobisDetector) and d.detector.noise == 0
                                     and d.detector.target is self.target), None)
        self._init_common(config, store)
        p = config.prada
        self.prada: PradaDetector | None = None
        if p.enabled:
            self.prada = PradaDetector(delta=p.delta, min_queries=p.min_queries, max_samples=max(p.max_samples,
                                       p.min_queries), max_clients=p.max_clients)
        self.drift = self._build_drift()
        if self.drift is not None:  # one window over every replica's traffic, advanced in the event transactions
            self.committer.share_drift(SharedDrift(self.drift), self._drift_windows)
        for d in self.detectors:
            self.metrics.detector_threshold.labels(d.name).set(d.threshold)
        self._rates: dict[str, dict[str, Any]] = {}  # per client: examples, fired, alerted (cache of the store)
        fprs = [c.calibrate.fpr for c in config.detectors if c.calibrate is not None and c.threshold is None]
        self.rate_p0 = min(0.5, sum(fprs)) if fprs and len(fprs) == len(config.detectors) else None
        self.apply_retention()

    # ------------------------------------------------------------------ setup
    def _init_common(self, config: GuardConfig, store: Store | None) -> None:
        """What every guard holds whatever it serves: store, group committer, keys, rate limits, metrics, queue."""
        self.config = config
        self.output = config.output
        self.store = store if store is not None else open_store(config.store.url)
        self.metrics = GuardMetrics()
        self.committer = GroupCommitter(self.store)
        self.webhooks = WebhookDispatcher(config.webhooks, self.store, self.metrics) if config.webhooks else None
        self.keys = KeyVerifier(self.store, cache_seconds=config.auth.cache_seconds)
        self.rate = TokenBucket(config.rate_limit.rate, config.rate_limit.burst)
        self._lock = threading.Lock()
        self._depth = 0
        self._depth_lock = threading.Lock()
        self._requests_since_purge = 0

    def _build_drift(self) -> ConfidenceKS | None:
        d = self.config.drift
        if not d.enabled or self.output == "labels":
            return None
        ref = d.reference
        if ref is None:
            refs = [c.calibrate for c in self.config.detectors if c.calibrate is not None]
            if not refs:
                return None
            ref = refs[0]
        x, _ = load_data_ref(ref, self.config)
        with torch.no_grad():
            conf = self._probabilities(self.target.query(self.spec.validate(x)[0])).amax(dim=1)
        drift = ConfidenceKS(conf.numpy(), window=d.window, alpha=d.alpha)
        saved = self.store.get_state("drift")
        if saved is not None and saved.get("fingerprint") == drift.fingerprint:
            drift.load_state_dict(saved)
        return drift

    def _probabilities(self, out: torch.Tensor) -> torch.Tensor:
        out = out.detach().double().cpu()
        return out.softmax(dim=1) if self.target.view_output == "logits" else out

    def apply_retention(self) -> tuple[int, int]:
        r, now = self.config.retention, time.time()
        return self.store.purge(events_before=None if r.events_days is None else now - r.events_days * 86400,
                                alerts_before=None if r.alerts_days is None else now - r.alerts_days * 86400)

    # ------------------------------------------------------------------ queue
    def enter_queue(self) -> bool:
        """Take a place in the bounded work queue (False when it is full: answer 503)."""
        with self._depth_lock:
            if self._depth >= self.config.queue.max_size:
                return False
            self._depth += 1
            self.metrics.queue_depth.set(self._depth)
            return True

    def leave_queue(self) -> None:
        with self._depth_lock:
            self._depth -= 1
            self.metrics.queue_depth.set(self._depth)

    # ------------------------------------------------------------------ events
    def record(self, event: Event, batch: StoreBatch | None = None) -> int | None:
        """Store an event (with what else the request changed); on a store failure count a dropped event and
        re-raise (the caller answers 503 when fail-closed) or, fail-open, return None."""
        b = batch if batch is not None else StoreBatch(event)
        self.metrics.requests.labels(event.decision, str(event.status)).inc()
        try:
            return self.committer.submit(b)
        except StoreError:
            self.metrics.dropped.inc()
            self.metrics.store_errors.labels("record").inc()
            logger.exception("event of a %s request (status %d) could not be stored", event.decision, event.status)
            if self.config.store.on_error == "fail-closed":
                raise
            return None

    def refuse(self, status: int, decision: str, message: str, *, path: str, client_id: str | None = None,
               body_sha: str | None = None, headers: dict[str, str] | None = None) -> Outcome:
        """A 4xx/5xx answer with its event stored first."""
        try:
            eid = self.record(Event(client_id, path, status, decision, input_sha256=body_sha, message=message))
        except StoreError as exc:
            return Outcome(503, {"error": f"the request was refused ({message}) and could not be recorded: {exc}"},
                           {"Retry-After": str(self.config.queue.retry_after)})
        return Outcome(status, {"error": message}, dict(headers or {}), eid)

    # ------------------------------------------------------------------ prediction
    def predict(self, who: Principal, x: torch.Tensor, *, path: str = "/predict") -> Outcome:
        """Answer a validated batch for ``who``: model, detectors and policies, PRADA, drift; event stored first."""
        t0 = time.perf_counter()
        sha = input_hash(x)
        with ExitStack() as held:
            with self._lock:  # model, detectors and detector state in one order ...
                try:
                    if self.store.shared and (self.prada is not None or self.rate_p0 is not None):
                        held.enter_context(self.store.client_lock(who.client_id))  # other replicas wait ...
                    res = self._predict_locked(who, x, sha, path, t0)
                except StoreError as exc:
                    self.metrics.store_errors.labels("predict").inc()
                    if self.config.store.on_error == "fail-closed":
                        return self.refuse(503, "error", f"the guard store is unavailable, so the request is not "
                                           f"answered: {exc}", path=path, client_id=who.client_id, body_sha=sha,
                                           headers={"Retry-After": str(self.config.queue.retry_after)})
                    logger.warning("the guard store is unavailable (fail-open): answering %r without its stored "
                                   "detector state: %s", who.client_id, exc)
                    self._store_reads = False
                    try:
                        res = self._predict_locked(who, x, sha, path, t0)
                    finally:
                        self._store_reads = True
            if isinstance(res, Outcome):
                return res
            # ... the commit grouped with others, in that order; ... until this client's state is committed
            return self._commit(res.batch, res.outcome, t0, res.cid)

    def _predict_locked(self, who: Principal, x: torch.Tensor, sha: str, path: str, t0: float) -> Outcome | _Pending:
        cid = who.client_id
        self._prada_load(cid)
        if self.prada is not None and self.config.prada.policy == "reject" and self.prada.flagged(cid):
            return self.refuse(403, "reject", f"client {cid!r} is flagged by PRADA as a model-extraction client; "
                               "ask the service's operator to review it.", path=path, client_id=cid, body_sha=sha)
        pre: dict[str, torch.Tensor] = {}
        out: torch.Tensor | None
        try:
            with torch.no_grad():
                shared = self._shared_forward if self.output == "scores" else None
                if shared is not None:  # the detector's forward pass is the model's answer: one pass, not two
                    s, raw = shared.detector.score_with_output(x)
                    pre[shared.name] = s.detach().double().cpu()
                    out = self.target._view(raw)
                else:
                    out = self.target.query(x) if self.output == "scores" else None
                labels = out.argmax(dim=1) if out is not None else self.target.query_labels(x)
        except EndpointError as exc:
            timeout = "timed out" in str(exc).lower() or "timeout" in type(exc.__cause__).__name__.lower()
            status = 504 if timeout else 502
            return self.refuse(status, "error", f"the upstream model failed: {exc}", path=path, client_id=cid,
                               body_sha=sha)
        except QueryBudgetExceeded as exc:
            return self.refuse(429, "error", str(exc), path=path, client_id=cid, body_sha=sha)
        except SparringError as exc:
            return self.refuse(400, "invalid", str(exc), path=path, client_id=cid, body_sha=sha)
        if out is not None and not bool(torch.isfinite(out).all()):
            return self.refuse(500, "error", "the model produced NaN or inf scores for this batch.", path=path,
                               client_id=cid, body_sha=sha)
        labels = labels.detach().cpu().long()
        report, rejected, flagged = self._run_detectors(x, pre)
        batch = StoreBatch(Event(cid, path, 200, "ok", input_sha256=sha, n_inputs=int(x.shape[0])))
        conf = None if out is None else self._probabilities(out).amax(dim=1)
        batch.event.prediction = {"labels": labels.tolist(),
                                  "confidence": None if conf is None else [round(float(c), 6) for c in conf]}
        batch.event.detectors = report
        self._rate_observe(cid, report, int(x.shape[0]), batch)  # rejected examples count too
        if rejected:
            name, idx = rejected
            d = report[name]
            msg = (f"rejected by detector {name!r}: example(s) {idx} scored above its threshold "
                   f"{d['threshold']:.6g} (max score {max(d['scores'][i] for i in idx):.6g}).")
            batch.event.status, batch.event.decision, batch.event.message = 403, "reject", msg
            return _Pending(batch, Outcome(403, {"error": msg, "guard": {"rejected_by": name, "examples": idx}}), cid)
        body: dict[str, Any] = {"labels" if out is None else "scores": (labels if out is None else out).tolist()}
        if flagged:
            batch.event.decision = "flag"
            body["guard"] = {"flagged": flagged}
        self._prada_observe(cid, x, labels, batch, report, body)
        if self.drift is not None and conf is not None:
            batch.drift = conf.tolist()  # consumed into the shared window in the event's transaction
        return _Pending(batch, Outcome(200, body), cid)

    def _drift_windows(self, windows: list[tuple[int, dict[str, Any]]]) -> None:
        """Committed drift windows (any replica's examples, this replica's transaction): metrics and webhooks."""
        for event_id, res in windows:
            self.metrics.drift_p.set(res["p_value"])
            if res["drift"]:
                alert = Alert(None, "drift", res)
                self.metrics.alerts.labels("drift").inc()
                if self.webhooks is not None:
                    self.webhooks.submit(event_id, [alert])

    def _commit(self, batch: StoreBatch, outcome: Outcome, t0: float, cid: str) -> Outcome:
        batch.event.latency_ms = (time.perf_counter() - t0) * 1000
        try:
            outcome.event_id = self.record(batch.event, batch)
        except StoreError as exc:
            if self.prada is not None:  # memory ran ahead of the store: reload this client from it next time
                self.prada.reset(cid)
            self._rates.pop(f"rate:{cid}", None)
            return Outcome(503, {"error": f"the request could not be recorded, so it is not answered: {exc}"},
                           {"Retry-After": str(self.config.queue.retry_after)})
        for a in batch.alerts:
            self.metrics.alerts.labels(a.kind).inc()
        if self.webhooks is not None and batch.alerts and outcome.event_id is not None:
            self.webhooks.submit(outcome.event_id, batch.alerts)  # committed: delivered by another thread
        self._requests_since_purge += 1
        if self._requests_since_purge >= 10_000:
            self._requests_since_purge = 0
            self.apply_retention()
        return outcome

    def _run_detectors(self, x: torch.Tensor, pre: dict[str, torch.Tensor] | None = None
                       ) -> tuple[dict[str, Any], tuple[str, list[int]] | None, list[str]]:
        report: dict[str, Any] = {}
        rejected: tuple[str, list[int]] | None = None
        flagged: list[str] = []
        for d in self.detectors:
            s = pre[d.name] if pre and d.name in pre else d.scores(x)
            fired = (s > d.threshold).nonzero().reshape(-1).tolist()
            report[d.name] = {"scores": [round(float(v), 6) for v in s], "threshold": d.threshold,
                              "policy": d.policy, "fired": fired}
            for v in s.tolist():
                self.metrics.detector_score.labels(d.name).observe(v)
            if fired:
                self.metrics.detector_fired.labels(d.name, d.policy).inc(len(fired))
                if d.policy == "reject" and rejected is None:
                    rejected = (d.name, fired)
                elif d.policy == "flag":
                    flagged.append(d.name)
        return report, rejected, flagged

    # ------------------------------------------------------------------ per-client detector rate
    def _rate_observe(self, cid: str, report: dict[str, Any], n: int, batch: StoreBatch) -> None:
        """Alert when a client's share of examples over some detector's threshold is implausible for clean traffic.

        With every detector calibrated at false-positive rate ``fpr_i`` on clean data, a clean example fires some
        detector with probability at most ``p0 = sum(fpr_i)`` (union bound). After at least 20 examples, the client
        is alerted (kind ``detector-rate``, once) when the binomial tail ``P(X >= fired | n, p0)`` falls below
        1e-6. This catches extraction clients whose queries are far from the data (uniform noise, the random
        strategy of Tramèr et al. 2016 and Knockoff's random images), whose minimum distances PRADA finds normal.
        """
        if self.rate_p0 is None or not self.detectors:
            return
        key = f"rate:{cid}"
        cached = self._rates.get(key) if not self.store.shared or not self._store_reads else None
        st = cached or (self.store.get_state(key) if self._store_reads else None) or {"examples": 0, "fired": 0,
                                                                                     "alerted": False}
        fired = set()
        for name, d in report.items():
            if name != "prada":
                fired.update(d["fired"])
        st = {"examples": st["examples"] + n, "fired": st["fired"] + len(fired), "alerted": st["alerted"]}
        # fired <= n p0: at or below the median, the tail is >= 1/2; skip the test (most requests of most clients)
        if not st["alerted"] and st["examples"] >= 20 and st["fired"] > st["examples"] * self.rate_p0:
            from scipy.special import bdtrc  # P(X > k): the ufunc, ~20x cheaper than scipy.stats.binom.sf

            p = float(bdtrc(st["fired"] - 1, st["examples"], self.rate_p0))
            if p < 1e-6:
                st["alerted"] = True
                batch.alerts.append(Alert(cid, "detector-rate", {"examples": st["examples"], "fired": st["fired"],
                                                                 "p0": self.rate_p0, "p_value": p}))
        self._rates[key] = st
        if len(self._rates) > 100_000:
            self._rates.pop(next(iter(self._rates)))
        batch.states[key] = st

    # ------------------------------------------------------------------ PRADA state, persisted per client
    def _prada_load(self, cid: str) -> dict[str, Any] | None:
        """The client's PRADA state in memory, read from the store when this process does not hold it, or, with a
        store shared by several replicas (PostgreSQL; the caller holds the client's lock), when another replica
        committed a later one: then only the queries it stored since this replica's latest are read."""
        if self.prada is None:
            return None
        st = self.prada.client_state(cid, members=False)
        if (st is not None and not self.store.shared) or not self._store_reads:
            return st
        saved = self.store.get_state(f"prada:{cid}")
        if saved is None:
            return st
        if st is not None:
            if (saved["queries"], saved["stored_total"]) == (st["queries"], st["stored_total"]):
                return st  # this replica wrote the latest state
            rows = self.store.prada_members(cid, since=int(st["stored_total"]))
            if self.prada.advance_client_state(cid, saved, [(q, lab, np.frombuffer(b, dtype=np.float32))
                                                             for q, lab, b in rows]):
                return saved
        members = [(q, lab, np.frombuffer(b, dtype=np.float32).tolist()) for q, lab, b in self.store.prada_members(cid)]
        self.prada.load_client_state(cid, saved, members)
        return saved

    def _prada_observe(self, cid: str, x: torch.Tensor, labels: torch.Tensor, batch: StoreBatch,
                       report: dict[str, Any], body: dict[str, Any]) -> None:
        if self.prada is None:
            return
        before = self.prada.client_state(cid, members=False)
        since = 0 if before is None else int(before["stored_total"])
        was = self.prada.flagged(cid)
        now = self.prada.observe(cid, x, labels)
        st = self.prada.client_state(cid, members=False)
        assert st is not None
        batch.states[f"prada:{cid}"] = st
        for seq, label, flat in self.prada.members(cid, since):
            batch.members.append((cid, seq, label, np.asarray(flat, dtype=np.float32).tobytes()))
        keep_from = int(st["stored_total"]) - self.prada.max_samples
        if keep_from > 0:
            batch.evict_below[cid] = keep_from
        report["prada"] = {"queries": st["queries"], "statistic": st["statistic"], "flagged": now}
        self.metrics.prada_clients.set(self.prada.n_clients)
        if now and not was:
            batch.alerts.append(Alert(cid, "prada", {"flagged_at": st["flagged_at"], "statistic": st["statistic"],
                                                     "delta": self.prada.delta}))
            if self.config.prada.policy == "reject":
                body.setdefault("guard", {})["prada"] = "flagged: later requests will be refused"

