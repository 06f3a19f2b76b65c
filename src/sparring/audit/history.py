"""The audit history: every audit's gates recorded in a store, listed and plotted over time.

``sparring audit threat.yaml --history sqlite:///audits.db`` records the run (its report.json, reduced to what a
trend needs: the gate values, the deltas against ``--baseline``, the environment); ``sparring history`` lists the runs
with their gate values and the change since the previous run of the same model, and ``--plot trend.png`` draws each
gate's value over the runs. The store is an SQLite file by default and a PostgreSQL database (psycopg 3, the
``guard`` extra) when it is shared, e.g. by CI runners::

    store = open_history("sqlite:///audits.db")        # or a plain path, or postgresql://user@host:5432/db
    run_id = store.record(json.loads(Path("report/report.json").read_text()))
    for run in store.runs(model="digits-cnn"):
        print(run.id, run.verdict, {g["gate"]: g["value"] for g in run.gates})

The interface is two calls, :meth:`HistoryStore.record` and :meth:`HistoryStore.runs`; both backends keep one table,
``sparring_audit_runs``, with a JSON column per run, so a later report schema needs no migration. A file that is not
an SQLite database, a table with other columns, a locked database or an unreachable server is a
:class:`~sparring.errors.StoreError` that names the file (or the URL, without its password) and what to do.

Tracking security metrics over releases is what "measurable security benchmarks ensure that defenses remain
effective over time" asks for; robust accuracy under a fixed, reported attack suite is the quantity to track
(Croce et al., 2021, "RobustBench", NeurIPS Datasets and Benchmarks).
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sparring.errors import ParameterError, StoreError

__all__ = ["HistoryStore", "PostgresHistory", "Run", "SQLiteHistory", "open_history", "plot_trend", "run_summary",
           "trend_figure", "trend_table"]

TABLE = "sparring_audit_runs"
_COLUMNS = ("id", "recorded_at", "name", "model", "verdict", "status", "spec_hash", "summary")


@dataclass(frozen=True)
class Run:
    """One recorded audit: when, what, the verdict, and per gate its value, status and deltas.

    ``gates`` holds ``{gate, metric, value, status, threshold, op, baseline_delta, change}``: ``baseline_delta`` the
    delta against the ``--baseline`` report of that audit (``None`` without one), ``change`` the difference from the
    same gate in the previous run of the same model in the listing (``None`` for the first, or when unmeasured).
    """

    id: int
    recorded_at: str
    name: str
    model: str
    verdict: str
    status: str
    spec_hash: str
    gates: list[dict[str, Any]]
    baseline: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "recorded_at": self.recorded_at, "name": self.name, "model": self.model,
                "verdict": self.verdict, "status": self.status, "spec_hash": self.spec_hash, "gates": self.gates,
                "baseline": self.baseline, "environment": self.environment}


def run_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the history keeps of a report.json: the columns it is filtered by and a compact JSON summary.

    Raises:
        ParameterError: ``report`` is not a sparring report (no ``gates``, ``verdict`` or ``threat_model``).
    """
    missing = [k for k in ("gates", "verdict", "threat_model") if k not in report]
    if missing:
        raise ParameterError(f"the history records sparring audit reports (report.json); this one lacks "
                             f"{', '.join(missing)}.")
    base = report.get("baseline") or {}
    deltas = {b["gate"]: b.get("delta") for b in base.get("gates", [])}
    gates = [{"gate": g["gate"], "metric": g["metric"], "value": g.get("value"), "status": g["status"],
              "threshold": g.get("threshold"), "op": g.get("op"), "baseline_delta": deltas.get(g["gate"])}
             for g in report["gates"]]
    env = report.get("environment") or {}
    system = report["threat_model"].get("system") or {}
    return {"name": str(report.get("name") or ""), "model": str(system.get("model") or ""),
            "verdict": str(report["verdict"]), "status": str(report.get("status") or ""),
            "spec_hash": str(env.get("spec_hash") or ""),
            "summary": {"gates": gates, "baseline": base.get("path"),
                        "environment": {k: env[k] for k in ("sparring", "torch", "python", "seconds", "spec_hash")
                                        if k in env}}}


def _with_changes(runs: list[Run]) -> list[Run]:
    """Fill each gate's ``change``: its value minus the same gate's in the previous run of the same model."""
    last: dict[tuple[str, str], float] = {}
    for run in runs:
        for g in run.gates:
            key, v = (run.model, g["gate"]), g.get("value")
            prev = last.get(key)
            g["change"] = None if v is None or prev is None else float(v) - prev
            if v is not None:
                last[key] = float(v)
    return runs


class HistoryStore(ABC):
    """Where audit runs are recorded: :meth:`record` one report, :meth:`runs` to read them back (oldest first)."""

    @property
    @abstractmethod
    def url(self) -> str:
        """The store's address as the user gives it (a PostgreSQL password left out)."""

    @abstractmethod
    def _insert(self, row: dict[str, Any]) -> int: ...

    @abstractmethod
    def _select(self, model: str | None, name: str | None) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def close(self) -> None:
        """Release the connection (the store cannot be used afterwards)."""

    def record(self, report: Mapping[str, Any], *, recorded_at: datetime | None = None) -> int:
        """Record one audit's report (the dict of report.json); return its run id.

        Raises:
            ParameterError: ``report`` is not a sparring report.
            StoreError: the store cannot be written (locked, corrupted, unreachable).
        """
        row = run_summary(report)
        row["recorded_at"] = (recorded_at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
        return self._insert(row)

    def runs(self, model: str | None = None, name: str | None = None, limit: int | None = None) -> list[Run]:
        """The recorded runs, oldest first, of one ``model`` (``system.model`` as written in the threat model) and/or
        threat-model ``name`` when given; ``limit`` keeps the latest ones.

        Raises:
            StoreError: the store cannot be read.
        """
        if limit is not None and limit < 1:
            raise ParameterError(f"limit must be a positive number of runs; got {limit!r}.")
        out = []
        for rid, at, nm, mdl, verdict, status, spec_hash, summary in self._select(model, name):
            try:
                s = json.loads(summary)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"run {rid} in the audit history {self.url} holds an unreadable summary ({exc}); "
                                 f"delete that row (DELETE FROM {TABLE} WHERE id = {rid}).") from exc
            out.append(Run(int(rid), str(at), nm, mdl, verdict, status, spec_hash, list(s.get("gates", [])),
                           s.get("baseline"), dict(s.get("environment", {}))))
        out = _with_changes(out)
        return out[-limit:] if limit else out

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SQLiteHistory(HistoryStore):
    """The history in an SQLite file (stdlib ``sqlite3``; WAL mode, so ``sparring history`` reads while an audit
    writes; a busy timeout, then a typed error, when another process holds the write lock)."""

    def __init__(self, path: str | Path, *, create: bool = True, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"no audit history at {str(self.path)!r}: record one with sparring audit threat.yaml "
                             f"--history sqlite:///{self.path}, or give the store with --history.")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the audit history {str(self.path)!r}: {exc}. Check the path and its "
                             "folder's permissions.") from exc
        with self._errors("open"):
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                               "recorded_at TEXT NOT NULL, name TEXT NOT NULL, model TEXT NOT NULL, verdict TEXT NOT "
                               "NULL, status TEXT NOT NULL, spec_hash TEXT NOT NULL, summary TEXT NOT NULL)")
            cols = tuple(r[1] for r in self._conn.execute(f"PRAGMA table_info({TABLE})"))
        if cols != _COLUMNS:
            self._conn.close()
            raise StoreError(f"{str(self.path)!r} has a table {TABLE} with columns {cols}, not an audit history's "
                             f"{_COLUMNS}: give another file with --history.")

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            msg = str(exc)
            if "locked" in msg or "busy" in msg:
                hint = ("another process holds its write lock; wait for it (or stop it) and run again, or record "
                        "into another file")
            elif "not a database" in msg or "malformed" in msg or "corrupt" in msg:
                hint = "the file is not an intact SQLite database; restore it from a backup or give another file"
            else:
                hint = "check the file and its folder's permissions"
            raise StoreError(f"cannot {doing} the audit history {str(self.path)!r}: {msg}; {hint}.") from exc

    def _insert(self, row: dict[str, Any]) -> int:
        with self._errors("write"):
            cur = self._conn.execute(
                f"INSERT INTO {TABLE} (recorded_at, name, model, verdict, status, spec_hash, summary) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row["recorded_at"], row["name"], row["model"], row["verdict"], row["status"], row["spec_hash"],
                 json.dumps(row["summary"], sort_keys=True)))
            return int(cur.lastrowid or 0)

    def _select(self, model: str | None, name: str | None) -> list[tuple[Any, ...]]:
        where, args = _where(model, name, "?")
        with self._errors("read"):
            return list(self._conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM {TABLE}{where} ORDER BY id", args))

    def close(self) -> None:
        self._conn.close()


class PostgresHistory(HistoryStore):
    """The history in a PostgreSQL database (psycopg 3): one table, every record a committed transaction."""

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError("a postgresql:// audit history needs psycopg 3: pip install 'sparring[guard]'.") from exc
        self._psycopg = psycopg
        self._url = _without_password(url)
        try:
            self._conn = psycopg.connect(url, connect_timeout=max(1, int(connect_timeout)), autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the audit history {self._url}: {str(exc).strip()}. Check the "
                             "server is up, the URL (user, host, port, database) and its credentials.") from exc
        with self._errors("open"):
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGSERIAL PRIMARY KEY, recorded_at TEXT NOT "
                               "NULL, name TEXT NOT NULL, model TEXT NOT NULL, verdict TEXT NOT NULL, status TEXT NOT "
                               "NULL, spec_hash TEXT NOT NULL, summary TEXT NOT NULL)")
            cols = tuple(r[0] for r in self._conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                (TABLE,)))
        if cols != _COLUMNS:
            self._conn.close()
            raise StoreError(f"{self._url} has a table {TABLE} with columns {cols}, not an audit history's "
                             f"{_COLUMNS}: give another database with --history.")

    @property
    def url(self) -> str:
        return self._url

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot {doing} the audit history {self._url}: {str(exc).strip()}.") from exc

    def _insert(self, row: dict[str, Any]) -> int:
        with self._errors("write"), self._conn.transaction():
            cur = self._conn.execute(
                f"INSERT INTO {TABLE} (recorded_at, name, model, verdict, status, spec_hash, summary) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (row["recorded_at"], row["name"], row["model"], row["verdict"], row["status"], row["spec_hash"],
                 json.dumps(row["summary"], sort_keys=True)))
            got = cur.fetchone()
        assert got is not None
        return int(got[0])

    def _select(self, model: str | None, name: str | None) -> list[tuple[Any, ...]]:
        where, args = _where(model, name, "%s")
        with self._errors("read"):
            return list(self._conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM {TABLE}{where} ORDER BY id", args))

    def close(self) -> None:
        self._conn.close()


def _where(model: str | None, name: str | None, mark: str) -> tuple[str, tuple[str, ...]]:
    conds = [(c, v) for c, v in (("model", model), ("name", name)) if v is not None]
    if not conds:
        return "", ()
    return " WHERE " + " AND ".join(f"{c} = {mark}" for c, _ in conds), tuple(v for _, v in conds)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def open_history(url: str | Path, *, create: bool = True) -> HistoryStore:
    """The store at ``url``: ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``, a plain file path, or a
    ``postgresql://`` (``postgres://``) URL. ``create=False`` (reading, e.g. ``sparring history``) refuses an SQLite
    file that does not exist instead of creating an empty one.

    Raises:
        ParameterError: an address of another kind.
        StoreError: the store cannot be opened.
    """
    s = str(url)
    if s.startswith(("postgresql://", "postgres://")):
        return PostgresHistory(s)
    if s.startswith("sqlite:///"):
        return SQLiteHistory(s[len("sqlite:///"):], create=create)
    if "://" in s:
        raise ParameterError(f"the audit history is an SQLite file (sqlite:///audits.db or a path) or a PostgreSQL "
                             f"URL (postgresql://user@host:5432/db); got {_without_password(s)!r}.")
    return SQLiteHistory(s, create=create)


def plot_trend(runs: Sequence[Run], path: str | Path, *, metrics: Sequence[str] | None = None) -> Path:
    """Draw each gate's value over ``runs`` (one line per model and gate, its threshold in each run dashed) into a
    PNG or SVG file (by the suffix of ``path``); ``metrics`` keeps the gates of those metrics (default: every gate).

    Raises:
        ParameterError: no runs, no gate value to draw, or a suffix other than .png / .svg.
    """
    p = Path(path)
    if p.suffix.lower() not in (".png", ".svg"):
        raise ParameterError(f"the trend plot is a .png or .svg file; got {str(p)!r}.")
    fig = trend_figure(runs, metrics=metrics)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, format=p.suffix.lower()[1:], dpi=120)
    return p


def trend_figure(runs: Sequence[Run], *, metrics: Sequence[str] | None = None) -> Any:
    """The matplotlib Figure of :func:`plot_trend` (no pyplot state), e.g. to embed in the HTML report.

    Raises:
        ParameterError: no gate value to draw.
    """
    from matplotlib.figure import Figure

    series: dict[str, tuple[list[int], list[float], list[float | None]]] = {}
    models = {r.model for r in runs}
    for i, run in enumerate(runs):
        for g in run.gates:
            if g.get("value") is None or (metrics is not None and g["metric"] not in metrics):
                continue
            label = g["gate"] if len(models) == 1 else f"{run.model}: {g['gate']}"
            xs, ys, ts = series.setdefault(label, ([], [], []))
            xs.append(i)
            ys.append(float(g["value"]))
            ts.append(None if g.get("threshold") is None else float(g["threshold"]))
    if not series:
        raise ParameterError("nothing to plot: no recorded run has a measured gate"
                             + (f" of metric {', '.join(metrics)}" if metrics else "") + ".")
    fig = Figure(figsize=(max(5.0, 0.5 * len(runs) + 3), 3.6), layout="constrained")
    ax = fig.add_subplot()
    for label, (xs, ys, ts) in sorted(series.items()):
        line = ax.plot(xs, ys, marker="o", label=label)[0]
        known = [(x, t) for x, t in zip(xs, ts, strict=True) if t is not None]
        if known:  # per run: a max_drop gate's threshold is the baseline's value minus max_drop
            ax.plot([x for x, _ in known], [t for _, t in known], color=line.get_color(), linestyle="--",
                    linewidth=0.8, marker="_")
    ax.set_xticks(range(len(runs)), [f"#{r.id}\n{r.recorded_at[:10]}" for r in runs], fontsize=7)
    ax.set_xlabel("run (id, date); dashed: gate threshold")
    ax.set_ylabel("gate value")
    ax.set_title("sparring audit history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def trend_table(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per gate of the last run in ``runs`` (one model's runs, oldest first): its value and status beside the
    previous run's, and the change (``None`` where either is unmeasured or the gate is new); the HTML report shows
    it under the trend plot."""
    if not runs:
        return []
    last, prev = runs[-1], (runs[-2] if len(runs) > 1 else None)
    before = {g["gate"]: g for g in prev.gates} if prev is not None else {}
    out = []
    for g in last.gates:
        b = before.get(g["gate"], {})
        now, was = g.get("value"), b.get("value")
        out.append({"gate": g["gate"], "previous": was, "previous_status": b.get("status"), "now": now,
                    "status": g.get("status"), "change": None if now is None or was is None else
                    float(now) - float(was)})
    return out
