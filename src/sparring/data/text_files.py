"""Reading a user's labelled messages: CSV, TSV, JSON Lines, Parquet and plain text, with named columns.

>>> from sparring.data.text_files import load_text_file
>>> table = load_text_file("moderation.csv", text_col="message", label_col="label")   # doctest: +SKIP
>>> y = table.encode(("ok", "toxic", "threat"))                                         # doctest: +SKIP

:func:`load_text_file` finds the text and the label column (by the names given, by common names such as
``text``/``message`` and ``label``/``class``, or, in a two-column file, by their contents: the label column is the one
with few distinct short values), tells a header line from a message, and keeps the labels as written; ``encode``
maps them to the model's class indices by the model's class names (``"toxic"`` → 1) or as integers. Everything that
cannot be decided for sure — a first line that may be a header or a message, two columns that both look like text,
names the model does not know — raises :class:`~sparring.errors.DataLoadError` or
:class:`~sparring.errors.LabelError` saying which option settles it.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparring.errors import DataLoadError, LabelError

__all__ = ["FORMATS", "LABEL_NAMES", "TEXT_NAMES", "TextTable", "encode_labels", "load_text_file"]

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
           ".parquet": "parquet", ".pq": "parquet", ".txt": "text"}
"""File suffix -> format; any other suffix is read as plain text (one message per line, or ``label<TAB>message``)."""

TEXT_NAMES = ("text", "message", "messages", "msg", "sms", "comment", "comment_text", "content", "body", "sentence",
              "review", "tweet", "post", "document", "input", "query", "prompt")
"""Column names taken for the text column when ``text_col`` is not given (case-insensitive)."""

LABEL_NAMES = ("label", "labels", "class", "class_name", "category", "target", "y", "sentiment", "intent", "tag",
               "verdict")
"""Column names taken for the label column when ``label_col`` is not given (case-insensitive)."""


@dataclass(frozen=True)
class TextTable:
    """Messages read from a file, with their labels as written (``None`` when the file has none)."""

    texts: list[str]
    labels: list[str] | None
    source: str
    text_column: str
    label_column: str | None
    header: bool

    def encode(self, class_names: Sequence[str] | None = None, n_classes: int | None = None) -> torch.Tensor:
        """The labels as class indices: see :func:`encode_labels`."""
        if self.labels is None:
            raise LabelError(f"{self.source} has no label column (read {self.text_column!r} as the text); pass "
                             "label_col (--label-col NAME) or one label for every message (--label CLASS).")
        return encode_labels(self.labels, class_names, n_classes, source=self.source)


def encode_labels(labels: Sequence[str | int], class_names: Sequence[str] | None = None,
                  n_classes: int | None = None, *, source: str = "labels") -> torch.Tensor:
    """Labels (names or integers, as read from a file) as int64 class indices.

    A label equal to one of ``class_names`` (case-insensitive) is that class; an integer (``1``, ``"1"``, ``"1.0"``)
    is a class index and must be below ``n_classes`` (or ``len(class_names)``). Names without ``class_names`` are
    refused: which index a name means is the model's choice, not the file's.

    Raises:
        LabelError: a name that is not a class name, an index out of range, names with no class names to map them.
    """
    names = [str(c) for c in class_names] if class_names is not None else None
    k = len(names) if names is not None else n_classes
    lowered = {n.strip().lower(): i for i, n in enumerate(names or [])}
    out: list[int] = []
    for row, raw in enumerate(labels):
        cell = str(raw).strip()
        if cell.lower() in lowered:
            out.append(lowered[cell.lower()])
            continue
        index = _as_index(cell)
        if index is None:
            if names is None:
                seen = sorted({str(v).strip() for v in labels})[:8]
                raise LabelError(f"{source}: the labels are names ({', '.join(map(repr, seen))}) but the model does "
                                 "not name its classes; give the class names in the model's output order: "
                                 "--classes a,b,c (YAML system.text.classes: [a, b, c]).")
            close = difflib.get_close_matches(cell, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise LabelError(f"{source}: label {cell!r} (row {row + 1}) is not one of the model's classes "
                             f"{names}.{hint} Fix the file or the class names (--classes).")
        if k is not None and index >= k:
            raise LabelError(f"{source}: label {cell!r} (row {row + 1}) is a class index, but the model has {k} "
                             f"classes (0..{k - 1}). Fix the file or the class names (--classes).")
        out.append(index)
    return torch.tensor(out, dtype=torch.long)


def _as_index(cell: str) -> int | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return int(v) if v == int(v) and v >= 0 else None


# ---------------------------------------------------------------------------------------------- reading
def load_text_file(path: str | Path, *, text_col: str | None = None, label_col: str | None = None,
                   header: bool | None = None, fmt: str | None = None) -> TextTable:
    """Read labelled (or unlabelled) messages from ``path``.

    Args:
        path: a ``.csv``, ``.tsv``, ``.jsonl`` (one JSON object per line), ``.parquet`` or text file (one message per
            line, or ``label<TAB>message`` on every line).
        text_col, label_col: the columns by name (or by 0-based position in a file without a header). Default: a
            column named like :data:`TEXT_NAMES` / :data:`LABEL_NAMES`, else decided from the contents of a
            two-column file.
        header: whether a CSV/TSV file starts with a header line; ``None`` decides from the file.
        fmt: ``csv``, ``tsv``, ``jsonl``, ``parquet`` or ``text``; default from the suffix (:data:`FORMATS`).

    Raises:
        DataLoadError: the file is missing or unreadable, or which line is a header or which column holds the text
            cannot be decided (the message names the option that decides it).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataLoadError(f"messages file not found: {str(p)!r}. Check the path (relative paths start at "
                            f"{Path.cwd()}); messages are a .csv/.tsv/.jsonl/.parquet file with a text and a label "
                            "column, or a text file with one message per line.")
    kind = fmt or FORMATS.get(p.suffix.lower(), "text")
    if kind not in ("csv", "tsv", "jsonl", "parquet", "text"):
        raise DataLoadError(f"format {kind!r} is not one of csv, tsv, jsonl, parquet, text.")
    source = str(p)
    if kind == "parquet":
        columns, rows = _read_parquet(p)
        return _table(source, columns, rows, True, text_col, label_col)
    text = _read_text(p)
    if kind == "jsonl":
        columns, rows = _read_jsonl(text, source)
        return _table(source, columns, rows, True, text_col, label_col)
    if kind == "text":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        tabbed = sum("\t" in ln for ln in lines)
        if tabbed == 0:
            if label_col is not None:
                raise DataLoadError(f"{source} has one message per line and no label column; drop --label-col or "
                                    "write 'label<TAB>message' lines (or a CSV/TSV with a header).")
            return TextTable(lines, None, source, "0", None, False)
        if tabbed != len(lines):
            first = next(i for i, ln in enumerate(lines) if "\t" not in ln)
            raise DataLoadError(f"{source}: {tabbed} of {len(lines)} lines are 'label<TAB>message' but line "
                                f"{first + 1} ({lines[first][:50]!r}) has no tab; write every line the same way, or "
                                "save the file as .csv/.tsv with a header.")
        kind = "tsv"
        header = False if header is None and not (text_col or label_col) else header  # 'label<TAB>message' lines
    delimiter = "," if kind == "csv" else "\t"
    reader = (csv.reader(io.StringIO(text)) if kind == "csv"  # TSV: quotes are part of the message
              else csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    grid = [r for r in reader if any(c.strip() for c in r)]
    if not grid:
        raise DataLoadError(f"{source} holds no messages.")
    has_header = _decide_header(grid, header, text_col, label_col, source)
    if has_header:
        columns, body = [c.strip() for c in grid[0]], grid[1:]
    else:
        columns, body = [str(i) for i in range(_width(grid))], grid
    rows = _fit_rows(body, columns, delimiter, source, 2 if has_header else 1)
    return _table(source, columns, rows, has_header, text_col, label_col, delimiter)


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataLoadError(f"cannot read {p} as UTF-8 text ({exc}); save it as UTF-8.") from None


def _read_jsonl(text: str, source: str) -> tuple[list[str], list[list[str | None]]]:
    records: list[dict[str, Any]] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataLoadError(f"{source}:{i} is not JSON ({exc.msg}); expected one object per line, e.g. "
                                '{"text": "...", "label": "toxic"}.') from None
        if not isinstance(rec, dict):
            raise DataLoadError(f"{source}:{i} is a JSON {type(rec).__name__}; expected an object per line.")
        records.append(rec)
    columns = list(dict.fromkeys(k for r in records for k in r))
    return columns, [[None if r.get(c) is None else str(r[c]) for c in columns] for r in records]


def _read_parquet(p: Path) -> tuple[list[str], list[list[str | None]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataLoadError(f"reading {p} needs pyarrow: pip install 'sparring[parquet]' (or save it as CSV)."
                            ) from None
    try:
        table = pq.read_table(p)
    except Exception as exc:
        raise DataLoadError(f"cannot read {p} as Parquet ({type(exc).__name__}: {exc}).") from None
    data = table.to_pydict()
    columns = [str(c) for c in table.column_names]
    n = table.num_rows
    return columns, [[None if data[c][i] is None else str(data[c][i]) for c in table.column_names]
                     for i in range(n)]


def _width(grid: list[list[str]]) -> int:
    widths = [len(r) for r in grid]
    return max(set(widths), key=widths.count)  # the most common row width


def _fit_rows(body: list[list[str]], columns: list[str], delimiter: str, source: str,
              first_line: int) -> list[list[str | None]]:
    """Rows of exactly ``len(columns)`` cells; in a two-column file an unquoted delimiter inside the message is put
    back (the label is the short cell at one end)."""
    out: list[list[str | None]] = []
    for i, r in enumerate(body):
        if len(r) == len(columns):
            out.append(list(r))
        elif len(columns) == 2 and len(r) > 2:
            out.append(list(r))  # resolved once the label column is known
        else:
            raise DataLoadError(f"{source}: line {i + first_line} has {len(r)} field(s), the header/first line "
                                f"{len(columns)}; quote messages that contain {delimiter!r} (CSV quoting) or fix "
                                "the line.")
    return out


def _looks_like_label(col: list[str]) -> float:
    """How label-like a column is: few distinct values, all short (higher is more label-like)."""
    values = [c.strip() for c in col if c.strip()]
    if not values:
        return 0.0
    distinct = len(set(values))
    mean_len = sum(map(len, values)) / len(values)
    return (1.0 - distinct / len(values)) + (1.0 if mean_len <= 20 and " " not in "".join(set(values)) else 0.0)


def _label_side(rows: list[list[str]]) -> int | None:
    """In a two-column file, which column (0 or 1) holds the labels; ``None`` when the contents do not say."""
    a, b = _looks_like_label([r[0] for r in rows]), _looks_like_label([r[-1] for r in rows])
    if abs(a - b) < 0.25:
        return None
    return 0 if a > b else 1


def _decide_header(grid: list[list[str]], header: bool | None, text_col: str | None, label_col: str | None,
                   source: str) -> bool:
    if header is not None:
        return header
    first = [c.strip().lower() for c in grid[0]]
    named = [c for c in (text_col, label_col) if c is not None]
    if named and all(c.strip().lower() in first for c in named):
        return True
    if named and all(c.isdigit() for c in named):
        return False
    if any(c in TEXT_NAMES or c in LABEL_NAMES for c in first):
        return True
    if any(_as_index(c) is not None for c in first):
        return False  # a number is a label or a message, not a column name
    body = grid[1:]
    if len(grid[0]) == 2 and len(body) >= 2:
        side = _label_side([[r[0], r[-1]] for r in body])
        if side is not None:
            below = {r[0 if side == 0 else -1].strip().lower() for r in body}
            if first[0 if side == 0 else -1] in below:
                return False  # its label is one of the labels below: a message
            if len(first[1 - side].split()) > 2:
                return False  # a sentence, not a column name: a message with a label seen once
            if len(body) >= 4:
                return True  # a short name over a label column, and its label cell is no label
    if len(grid[0]) == 1:
        return False  # one message per line
    raise DataLoadError(f"{source}: cannot tell whether the first line ({','.join(grid[0])[:60]!r}) is a header or a "
                        "message; pass --header or --no-header (header=True/False), or name the columns "
                        "(--text-col, --label-col).")


def _pick(columns: list[str], given: str | None, known: tuple[str, ...], what: str, flag: str,
          source: str, header: bool) -> int | None:
    if given is not None:
        if given in columns:
            return columns.index(given)
        lowered = [c.lower() for c in columns]
        if given.lower() in lowered and lowered.count(given.lower()) == 1:
            return lowered.index(given.lower())
        if not header and given.isdigit() and int(given) < len(columns):
            return int(given)
        close = difflib.get_close_matches(given, columns, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        shown = columns if header else f"{len(columns)} unnamed columns (no header: use positions 0..)"
        raise DataLoadError(f"{source}: no {what} column {given!r}; the columns are {shown}.{hint} Fix {flag}.")
    hits = [i for i, c in enumerate(columns) if c.strip().lower() in known]
    if len(hits) > 1:
        raise DataLoadError(f"{source}: several columns could be the {what} column "
                            f"({', '.join(repr(columns[i]) for i in hits)}); choose one with {flag}.")
    return hits[0] if hits else None


def _table(source: str, columns: list[str], rows: list[list[str | None]], header: bool, text_col: str | None,
           label_col: str | None, delimiter: str = ",") -> TextTable:
    if not rows:
        raise DataLoadError(f"{source} holds no messages (only {'a header' if header else 'blank lines'}).")
    ti = _pick(columns, text_col, TEXT_NAMES, "text", "--text-col", source, header)
    li = _pick(columns, label_col, LABEL_NAMES, "label", "--label-col", source, header)
    if ti is not None and li == ti:
        raise DataLoadError(f"{source}: the text and the label column are both {columns[ti]!r}; name different "
                            "columns with --text-col and --label-col.")
    if len(columns) == 2 and (ti is None or li is None):
        known = ti if ti is not None else (1 - li if li is not None else None)
        if known is None:
            side = _label_side([[r[0] or "", r[-1] or ""] for r in rows])
            if side is None:
                raise DataLoadError(f"{source}: cannot tell which of the columns {columns} holds the messages and "
                                    "which the labels; name them with --text-col and --label-col.")
            known = 1 - side
        ti, li = known, 1 - known
    if ti is None:
        raise DataLoadError(f"{source}: no column is named like a text column ({', '.join(TEXT_NAMES[:6])}, ...); the "
                            f"columns are {columns}. Name it with --text-col.")
    if li is None and len(columns) > 2 and label_col is None:
        others = [c for i, c in enumerate(columns) if i != ti]
        raise DataLoadError(f"{source}: which column holds the labels? none is named like one "
                            f"({', '.join(LABEL_NAMES[:5])}, ...) among {others}; name it with --label-col.")
    texts: list[str] = []
    labels: list[str] | None = [] if li is not None else None
    for i, r in enumerate(rows):
        if len(r) > len(columns):  # two columns, unquoted delimiters inside the message
            rest = delimiter.join(c or "" for c in (r[1:] if li == 0 else r[:-1]))
            r = [r[0], rest] if li == 0 else [rest, r[-1]]
        t = r[ti]
        if t is None or not t.strip():
            raise DataLoadError(f"{source}: message {i + 1} (column {columns[ti]!r}) is empty; drop the row or fill "
                                "it in.")
        texts.append(t)
        if labels is not None and li is not None:
            lab = r[li]
            if lab is None or not lab.strip():
                raise LabelError(f"{source}: message {i + 1} has no label (column {columns[li]!r}); label it or "
                                 "drop the row.")
            labels.append(lab.strip())
    return TextTable(texts, labels, source, columns[ti], columns[li] if li is not None else None, header)
