"""``sparring audit``: the command's body (kept apart from cli.py so the CLI module stays a thin parser)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from sparring import errors
from sparring.cli.exits import EXIT_GATE, EXIT_INTERRUPTED, EXIT_MODEL, EXIT_OK, EXIT_USAGE

__all__ = ["DEFAULT_THREAT_MODEL", "audit_exit_code", "default_threat_model_path", "run_audit_command"]

DEFAULT_THREAT_MODEL = "digits-cnn.yaml"


def default_threat_model_path() -> Path:
    """The built-in default threat model shipped with the package."""
    return Path(str(resources.files("sparring.audit.defaults").joinpath(DEFAULT_THREAT_MODEL)))


def _describe(result: Any) -> str:
    if result.status == "error":
        return f"error: {result.error}"
    parts = []
    for m in result.measurements:
        if m.metric in ("robust_accuracy", "certified_accuracy", "clean_accuracy", "zero_gradient_fraction",
                        "randomized_fraction"):
            if m.metric == "clean_accuracy" and result.step_id != "baseline/clean":
                continue
            r = m.params.get("radius")
            parts.append(f"{m.metric.replace('_', ' ')} {m.value:.3f}" + (f" @r={r:g}" if r is not None else ""))
    return ", ".join(parts[:3]) or "done"


def audit_exit_code(audit: Any) -> int:
    """The exit code of a finished audit, first that applies: 130 interrupted, 4 a step failed because the model or
    endpoint did (unreachable, cannot load, refuses access), 6 a gate failed or is unmeasured, 0 otherwise.

    A check that fails for another reason (a bug, an unsupported model) is an error finding and leaves the gates it
    would have measured unmeasured, hence 6 when a gate depends on it.
    """
    if audit.status == "interrupted":
        return EXIT_INTERRUPTED
    if audit.faults:
        return EXIT_MODEL
    return EXIT_GATE if audit.verdict == "fail" else EXIT_OK


def run_audit_command(threat_model: str | None, out_dir: str, resume: bool, formats: str, progress: bool,
                      fail: Callable[[BaseException], NoReturn], debug: bool = False,
                      baseline: str | None = None, history: str | None = None, *, executor: str | None = None,
                      workers: int | None = None, ray_address: str | None = None,
                      shard_points: int | None = None) -> int:
    """Run the audit and write the reports; return the exit code (:func:`audit_exit_code`; 2 for unknown formats).

    ``baseline``: an earlier report.json to compare with (:mod:`sparring.audit.baseline`), read before the audit runs.
    ``history``: the audit history (:mod:`sparring.audit.history`) to record the finished run into; opened before
    the audit runs, so a bad address fails at once. From the second run of a model on, ``history.png`` in
    ``out_dir`` plots its gates over the recorded runs.
    ``executor``, ``workers``, ``ray_address``: where the steps run (:func:`sparring.executors.get_executor`;
    ``ray_address`` implies ``executor="ray"``, ``workers`` > 1 alone ``"processes"``).
    ``shard_points``: split the shardable steps into tasks of this many points (:mod:`sparring.audit.shards`).
    """
    from sparring.audit import load_threat_model, run_audit
    from sparring.audit.baseline import apply_baseline, load_baseline
    from sparring.audit.report import FILES, write_reports

    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    bad = [f for f in fmts if f not in FILES]
    if bad or not fmts:
        sys.stderr.write(f"error: unknown report format(s) {bad or formats!r}; choose from {', '.join(FILES)}.\n")
        return EXIT_USAGE
    path = Path(threat_model) if threat_model else default_threat_model_path()

    def on_step(i: int, n: int, step: Any, result: Any, cached: bool) -> None:
        if progress:
            took = "checkpoint" if cached else f"{result.cost.get('seconds', 0):.1f} s"
            sys.stderr.write(f"[{i + 1:>3}/{n}] {step.id}: {_describe(result)} ({took})\n")
            sys.stderr.flush()
        if debug and result.traceback:
            sys.stderr.write(result.traceback)

    ex = None
    try:
        from sparring.executors import get_executor

        if ray_address is not None and executor not in (None, "ray"):
            raise errors.ParameterError(f"--ray runs the audit on Ray, but --executor is {executor}; drop one of them.")
        name = "ray" if ray_address is not None else executor or ("processes" if (workers or 1) > 1 else "local")
        ex = get_executor(name, workers=workers, ray_address=ray_address)
        tm = load_threat_model(path)
        base = None if baseline is None else load_baseline(baseline)
        store = None
        if history is not None:
            from sparring.audit.history import open_history

            store = open_history(history)
        if progress:
            sys.stderr.write(f"sparring audit: {tm.name} ({path}) -> {out_dir}\n")
        audit = run_audit(tm, out_dir, resume=resume, progress=progress and sys.stderr.isatty(), on_step=on_step,
                          debug=debug, executor=ex, shard_points=shard_points)
        if base is not None:
            apply_baseline(audit, base)
        run_id, runs = None, None
        if store is not None:  # recorded first, so that report.html can show the trend up to this run
            from sparring.audit.report.machine import report_dict

            with store:
                if audit.status == "complete":  # a partial run would read as a drop in the trend
                    run_id = store.record(report_dict(audit))
                    runs = store.runs(model=audit.threat_model.system.model)
        paths = write_reports(audit, out_dir, fmts, history=runs)
        if runs is not None and len(runs) >= 2:  # the trend of this model's gates, beside the reports
            from sparring.audit.history import plot_trend

            paths["trend"] = plot_trend(runs, Path(out_dir) / "history.png")
    except KeyboardInterrupt:
        sys.stderr.write("interrupted before any step finished; nothing to report.\n")
        return EXIT_INTERRUPTED
    except errors.SparringError as exc:
        fail(exc)
    finally:
        if ex is not None:
            ex.close()
    if debug:
        for r in audit.results:
            if r.traceback and r.step_id.endswith("/follow-up"):
                sys.stderr.write(r.traceback)
    _print(audit, paths)
    if history is not None:
        sys.stderr.write(f"recorded as run {run_id} in the audit history {history} (sparring history --history "
                         f"{history})\n" if run_id is not None else
                         "not recorded in the audit history: the audit was interrupted (re-run with --resume).\n")
    return audit_exit_code(audit)


def _print(audit: Any, paths: dict[str, Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    style = {"pass": "bold green", "fail": "bold red"}.get(audit.verdict, "bold")
    status = "" if audit.status == "complete" else " (INTERRUPTED: partial; re-run with --resume)"
    console.print(f"Verdict: [{style}]{audit.verdict.upper()}[/]{status}")
    if audit.errors:
        faults = f", {len(audit.faults)} because the model or endpoint failed" if audit.faults else ""
        console.print(f"[bold yellow]{len(audit.errors)} step(s) could not run{faults}[/]: fix the cause and re-run "
                      "with --resume (they run again; --debug shows tracebacks).", highlight=False)
        for r in audit.errors[:4]:
            console.print(f"  {r.step_id}: {r.error}", highlight=False, markup=False)
    base = audit.baseline
    if audit.gates:
        table = Table(title="Gates")
        for col in ("gate", "value", "result") + (("before", "delta") if base else ()):
            table.add_column(col)
        for i, g in enumerate(audit.gates):
            colour = {"pass": "green", "fail": "red"}.get(g.status, "yellow")
            row = [g.gate, "-" if g.value is None else f"{g.value:.4f}", f"[{colour}]{g.status}[/]"]
            if base:
                b = base["gates"][i]
                row += ["-" if b["before"] is None else f"{b['before']:.4f}",
                        "-" if b["delta"] is None else f"{b['delta']:+.4f}"]
            table.add_row(*row)
        console.print(table)
    if base:
        from sparring.audit.baseline import largest_changes

        top = largest_changes(base, 5)
        console.print(f"Compared with {base['path']} (verdict before: {base['verdict'].upper()}): "
                      f"{len(base['steps']) - len(largest_changes(base, len(base['steps'])))} of {len(base['steps'])} "
                      "step measurements unchanged" + ("; largest changes:" if top else "."), highlight=False)
        for s in top:
            console.print(f"  {s['id']} {s['metric']}: {s['before']:.4f} -> {s['now']:.4f} ({s['delta']:+.4f})",
                          highlight=False, markup=False)
    for f in [f for f in audit.findings if f.severity != "info"][:6]:
        console.print(f"  [bold]{f.severity.upper()}[/] ({f.threat}) {f.title}")
    for fmt, p in paths.items():
        console.print(f"  {fmt:9s} {p}")
