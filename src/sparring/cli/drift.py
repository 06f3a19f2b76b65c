"""``sparring drift REFERENCE CURRENT``: has the data changed? A two-sample drift test between two files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

__all__ = ["add_commands"]

_DRIFT_EXIT_HELP = (
    "Exit codes: 0 tested (drift or not; see the output), 1 internal error, 2 usage error, 3 bad input (files, "
    "NaN, feature counts, parameters), 4 the text encoder cannot load, 6 drift found and --fail-on-drift given."
)


def add_commands(cli: click.Group) -> None:
    from sparring.cli import EXIT_GATE, _fail

    @cli.command(epilog=_DRIFT_EXIT_HELP)
    @click.argument("reference", type=click.Path(dir_okay=False))
    @click.argument("current", type=click.Path(dir_okay=False))
    @click.option("--method", type=click.Choice(["mmd", "lsdd", "ks", "cvm", "classifier"]), default="mmd",
                  show_default=True, help="mmd/lsdd: kernel tests on all features; ks/cvm: per feature, corrected; "
                  "classifier: a classifier two-sample test.")
    @click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
                  show_default=True, help="False-positive rate of each test.")
    @click.option("--window", type=click.IntRange(min=2), help="Also test each run of N consecutive CURRENT rows.")
    @click.option("--n-permutations", type=click.IntRange(min=1), default=200, show_default=True)
    @click.option("--correction", type=click.Choice(["bonferroni", "fdr"]), default="bonferroni", show_default=True,
                  help="Multiple-testing correction over features (ks, cvm).")
    @click.option("--key", help="Array name in .npz files (default: x, or the only array).")
    @click.option("--label-column", default="label", show_default=True, help="CSV column left out of the features.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write drift.json and drift.html here.")
    @click.option("--fail-on-drift", is_flag=True, help="Exit 6 when drift is found (for CI and cron).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
    def drift(reference: str, current: str, method: str, alpha: float, window: int | None, n_permutations: int,
              correction: str, key: str | None, label_column: str, seed: int, out_dir: str | None,
              fail_on_drift: bool, as_json: bool) -> None:
        """Test whether CURRENT is drawn like REFERENCE (.npz, .csv/.tsv, or .txt with one text per line).

        \b
        Examples:
          sparring drift train.npz live.npz
          sparring drift train.csv today.csv --method ks --correction fdr --json
          sparring drift last_month.txt this_week.txt --window 100 --out drift-report --fail-on-drift
        """
        from sparring.defenses.detect.drift.report import drift_report, read_samples, render_html
        from sparring.errors import SparringError

        try:
            ref = read_samples(reference, key=key, label_column=label_column)
            cur = read_samples(current, key=key, label_column=label_column)
            report = drift_report(ref, cur, method=method, alpha=alpha, window=window,
                                  n_permutations=n_permutations, correction=correction, seed=seed)
        except SparringError as exc:
            _fail(exc)
        report.update(reference=reference, current=current)
        if out_dir:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "drift.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
            (out / "drift.html").write_text(render_html(report, reference=reference, current=current),
                                            encoding="utf-8")
            report["written"] = [str(out / "drift.json"), str(out / "drift.html")]
        if as_json:
            click.echo(json.dumps(report, default=str))
        else:
            r = report["result"]
            thr = "-" if r["threshold"] is None else f"{r['threshold']:.4g}"
            click.echo(f"{'DRIFT' if report['drift'] else 'no drift'}: {r['method']} statistic {r['statistic']:.4g} "
                       f"(threshold {thr}), p = {r['p_value']:.3g} at alpha {alpha}; "
                       f"{r['n_reference']} reference vs {r['n_current']} current examples")
            top = sorted(report["features"], key=lambda f: f["p_adjusted"])[:5]
            shifted = [f for f in top if f["drift"]]
            if shifted:
                click.echo("  most shifted features: " + ", ".join(
                    f"{f['feature']} (p_adj {f['p_adjusted']:.2g})" for f in shifted))
            if report["windows"]:
                click.echo(f"  windows of {window}: {report['n_windows_drift']} of {len(report['windows'])} drift")
            for path in report.get("written", []):
                click.echo(f"  wrote {path}")
        if fail_on_drift and report["drift"]:
            sys.exit(EXIT_GATE)
