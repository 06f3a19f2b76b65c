"""What ``sparring drift REFERENCE CURRENT`` does, one library call away: read two samples from files, test the
whole current sample, test it again window by window in file order, test every feature on its own, and write a
JSON summary and a self-contained HTML page."""

from __future__ import annotations

import csv
import html
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparring.defenses.detect.drift.classifier import classifier_test
from sparring.defenses.detect.drift.lsdd import lsdd_test
from sparring.defenses.detect.drift.mmd import mmd_test
from sparring.defenses.detect.drift.result import DriftResult, check_positive_int
from sparring.defenses.detect.drift.univariate import univariate_test
from sparring.errors import DataLoadError, InputSpecError, ParameterError

__all__ = ["METHODS", "drift_report", "read_samples", "render_html"]

METHODS = ("mmd", "lsdd", "ks", "cvm", "classifier")


def read_samples(path: str | Path, *, key: str | None = None, label_column: str = "label") -> torch.Tensor:
    """Examples from a file, one row each: ``.npz`` (the array ``key``; by default ``x``, or the only array),
    ``.csv``/``.tsv`` (header row; every column but ``label_column``, when present, must be numeric) or ``.txt``
    (one text per line, embedded with the MiniLM sentence encoder of the text family, 384 features)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataLoadError(f"data file not found: {str(p)!r}. Check the path (relative paths start at {Path.cwd()}).")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _read_npz(p, key)
    if suffix in (".csv", ".tsv"):
        return _read_table(p, "\t" if suffix == ".tsv" else ",", label_column)
    if suffix == ".txt":
        texts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise InputSpecError(f"{p}: no text lines; put one message per line.")
        from sparring.data.text import sentence_encoder

        return sentence_encoder()(texts).double()
    raise DataLoadError(f"{p}: unsupported kind {suffix or '(no extension)'!r}; give an .npz (array x), a .csv/.tsv "
                        "with a header row, or a .txt with one text per line.")


def _read_npz(p: Path, key: str | None) -> torch.Tensor:
    if not zipfile.is_zipfile(p):
        raise DataLoadError(f"{p}: not a readable .npz archive; save one with np.savez(path, x=x).")
    try:
        with np.load(p, allow_pickle=False) as archive:
            names = sorted(archive.files)
            name = key if key is not None else ("x" if "x" in names else names[0] if len(names) == 1 else None)
            if name is None or name not in names:
                raise DataLoadError(f"{p}: no array {key or 'x'!r}; the archive holds {names}. Pick one with --key.")
            arr = archive[name]
    except ValueError as exc:
        raise DataLoadError(f"{p}: an array is pickled (refused: unpickling can run code) or malformed ({exc}).") \
            from exc
    if arr.dtype.kind not in "biuf":
        raise InputSpecError(f"{p}: array {name!r} has dtype {arr.dtype}; expected numbers.")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))


def _read_table(p: Path, delimiter: str, label_column: str) -> torch.Tensor:
    with p.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    if len(rows) < 2:
        raise InputSpecError(f"{p}: needs a header row and at least one data row; got {len(rows)} rows.")
    header = [h.strip() for h in rows[0]]
    keep = [j for j, h in enumerate(header) if h != label_column]
    out = np.empty((len(rows) - 1, len(keep)))
    for i, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise InputSpecError(f"{p}: line {i + 2} has {len(row)} fields; the header has {len(header)}.")
        for k, j in enumerate(keep):
            try:
                out[i, k] = float(row[j])
            except ValueError:
                raise InputSpecError(f"{p}: line {i + 2}, column {header[j]!r} holds {row[j]!r}, not a number. "
                                     "Encode categories as integer codes.") from None
    return torch.from_numpy(out)


def _test(method: str, a: torch.Tensor, b: torch.Tensor, alpha: float, n_permutations: int, seed: int,
          correction: str) -> DriftResult:
    if method == "mmd":
        return mmd_test(a, b, n_permutations=n_permutations, alpha=alpha, seed=seed)
    if method == "lsdd":
        return lsdd_test(a, b, n_permutations=n_permutations, alpha=alpha, seed=seed)
    if method in ("ks", "cvm"):
        return univariate_test(a, b, test=method, correction=correction, alpha=alpha,  # type: ignore[arg-type]
                               n_permutations=max(n_permutations, 2000), seed=seed)
    if method == "classifier":
        return classifier_test(a, b, alpha=alpha, seed=seed)
    raise ParameterError(f"method must be one of {METHODS}; got {method!r}.")


def drift_report(reference: Any, current: Any, *, method: str = "mmd", alpha: float = 0.05,
                 window: int | None = None, n_permutations: int = 200, correction: str = "bonferroni",
                 seed: int = 0) -> dict[str, Any]:
    """Test ``current`` against ``reference`` with ``method``; JSON-ready.

    Returns ``{"method", "alpha", "drift", "result", "features", "windows"}``: ``result`` is the
    :class:`DriftResult` of the whole current sample as a dict; ``features`` the per-feature KS tests
    (Bonferroni over features) that show where a shift lies; ``windows`` (with ``window``) one test per run of
    ``window`` consecutive current rows in file order, each at level ``alpha`` (a window's alarm is not corrected
    for the number of windows), with ``start``, ``stop``, ``statistic``, ``threshold``, ``p_value``, ``drift``.
    """
    if method not in METHODS:
        raise ParameterError(f"method must be one of {METHODS}; got {method!r}.")
    result = _test(method, reference, current, alpha, n_permutations, seed, correction)
    ref, cur = torch.as_tensor(reference).double(), torch.as_tensor(current).double()
    ref, cur = ref.reshape(ref.shape[0], -1), cur.reshape(cur.shape[0], -1)
    features = result if method in ("ks", "cvm") else univariate_test(ref, cur, alpha=alpha)
    windows = []
    if window is not None:
        w = check_positive_int(window, "window", 2)
        if w > cur.shape[0]:
            raise InputSpecError(f"window={w} is longer than the current sample ({cur.shape[0]} rows); give a "
                                 "smaller --window or more current data.")
        for start in range(0, cur.shape[0] - w + 1, w):
            r = _test(method, ref, cur[start : start + w], alpha, n_permutations, seed, correction)
            windows.append({"start": start, "stop": start + w, "statistic": r.statistic, "threshold": r.threshold,
                            "p_value": r.p_value, "drift": r.drift})
    mean_ref, mean_cur = ref.mean(0), cur.mean(0)
    per_feature = [{**f.to_dict(), "mean_reference": float(mean_ref[f.feature]),
                    "mean_current": float(mean_cur[f.feature])} for f in features.features]
    return {"method": method, "alpha": alpha, "drift": result.drift, "result": result.to_dict(),
            "features": per_feature, "windows": windows,
            "n_windows_drift": sum(1 for w_ in windows if w_["drift"])}


# ----------------------------------------------------------------------------------------------- HTML
def _svg_bars(values: list[float], line: float, label: str, width: int = 720, height: int = 180) -> str:
    if not values:
        return ""
    top = max(max(values), line) * 1.1 or 1.0
    bw = width / len(values)
    bars = "".join(
        f'<rect x="{i * bw:.1f}" y="{height - v / top * height:.1f}" width="{max(bw - 1, 0.5):.1f}" '
        f'height="{v / top * height:.1f}" fill="{"#c0392b" if v > line else "#7f8c8d"}"><title>feature {i}: '
        f'{v:.3g}</title></rect>' for i, v in enumerate(values))
    y = height - line / top * height
    return (f'<svg width="{width}" height="{height + 20}" role="img" aria-label="{html.escape(label)}">{bars}'
            f'<line x1="0" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#2c3e50" stroke-dasharray="4"/>'
            f'<text x="4" y="{height + 15}" font-size="12">{html.escape(label)}</text></svg>')


def _svg_line(points: list[tuple[float, float, float | None, bool]], width: int = 720, height: int = 180) -> str:
    if not points:
        return ""
    finite = [t for _, _, t, _ in points if t is not None and math.isfinite(t)]
    vals = [s for _, s, _, _ in points] + finite
    lo, hi = min(0.0, *vals), max(vals) or 1.0
    span = (hi - lo) * 1.1 or 1.0
    n = max(len(points) - 1, 1)

    def xy(i: int, v: float) -> str:
        return f"{i / n * (width - 10) + 5:.1f},{height - (v - lo) / span * height:.1f}"

    path = " ".join(xy(i, s) for i, (_, s, _, _) in enumerate(points))
    dots = "".join(f'<circle cx="{xy(i, s).split(",")[0]}" cy="{xy(i, s).split(",")[1]}" r="3" '
                   f'fill="{"#c0392b" if d else "#2c3e50"}"><title>rows {st}+: {s:.3g}</title></circle>'
                   for i, (st, s, _, d) in enumerate(points))
    thr = "".join(f'<line x1="{xy(i, t).split(",")[0]}" x2="{xy(i, t).split(",")[0]}" y1="{xy(i, t).split(",")[1]}" '
                  f'y2="{xy(i, t).split(",")[1]}" stroke="#c0392b" stroke-width="8" stroke-linecap="round" '
                  'opacity="0.3"/>' for i, (_, _, t, _) in enumerate(points) if t is not None and math.isfinite(t))
    return (f'<svg width="{width}" height="{height + 20}" role="img" aria-label="statistic per window">'
            f'<polyline points="{path}" fill="none" stroke="#2c3e50"/>{thr}{dots}'
            f'<text x="4" y="{height + 15}" font-size="12">statistic per window (red: drift; shaded: threshold)'
            '</text></svg>')


def render_html(report: dict[str, Any], *, reference: str = "reference", current: str = "current") -> str:
    """A self-contained HTML page for a :func:`drift_report`: the verdict, per-feature plots and table, and the
    statistic over windows."""
    r = report["result"]
    verdict = "DRIFT" if report["drift"] else "no drift"
    feats = report["features"]
    neglog = [min(-math.log10(max(f["p_adjusted"], 1e-300)), 300.0) for f in feats]
    rows = "".join(
        f"<tr{' class=d' if f['drift'] else ''}><td>{f['feature']}</td><td>{f['test']}</td>"
        f"<td>{f['statistic']:.4g}</td><td>{f['p_adjusted']:.3g}</td><td>{f['mean_reference']:.4g}</td>"
        f"<td>{f['mean_current']:.4g}</td></tr>"
        for f in sorted(feats, key=lambda f: f["p_adjusted"])[:50])
    win = report["windows"]
    wrows = "".join(f"<tr{' class=d' if w['drift'] else ''}><td>{w['start']}–{w['stop']}</td>"
                    f"<td>{w['statistic']:.4g}</td><td>{w['p_value']:.3g}</td></tr>" for w in win)
    thr = "—" if r["threshold"] is None else f"{r['threshold']:.4g}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>sparring drift: {verdict}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}
tr.d{{background:#fadbd8}} .v{{font-size:1.4em;font-weight:bold}}</style></head><body>
<h1>Drift: {html.escape(reference)} → {html.escape(current)}</h1>
<p class="v">{verdict}</p>
<p>{html.escape(r['method'])}: statistic {r['statistic']:.4g}, threshold {thr}, p-value {r['p_value']:.3g} at
α = {report['alpha']}; {r['n_reference']} reference and {r['n_current']} current examples.</p>
<h2>Per feature</h2><p>−log10 adjusted p-value of each feature's test (dashed: α).</p>
{_svg_bars(neglog, -math.log10(report['alpha']), "-log10 p (adjusted) per feature")}
<table><tr><th>feature</th><th>test</th><th>statistic</th><th>p adjusted</th><th>mean ref</th><th>mean cur</th></tr>
{rows}</table>
<h2>Over windows</h2>
{_svg_line([(w['start'], w['statistic'], w['threshold'], w['drift']) for w in win]) if win else
 '<p>No windows (run with --window N).</p>'}
<table><tr><th>rows</th><th>statistic</th><th>p-value</th></tr>{wrows}</table>
</body></html>
"""
