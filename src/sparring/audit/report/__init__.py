"""Audit reports: one self-contained HTML page for people, JSON for machines, Markdown for a pull request, JUnit XML
for CI (one test case per gate).

    paths = write_reports(audit, "report/")   # {"html": ..., "json": ..., "markdown": ..., "junit": ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparring.audit.report.html import render_html
from sparring.audit.report.machine import REPORT_SCHEMA_VERSION, render_junit, render_markdown, report_dict
from sparring.audit.runner import Audit

if TYPE_CHECKING:
    from sparring.audit.history import Run

__all__ = ["REPORT_SCHEMA_VERSION", "render_html", "render_junit", "render_markdown", "report_dict", "write_reports"]

FILES = {"html": "report.html", "json": "report.json", "markdown": "summary.md", "junit": "junit.xml"}


def write_reports(audit: Audit, out_dir: str | Path, formats: tuple[str, ...] = tuple(FILES), *,
                  history: Sequence[Run] | None = None) -> dict[str, Path]:
    """Write the requested report formats into ``out_dir``; return their paths by format.

    ``history``: this model's recorded runs, oldest first, this audit's the last (:meth:`HistoryStore.runs`); from
    two runs on the HTML report shows their trend and the previous run's gate values beside this run's."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report_dict(audit)
    writers: dict[str, Any] = {
        "json": lambda: json.dumps(data, indent=2, sort_keys=False),
        "markdown": lambda: render_markdown(data),
        "junit": lambda: render_junit(data),
        "html": lambda: _html_or_plain(audit, data, history),
    }
    paths = {}
    for fmt in formats:
        p = out / FILES[fmt]
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(writers[fmt](), encoding="utf-8")
        tmp.replace(p)
        paths[fmt] = p
    return paths


def _html_or_plain(audit: Audit, data: dict[str, Any], history: Sequence[Run] | None = None) -> str:
    """The HTML report; if drawing it fails (a plot or section on unexpected results), a plain page with the verdict,
    the gates, the findings and the error, so that a report is always written."""
    try:
        return render_html(audit, data, history=history)
    except Exception as exc:  # the audit's results are sound; only the drawing failed
        import html

        rows = "".join(f"<li>{html.escape(g['gate'])}: {html.escape(g['status'])} ({html.escape(g['message'])})</li>"
                       for g in data["gates"])
        finds = "".join(f"<li>{html.escape(f['severity'])}: {html.escape(f['title'])}</li>" for f in data["findings"])
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>sparring audit</title></head><body>"
                f"<h1>sparring audit: {html.escape(data['name'])}</h1><p>Verdict: {data['verdict'].upper()}</p>"
                f"<p>The full page could not be drawn ({html.escape(type(exc).__name__)}: {html.escape(str(exc))}); "
                f"report.json has everything.</p><h2>Gates</h2><ul>{rows}</ul><h2>Findings</h2><ul>{finds}</ul>"
                "</body></html>\n")
