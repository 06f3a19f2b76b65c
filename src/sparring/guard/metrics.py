"""Prometheus metrics of one guard app, in its own registry (no client ids or keys in any label)."""

from __future__ import annotations

from typing import Any

__all__ = ["GuardMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class GuardMetrics:
    """Counters, gauges and histograms served at ``GET /metrics`` in the Prometheus text format."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram("guard_request_seconds", "Time from request to response, by route.", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.requests = Counter("guard_requests", "Requests by decision and status code.", ["decision", "status"],
                                registry=r)
        self.detector_score = Summary("guard_detector_score", "Scores of answered examples, by detector.",
                                      ["detector"], registry=r)
        self.detector_threshold = Gauge("guard_detector_threshold", "Calibrated threshold, by detector.",
                                        ["detector"], registry=r)
        self.detector_fired = Counter("guard_detector_fired", "Examples over the threshold, by detector and policy.",
                                      ["detector", "policy"], registry=r)
        self.alerts = Counter("guard_alerts", "Alerts raised, by kind.", ["kind"], registry=r)
        self.queue_depth = Gauge("guard_queue_depth", "Prediction requests queued or running now.", registry=r)
        self.queue_rejected = Counter("guard_queue_rejected", "Requests answered 503 because the queue was full.",
                                      registry=r)
        self.dropped = Counter("guard_events_dropped", "Events that could not be stored (expected: zero).",
                               registry=r)
        self.store_errors = Counter("guard_store_errors", "Store operations that failed (unreachable, locked, disk), "
                                    "by operation: auth (an uncached key), admin, predict (detector state), record.",
                                    ["operation"], registry=r)
        self.prada_clients = Gauge("guard_prada_clients", "Clients tracked by PRADA in memory.", registry=r)
        self.drift_p = Gauge("guard_drift_p_value", "p-value of the last completed drift window.", registry=r)
        self.webhook_deliveries = Counter("guard_webhook_deliveries", "Alert webhook attempts by result (delivered, "
                                          "retried, failed).", ["result"], registry=r)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, labels: dict[str, str] | None = None) -> Any:
        """A sample's value (for tests), e.g. ``value("guard_events_dropped_total")``."""
        return self.registry.get_sample_value(name, labels or {})
