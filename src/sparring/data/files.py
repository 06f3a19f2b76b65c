"""Loading user data: .npz arrays, CSV tables, image folders (Fashion-MNIST and MNIST live in ``sparring.data.mnist``).

Every loader returns CPU tensors: inputs ``x`` as float32 with a batch axis, labels ``y`` as int64 class indices.
Values are never rescaled silently, except where stated (image files and the MNIST sets are scaled to [0, 1]): the
bounds of the :class:`~sparring.targets.InputSpec` you declare must match the range the data arrive in.

Errors: :class:`~sparring.errors.DataLoadError` for a missing, unreadable or malformed file (or a dataset that is not
installed: the message names the install command), :class:`~sparring.errors.InputSpecError` for inputs of the wrong
shape or with NaN/inf, :class:`~sparring.errors.LabelError` for unusable labels.
"""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from sparring.errors import DataLoadError, InputSpecError, LabelError, ParameterError

__all__ = [
    "LabelledData",
    "load_csv",
    "load_data",
    "load_image_folder",
    "load_npz",
]



class LabelledData(NamedTuple):
    """Inputs, labels and (when the file names them) class names. Unpacks as ``x, y, class_names = ...``.

    ``class_names[i]`` is the name of label ``i``; ``None`` when the labels were already integers.
    """

    x: torch.Tensor
    y: torch.Tensor
    class_names: tuple[str, ...] | None


# ----------------------------------------------------------------------------------------------- shared checks
def _to_tensors(x: np.ndarray, y: np.ndarray, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a loaded pair and return it as (float32, int64) tensors, with messages that name ``source``."""
    if x.dtype.kind not in "biuf":
        raise InputSpecError(f"{source}: inputs have dtype {x.dtype}; expected numbers. Save x as a numeric array.")
    if x.ndim < 2:
        raise InputSpecError(
            f"{source}: inputs have shape {x.shape}; expected a batch (N, ...) with at least 2 axes. "
            "For one feature per example, save x[:, None]."
        )
    if x.shape[0] == 0:
        raise InputSpecError(f"{source}: the data hold 0 examples; expected at least one.")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, reported just below
        xf = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(xf).reshape(len(xf), -1).all(axis=1)
    if bad.any():
        raise InputSpecError(
            f"{source}: {int(bad.sum())} example(s) contain NaN or inf (first: example {int(np.argmax(bad))}), or "
            "values too large for float32; clean or drop them first."
        )
    y = _labels_as_int(y, source)
    if y.shape[0] != x.shape[0]:
        raise LabelError(f"{source}: {y.shape[0]} labels for {x.shape[0]} inputs; they must match one to one.")
    return torch.from_numpy(xf.copy() if xf is x else xf), torch.from_numpy(y)


def _labels_as_int(y: np.ndarray, source: str) -> np.ndarray:
    if y.dtype.kind in "USO":
        raise LabelError(
            f"{source}: labels are {y.dtype} (text); expected integer class indices. Encode them as 0..k-1, or save "
            "the data as CSV, whose loader encodes text labels."
        )
    if y.dtype.kind == "b":
        raise LabelError(f"{source}: labels are booleans; expected integer class indices. Use y.astype(int).")
    if y.ndim != 1:
        hint = " (one-hot? use y.argmax(1))" if y.ndim == 2 and y.shape[1] > 1 else " (use y.ravel())"
        raise LabelError(f"{source}: labels have shape {y.shape}; expected a 1-d vector of class indices{hint}.")
    if y.dtype.kind == "f" and not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        raise LabelError(f"{source}: labels contain non-integer values; expected integer class indices.")
    if y.dtype.kind not in "iuf":
        raise LabelError(f"{source}: labels have dtype {y.dtype}; expected integer class indices.")
    yi = y.astype(np.int64)
    if yi.size and int(yi.min()) < 0:
        raise LabelError(f"{source}: labels go down to {int(yi.min())}; class indices must be >= 0.")
    return yi


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataLoadError(f"{what} not found: {str(p)!r}. Check the path (relative paths start at {Path.cwd()}).")
    return p


# ----------------------------------------------------------------------------------------------- user files
def load_npz(path: str | Path, *, x_key: str = "x", y_key: str = "y") -> tuple[torch.Tensor, torch.Tensor]:
    """Read inputs and labels from a NumPy ``.npz`` archive (saved with ``np.savez(path, x=..., y=...)``).

    Pickled (object) arrays are refused, since unpickling can run code. Values are kept as stored: uint8 pixels in
    0-255 come back as float32 0.0-255.0, so declare ``InputSpec(bounds=(0, 255))`` or divide by 255 yourself.
    """
    p = _existing(path, "npz file")
    if not p.is_file() or not zipfile.is_zipfile(p):
        raise DataLoadError(f"{p}: not a readable .npz archive (no zip data); save one with np.savez(path, x=x, y=y).")
    try:
        with np.load(p, allow_pickle=False) as archive:
            keys = sorted(archive.files)
            missing = [k for k in (x_key, y_key) if k not in keys]
            if missing:
                raise DataLoadError(
                    f"{p}: no array named {missing[0]!r}; the archive holds {keys}. Pick them with --x-key/--y-key "
                    "on the command line (x_key=/y_key= in Python)."
                )
            x, y = archive[x_key], archive[y_key]
    except DataLoadError:
        raise
    except ValueError as exc:
        raise DataLoadError(
            f"{p}: an array is pickled (object dtype; refused, since unpickling can run code) or malformed ({exc}); "
            "save numeric arrays with np.savez(path, x=x, y=y)."
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataLoadError(f"{p}: not a readable .npz archive ({exc}); save one with np.savez(path, x=x, y=y).") \
            from exc
    return _to_tensors(x, y, str(p))


def load_csv(path: str | Path, *, label_column: str = "label", delimiter: str = ",") -> LabelledData:
    """Read a table with a header row: every column but ``label_column`` is a numeric feature.

    Labels that are all integers are kept as they are (``class_names`` is ``None``). Any other labels are taken as
    text and encoded to ``0..k-1`` in sorted order of their names, which come back as ``class_names``.

    Returns:
        ``LabelledData(x, y, class_names)``, which unpacks as a 3-tuple; ``x`` is ``(N, n_features)`` float32.
    """
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ParameterError(f"delimiter must be one character, e.g. ',' or '\\t'; got {delimiter!r}.")
    p = _existing(path, "CSV file")
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f, delimiter=delimiter) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataLoadError(f"{p}: cannot read it as UTF-8 CSV text ({exc}).") from exc
    if not rows:
        raise DataLoadError(f"{p}: the file is empty; expected a header row then one row per example.")
    header = [c.strip() for c in rows[0]]
    if all(_is_number(c) for c in header):
        raise DataLoadError(
            f"{p}: the first row {header[:6]} looks like data; add a header row naming the columns, with "
            f"{label_column!r} for the labels."
        )
    if label_column not in header:
        raise DataLoadError(f"{p}: no column {label_column!r}; the columns are {header}. Pass label_column=...")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise DataLoadError(f"{p}: duplicate column names {dup}; give every column a distinct name.")
    if len(header) < 2:
        raise DataLoadError(f"{p}: only the label column {label_column!r}; expected at least one feature column.")
    body = rows[1:]
    if not body:
        raise DataLoadError(f"{p}: a header but no data rows.")
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise DataLoadError(f"{p}: row {i + 2} has {len(r)} cells; the header has {len(header)}.")
    li = header.index(label_column)
    feats = [j for j in range(len(header)) if j != li]
    values = np.empty((len(body), len(feats)), dtype=np.float64)
    for i, r in enumerate(body):
        for k, j in enumerate(feats):
            cell = r[j].strip()
            try:
                v = float(cell)
            except ValueError:
                raise DataLoadError(
                    f"{p}: row {i + 2}, column {header[j]!r}: {cell!r} is not a number. Features must be numeric; "
                    "encode categories as numbers or drop the column."
                ) from None
            if not math.isfinite(v):
                raise DataLoadError(
                    f"{p}: row {i + 2}, column {header[j]!r}: {cell!r} is not a finite number; fill or drop it."
                )
            values[i, k] = v
    raw = [r[li].strip() for r in body]
    if "" in raw:
        raise DataLoadError(f"{p}: row {raw.index('') + 2} has no label in column {label_column!r}; fill or drop it.")
    names: tuple[str, ...] | None = None
    if all(_is_int(c) for c in raw):
        y = np.array([int(float(c)) for c in raw], dtype=np.int64)
    else:
        names = tuple(sorted(set(raw)))
        index = {n: i for i, n in enumerate(names)}
        y = np.array([index[c] for c in raw], dtype=np.int64)
    x, yt = _to_tensors(values, y, str(p))
    return LabelledData(x, yt, names)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_int(cell: str) -> bool:
    try:
        v = float(cell)
    except ValueError:
        return False
    return math.isfinite(v) and v == int(v)


def _require_pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise DataLoadError(
            "reading image files needs Pillow, which is not installed; run `pip install pillow`."
        ) from exc
    return Image


def load_image_folder(
    root: str | Path, *, size: int | tuple[int, int] | None = None, grayscale: bool = False
) -> LabelledData:
    """Read images laid out as ``root/<class name>/<image file>``; classes are numbered in sorted name order.

    Images are decoded with Pillow, converted to RGB (or to one grey channel with ``grayscale=True``; alpha is
    dropped), scaled from 0-255 to [0, 1] and stacked channels-first as ``(N, C, H, W)``. Images of different sizes
    need ``size=(height, width)`` (or one int for squares); they are then resized bilinearly. Only files with an
    extension Pillow knows (``.png``, ``.jpg``, ...) are read; hidden files and folders are skipped.
    """
    Image = _require_pillow()
    r = _existing(root, "image folder")
    if not r.is_dir():
        raise DataLoadError(f"{r} is a file; expected a folder laid out as root/<class>/<image>.")
    target = _parse_size(size)
    classes = sorted(d.name for d in r.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataLoadError(f"{r}: no class folders; expected the layout root/<class name>/<image file>.")
    known = {ext.lower() for ext in Image.registered_extensions()}
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    first: tuple[Path, tuple[int, ...]] | None = None
    for ci, name in enumerate(classes):
        files = sorted(
            f for f in (r / name).iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in known
        )
        if not files:
            raise DataLoadError(f"{r / name}: class folder {name!r} holds no image files; add images or remove it.")
        for f in files:
            arr = _read_image(Image, f, target, grayscale)
            if first is None:
                first = (f, arr.shape)
            elif arr.shape != first[1]:
                raise InputSpecError(
                    f"images differ in size: {first[0]} is {first[1][1]}×{first[1][2]} but {f} is "
                    f"{arr.shape[1]}×{arr.shape[2]} (height×width); pass size=(height, width) to resize them all."
                )
            arrays.append(arr)
            labels.append(ci)
    x = torch.from_numpy(np.stack(arrays))
    return LabelledData(x, torch.tensor(labels, dtype=torch.int64), tuple(classes))


def _parse_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, tuple | list) else ()
    if len(hw) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in hw):
        raise ParameterError(f"size must be a positive int or (height, width) of positive ints; got {size!r}.")
    return int(hw[0]), int(hw[1])


def _read_image(Image: Any, f: Path, size: tuple[int, int] | None, grayscale: bool) -> np.ndarray:
    try:
        with Image.open(f) as im:
            im = im.convert("L" if grayscale else "RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataLoadError(f"cannot read image {f}: {exc}. Replace or remove the file.") from exc
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))


def csv_feature_columns(path: str | Path, label_column: str = "label") -> list[str] | None:
    """The feature column names of a CSV/TSV file (its header without ``label_column``); None for other kinds or a
    missing file (loading it is where that is reported)."""
    import csv

    p = Path(path)
    if p.suffix.lower() not in (".csv", ".tsv") or not p.is_file():
        return None
    with p.open(newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f, delimiter="\t" if p.suffix.lower() == ".tsv" else ","), [])
    return [c.strip() for c in header if c.strip() != label_column]


def load_data(path: str | Path, **kw: Any) -> LabelledData:
    """Load ``path`` by its kind: ``.npz`` (:func:`load_npz`), ``.csv``/``.tsv`` (:func:`load_csv`), or a folder
    (:func:`load_image_folder`). Keyword arguments go to that loader; ``class_names`` is ``None`` for ``.npz``."""
    p = _existing(path, "data path")
    suffix = p.suffix.lower()
    if p.is_dir():
        return load_image_folder(p, **kw)
    if suffix == ".npz":
        x, y = load_npz(p, **kw)
        return LabelledData(x, y, None)
    if suffix == ".csv":
        return load_csv(p, **kw)
    if suffix == ".tsv":
        return load_csv(p, **{"delimiter": "\t", **kw})
    raise DataLoadError(
        f"{p}: unsupported kind {suffix or '(no extension)'!r}; supported: .npz (arrays x and y), .csv / .tsv "
        "(header row, a label column), or a folder of images laid out as root/<class>/<image>."
    )
