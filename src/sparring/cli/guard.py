"""``sparring guard serve|keys|events|alerts``: the monitoring proxy in front of a model, and its store."""

from __future__ import annotations

import json
import time
from typing import Any

import click

__all__ = ["add_commands"]

_GUARD_EXIT_HELP = (
    "Exit codes: 0 success, 1 internal error, 2 usage error, 3 bad configuration or input, 4 model or store "
    "problem (cannot load, unreachable, locked)."
)


def _store_url(store: str | None, config: str | None) -> str:
    if store is not None:
        return store
    if config is not None:
        from sparring.guard.config import load_config

        return load_config(config).store.url
    raise click.UsageError("give --store URL (e.g. sqlite:///guard.db) or --config guard.yaml.")


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def add_commands(cli: click.Group) -> None:
    from sparring.cli import _fail

    def fail(exc: BaseException) -> None:
        _fail(exc)  # StoreError exits 4 (exit_code_for); under --json the error is the JSON object on stdout

    store_opts = [
        click.option("--store", help="Store URL: sqlite:///guard.db or postgresql://user@host:port/db."),
        click.option("--config", "config", type=click.Path(dir_okay=False), help="Read the store URL from this "
                     "guard.yaml instead."),
    ]

    def with_store(f: Any) -> Any:
        for opt in reversed(store_opts):
            f = opt(f)
        return f

    @cli.group(epilog=_GUARD_EXIT_HELP)
    def guard() -> None:
        """A monitoring proxy in front of a model: detectors, per-client PRADA, drift, durable events, metrics.

        \b
        Example:
          sparring guard keys create --store sqlite:///guard.db --client alice
          sparring guard serve guard.yaml --port 8080
        """

    @guard.command(epilog=_GUARD_EXIT_HELP)
    @click.argument("config", type=click.Path(dir_okay=False))
    @click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
    @click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
                  help="TCP port (0: a free one, printed).")
    @click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
                  help="Server processes; only 1: the guard is one process by design (see docs/guard.md).")
    def serve(config: str, host: str, port: int, workers: int) -> None:
        """Serve the model CONFIG names behind the guard (POST /predict as `sparring serve`, plus /admin, /metrics)."""
        if workers > 1:
            from sparring.guard.server import SINGLE_PROCESS_REASON

            raise click.BadParameter(f"{workers} workers: {SINGLE_PROCESS_REASON}", param_hint="--workers")
        from sparring.errors import SparringError
        from sparring.guard.config import load_config
        from sparring.guard.open import open_service
        from sparring.guard.server import GuardServer

        try:
            svc = open_service(load_config(config))
            server = GuardServer(svc, host, port)
        except (SparringError, OSError) as exc:
            fail(exc)
            return
        where = svc.store.url  # a relative sqlite:/// path is the current folder's, as `keys create --store` reads it
        if where.startswith("sqlite:///"):
            from pathlib import Path

            where = f"sqlite:///{Path(where.removeprefix('sqlite:///')).resolve()}"
        click.echo(f"guard listening on {server.url} (store {where})", err=True)
        try:
            server.serve_forever()
        finally:
            svc.store.close()

    @guard.group()
    def keys() -> None:
        """Create, list and revoke API keys (only salted hashes are stored)."""

    @keys.command("create")
    @with_store
    @click.option("--client", "client_id", required=True, help="Client id the key belongs to.")
    @click.option("--role", type=click.Choice(["client", "admin"]), default="client", show_default=True)
    def keys_create(store: str | None, config: str | None, client_id: str, role: str) -> None:
        """Make a key and print it once (it cannot be shown again)."""
        from sparring.errors import SparringError
        from sparring.guard.auth import create_key
        from sparring.guard.store import open_store

        try:
            with open_store(_store_url(store, config)) as st:
                key, rec = create_key(st, client_id, role)
        except SparringError as exc:
            fail(exc)
            return
        click.echo(f"key id {rec.key_id} for client {rec.client_id!r} ({rec.role}); the key (shown once):", err=True)
        click.echo(key)

    @keys.command("list")
    @with_store
    @click.option("--json", "as_json", is_flag=True)
    def keys_list(store: str | None, config: str | None, as_json: bool) -> None:
        """Key ids, clients and roles (never keys or hashes)."""
        from sparring.errors import SparringError
        from sparring.guard.store import open_store

        try:
            with open_store(_store_url(store, config)) as st:
                rows = st.keys()
        except SparringError as exc:
            fail(exc)
            return
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for r in rows:
            state = f"revoked {_when(r['revoked'])}" if r["revoked"] else "active"
            click.echo(f"{r['key_id']}  {r['client_id']:<24} {r['role']:<7} created {_when(r['created'])}  {state}")

    @keys.command("revoke")
    @with_store
    @click.argument("key_id")
    def keys_revoke(store: str | None, config: str | None, key_id: str) -> None:
        """Revoke KEY_ID (running guards stop accepting it within their auth cache time, 5 s by default)."""
        from sparring.errors import ParameterError, SparringError
        from sparring.guard.store import open_store

        try:
            with open_store(_store_url(store, config)) as st:
                if not st.revoke_key(key_id):
                    raise ParameterError(f"no active key with id {key_id!r}; see `sparring guard keys list`.")
        except SparringError as exc:
            fail(exc)
            return
        click.echo(f"revoked {key_id}", err=True)

    @guard.command(epilog=_GUARD_EXIT_HELP)
    @with_store
    @click.option("--client", "client_id", help="Only this client's events.")
    @click.option("--decision", help="Only this decision (ok, flag, reject, invalid, unauthorised, ...).")
    @click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    def events(store: str | None, config: str | None, client_id: str | None, decision: str | None, limit: int,
               as_json: bool) -> None:
        """Recorded requests, newest first."""
        rows = _query(store, config, fail, "events", client_id=client_id, decision=decision, limit=limit)
        for r in rows:
            if as_json:
                click.echo(json.dumps(r))
            else:
                click.echo(f"{r['id']:>8} {_when(r['ts'])} {r['client_id'] or '-':<20} {r['status']} "
                           f"{r['decision']:<12} {r['path']} {(r['message'] or '')[:80]}")

    @guard.command(epilog=_GUARD_EXIT_HELP)
    @with_store
    @click.option("--client", "client_id", help="Only this client's alerts.")
    @click.option("--kind", type=click.Choice(["prada", "drift", "detector-rate"]), help="Only this kind.")
    @click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    def alerts(store: str | None, config: str | None, client_id: str | None, kind: str | None, limit: int,
               as_json: bool) -> None:
        """Alerts (PRADA extraction clients, drift windows), newest first."""
        rows = _query(store, config, fail, "alerts", client_id=client_id, kind=kind, limit=limit)
        for r in rows:
            if as_json:
                click.echo(json.dumps(r))
            else:
                click.echo(f"{r['id']:>6} {_when(r['ts'])} {r['kind']:<6} {r['client_id'] or '-':<20} "
                           f"{json.dumps(r['detail'])[:100]}")


def _query(store: str | None, config: str | None, fail: Any, what: str, **kw: Any) -> list[dict[str, Any]]:
    from sparring.errors import SparringError
    from sparring.guard.store import open_store

    try:
        with open_store(_store_url(store, config)) as st:
            rows: list[dict[str, Any]] = st.events(**kw) if what == "events" else st.alerts(**kw)
    except SparringError as exc:
        fail(exc)
        return []
    return rows
