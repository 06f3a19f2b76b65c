"""The report's figures, drawn with matplotlib's object API (no global pyplot state) and embedded as PNG data URIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["budget_units", "certified_curve", "confusion", "examples_grid", "figure", "png", "robust_curve"]

_DPI = 100


def figure(w: float, h: float) -> Any:
    """A new matplotlib Figure (no pyplot state) sized in inches; also for families' report sections."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=_DPI, layout="constrained")


def png(fig: Any) -> str:
    """A matplotlib Figure as a PNG data URI (for :class:`~sparring.audit.registry.ReportFigure`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def budget_units(units: str) -> str:
    """How a budget axis reads under ``system.units`` (``raw``, ``range``, ``std`` or a scale file's path)."""
    if units == "raw":
        return "raw input units"
    if units == "range":
        return "fraction of each feature's range"
    if units == "std":
        return "standard deviations of each feature"
    return f"units of the scale file {units}"


def robust_curve(norm: str, curves: dict[str, list[tuple[float, float]]], clean: float | None,
                 units: str = "raw") -> str:
    """Robust accuracy against budget, one line per attack and a thick worst-case line; ``units`` is the audit's
    ``system.units`` (the axis says what eps measures)."""
    fig = figure(5.2, 3.4)
    ax = fig.add_subplot()
    for name, pts in sorted(curves.items(), key=lambda kv: kv[0] == "worst case"):
        eps = [0.0, *[e for e, _ in pts]] if clean is not None else [e for e, _ in pts]
        acc = [clean, *[a for _, a in pts]] if clean is not None else [a for _, a in pts]
        worst = name == "worst case"
        ax.plot(eps, acc, marker="o", lw=3 if worst else 1.4, color="black" if worst else None,
                ls="-" if worst else "--", label=name, zorder=3 if worst else 2)
    ax.set_xlabel(f"{norm.upper()} budget (eps, {budget_units(units)})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Robust accuracy vs {norm.upper()} budget")
    return png(fig)


def certified_curve(points: Sequence[tuple[float, float]], label: str, xlabel: str) -> str:
    fig = figure(5.2, 3.2)
    ax = fig.add_subplot()
    xs, ys = zip(*sorted(points), strict=True) if points else ((), ())
    ax.step(xs, ys, where="post", marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Certified accuracy")
    return png(fig)


def confusion(y: Sequence[int], pred: Sequence[int], n_classes: int, names: Sequence[str] | None, title: str) -> str:
    """Where predictions move: true class (rows) against prediction under attack (columns)."""
    m = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(m, (np.asarray(y, dtype=int), np.asarray(pred, dtype=int)), 1)
    size = min(7.0, 2.2 + 0.38 * n_classes)
    fig = figure(size, size * 0.85)
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues")
    labels = list(names) if names else [str(i) for i in range(n_classes)]
    ax.set_xticks(range(n_classes), labels, rotation=90 if n_classes > 6 else 0, fontsize=8)
    ax.set_yticks(range(n_classes), labels, fontsize=8)
    ax.set_xlabel("prediction under attack")
    ax.set_ylabel("true class")
    if n_classes <= 12:
        for i in range(n_classes):
            for j in range(n_classes):
                if m[i, j]:
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] > m.max() / 2 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=10)
    return png(fig)


def _name(names: Sequence[str] | None, k: int) -> str:
    return names[k] if names else str(k)


def _to_image(a: np.ndarray, layout: str) -> np.ndarray:
    if layout == "chw":
        a = a.transpose(1, 2, 0)
    return a[..., 0] if a.shape[-1] == 1 else a


def examples_grid(x: Sequence[Any], x_adv: Sequence[Any], y: Sequence[int], adv: Sequence[int], layout: str,
                  bounds: tuple[float, float], names: Sequence[str] | None, title: str) -> str:
    """Clean, adversarial and amplified difference, one column per example."""
    n = len(x)
    fig = figure(1.5 * n + 0.6, 4.6)
    axes = fig.subplots(3, n, squeeze=False)
    lo, hi = bounds
    for j in range(n):
        c = np.asarray(x[j], dtype=np.float32)
        a = np.asarray(x_adv[j], dtype=np.float32)
        d = a - c
        scale = float(np.abs(d).max()) or 1.0
        ci, ai, di = _to_image(c, layout), _to_image(a, layout), _to_image(d, layout)
        gray = ci.ndim == 2
        axes[0, j].imshow((ci - lo) / (hi - lo) if not gray else ci, cmap="gray" if gray else None, vmin=lo, vmax=hi)
        axes[1, j].imshow((ai - lo) / (hi - lo) if not gray else ai, cmap="gray" if gray else None, vmin=lo, vmax=hi)
        axes[2, j].imshow(di if gray else 0.5 + di / (2 * scale), cmap="seismic" if gray else None,
                          vmin=-scale if gray else None, vmax=scale if gray else None)
        axes[0, j].set_title(f"true {_name(names, int(y[j]))}", fontsize=8)
        axes[1, j].set_title(f"→ {_name(names, int(adv[j]))}", fontsize=8, color="crimson")
        axes[2, j].set_title(f"diff ×{1 / scale:.0f}" if scale < 1 else "diff", fontsize=7)
        for i in range(3):
            axes[i, j].set_axis_off()
    fig.suptitle(title, fontsize=10)
    return png(fig)
