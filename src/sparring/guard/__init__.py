"""The guard: a monitoring proxy in front of a deployed model (``sparring guard serve guard.yaml``).

Per request it validates the input against the model's :class:`~sparring.targets.InputSpec`, runs the configured
adversarial-input detectors with a policy each (log, flag, reject), tracks every client with PRADA (Juuti et al.
2019) and the traffic with a drift window, and records the event durably before answering. It speaks the protocol
of :mod:`sparring.serving`, so :class:`~sparring.targets.http.HttpTarget` clients work unchanged. FastAPI, uvicorn,
prometheus-client and psycopg come with the ``guard`` extra and are imported only by the modules that serve.
"""

from __future__ import annotations

from sparring.guard.config import GuardConfig, load_config, parse_config
from sparring.guard.store import Alert, Event, PostgresStore, SQLiteStore, Store, open_store

__all__ = ["Alert", "Event", "GuardConfig", "PostgresStore", "SQLiteStore", "Store", "load_config", "open_store",
           "parse_config"]
