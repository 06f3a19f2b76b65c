"""Load a model the way users have it: a zoo name, a TorchScript / torch.export / ONNX file, a state dict plus the
code that builds the model, or a scikit-learn model saved with skops (or, when trusted, pickled).

>>> from sparring.targets.load import load_target, load_spec
>>> target = load_target("digits-cnn")                                    # doctest: +SKIP
>>> target = load_target("model.onnx", spec=load_spec("spec.json"))        # doctest: +SKIP
>>> target = load_target("weights.pt", spec=spec, entry_point="mypkg.nets:build")  # doctest: +SKIP

The kind of a file is read from its content where the content tells (TorchScript, torch.export, torch.save and
skops files are all zip archives, told apart by their member names), else from its extension. Nothing is ever
unpickled without consent: ``torch.load`` always runs with ``weights_only=True``, skops files are checked for
untrusted types, and joblib/pickle files need ``trust_pickle=True``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparring._util import first_line as _first_line
from sparring.errors import InputSpecError, ModelLoadError, ParameterError
from sparring.targets._state_dict import load_state_dict_model
from sparring.targets.base import Target
from sparring.targets.spec import InputSpec

__all__ = ["KINDS", "ExportedModule", "detect_kind", "load_spec", "load_target"]

KINDS: dict[str, str] = {
    "zoo": "zoo model (a name from sparring.zoo.names())",
    "torchscript": "TorchScript archive (torch.jit.save)",
    "torch-export": "torch.export archive (torch.export.save, .pt2)",
    "torch-save": "torch.save file (a state dict; needs entry_point='package.module:builder')",
    "onnx": "ONNX model (.onnx)",
    "skops": "skops file (scikit-learn, skops.io.dump, .skops)",
    "pickle": "pickle/joblib file (scikit-learn, .joblib/.pkl/.pickle; needs trust_pickle=True)",
}
"""The kinds :func:`load_target` reads, each with how it is made."""

_SUFFIX_KIND = {".onnx": "onnx", ".skops": "skops", ".joblib": "pickle", ".pkl": "pickle", ".pickle": "pickle",
                ".pt2": "torch-export"}
_TORCH_SUFFIXES = {".pt", ".pth", ".ts", ".jit", ".bin", ".ckpt"}


def _label(kind: str) -> str:
    return KINDS[kind].split(" (")[0]


def _supported() -> str:
    return "; ".join(f"{k}: {v}" for k, v in KINDS.items())


# ---------------------------------------------------------------------------------------------- kind detection
def _zip_kind(names: list[str]) -> str | None:
    if "schema.json" in names:
        return "skops"
    if any(n.endswith(("/archive_format", "/models/model.json", "serialized_exported_program.json")) for n in names):
        return "torch-export"
    if any("/code/__torch__" in n or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "torch-save"
    return None


def _local_zip_names(path: Path, limit: int = 32 << 20) -> list[str]:
    """Member names from the local headers of a zip whose central directory is missing (a truncated file)."""
    with path.open("rb") as f:
        data = f.read(limit)
    names = []
    for m in re.finditer(rb"PK\x03\x04", data):
        start = m.start()
        if start + 30 > len(data):
            break
        n_len = int.from_bytes(data[start + 26 : start + 28], "little")
        names.append(data[start + 30 : start + 30 + n_len].decode("utf-8", "replace"))
    return names


def detect_kind(path: str | os.PathLike[str]) -> str:
    """The kind of model file at ``path`` (a key of :data:`KINDS`), from its content where possible.

    Raises :class:`ModelLoadError` for a missing file, a truncated or corrupted archive, or an unknown kind.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"no such file: {str(p)!r}" + (" (it is a directory)." if p.is_dir() else "."))
    suffix = p.suffix.lower()
    with p.open("rb") as f:
        head = f.read(8)
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ModelLoadError(f"{p} is a corrupted zip archive ({exc}); it cannot be read as a model.") from exc
        kind = _zip_kind(names)
        if kind is None:
            raise ModelLoadError(
                f"{p} is a zip archive with members {names[:5]} that sparring does not recognise as a model. "
                f"Supported kinds: {_supported()}."
            )
        return kind
    if head.startswith(b"PK\x03\x04"):  # a zip whose end was cut off or overwritten
        kind = _zip_kind(_local_zip_names(p)) or _SUFFIX_KIND.get(suffix)
        torch_like = "PyTorch archive (TorchScript, torch.export or torch.save)" if suffix in _TORCH_SUFFIXES else ""
        what = _label(kind) if kind else torch_like or "zip archive"
        raise ModelLoadError(
            f"{p} is a truncated or corrupted {what}: it starts like a zip archive but its directory is missing or "
            "unreadable. Copy or save the file again."
        )
    if suffix in _SUFFIX_KIND:
        kind = _SUFFIX_KIND[suffix]
        if kind in ("skops", "torch-export"):  # both are always zip archives
            raise ModelLoadError(
                f"{p} is not a valid {_label(kind)}: it is not a zip archive (truncated, corrupted, or "
                "another format under this extension)."
            )
        return kind
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5 (also legacy torch.save)
        return "torch-save" if suffix in _TORCH_SUFFIXES else "pickle"
    if suffix in _TORCH_SUFFIXES:
        raise ModelLoadError(
            f"{p} is not a valid PyTorch file (TorchScript, torch.export or torch.save): it is neither a zip archive "
            "nor a pickle; it may be truncated or corrupted."
        )
    if _parses_as_onnx(p):
        return "onnx"
    raise ModelLoadError(f"{p}: unknown model kind (extension {suffix or 'none'!r}). Supported kinds: {_supported()}.")


def _parses_as_onnx(path: Path) -> bool:
    try:
        import onnx
    except ImportError:  # pragma: no cover
        return False
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:
        return False
    return bool(model.ir_version > 0 and len(model.graph.node) > 0 and len(model.graph.output) > 0)


# ---------------------------------------------------------------------------------------------- spec
def load_spec(path: str | os.PathLike[str]) -> InputSpec:
    """Read an :class:`InputSpec` from a JSON file with :meth:`InputSpec.to_dict` keys.

    A file holding a target's :meth:`~sparring.targets.Target.describe` output (the spec under ``"spec"``) works
    too. Raises :class:`InputSpecError` for a missing file, invalid JSON, or invalid spec values.
    """
    p = Path(path)
    if not p.is_file():
        raise InputSpecError(f"no such spec file: {str(p)!r}. Write one with json.dump(spec.to_dict(), f).")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputSpecError(f"spec file {p} is not valid JSON: {exc}.") from exc
    if isinstance(data, dict) and isinstance(data.get("spec"), dict) and "shape" not in data:
        data = data["spec"]
    if not isinstance(data, dict):
        raise InputSpecError(
            f"spec file {p} holds a JSON {type(data).__name__}; expected an object such as "
            '{"shape": [1, 28, 28], "n_classes": 10, "bounds": [0, 1]}.'
        )
    return InputSpec.from_dict(data)


def _resolve_spec(spec: InputSpec | str | os.PathLike[str] | None) -> InputSpec | None:
    if spec is None or isinstance(spec, InputSpec):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec)
    raise ParameterError(f"spec must be an InputSpec or the path of a JSON spec file; got {type(spec).__name__}.")


# ---------------------------------------------------------------------------------------------- entry point
def _text_model_hint(path: Path, kind: str) -> str:
    """A hint when a skops file holds a text pipeline (strings in, so no tensor spec can describe it). Reads only the
    file's schema.json, never the objects."""
    if kind != "skops":
        return ""
    try:
        with zipfile.ZipFile(path) as z:
            schema = z.read("schema.json").decode("utf-8", "replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return ""
    if "sklearn.feature_extraction.text" not in schema:
        return ""
    return (" This file holds a text pipeline (a scikit-learn text vectorizer takes strings): attack it with "
            "`sparring attack-text --model FILE` or sparring.targets.load_text_target.")


def load_target(
    source: str | os.PathLike[str],
    *,
    spec: InputSpec | str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
    device: str | torch.device = "cpu",
    entry_point: str | None = None,
    trusted_types: Sequence[str] = (),
    white_box: bool = False,
    **target_kwargs: Any,
) -> Target:
    """Load a model under test from a zoo name or a file, as the right kind of :class:`~sparring.targets.Target`.

    Args:
        source: a zoo name (:func:`sparring.zoo.names`) or the path of a model file (see :data:`KINDS`).
        spec: the :class:`InputSpec`, or the path of a JSON spec file (:func:`load_spec`). Required for files;
            zoo models carry their own.
        trust_pickle: allow unpickling (joblib/pickle files, untrusted types in skops files). Unpickling runs
            arbitrary code: pass it only for files you trust.
        device: where to put a torch model.
        entry_point: ``"package.module:callable"`` building the ``nn.Module`` (with no arguments) whose weights the
            ``source`` state dict holds.
        trusted_types: types to trust in a skops file beyond skops' defaults (e.g. ``"sklearn.tree._tree.Tree"``
            for forests): the file loads only if every type skops flags is listed (``--trusted-type``).
        white_box: for an ONNX file, convert the graph to torch and return an
            :class:`~sparring.targets.onnx_torch.OnnxTorchTarget` (gradients; checked against onnxruntime, which it
            keeps as ``.reference``) instead of the onnxruntime :class:`~sparring.targets.OnnxTarget` (scores).
            Other kinds ignore it (torch models have gradients already; scikit-learn models have none).
        **target_kwargs: passed to the target (``query_budget=``, ``access=``, ``output=``, ``providers=`` ...).

    Raises:
        ModelLoadError: the file is missing, truncated, corrupted, of an unknown kind, or untrusted; the entry
            point cannot be imported or the state dict does not fit it.
        ParameterError: no spec was given for a file.
        InputSpecError: the model does not take the spec's shape or give its number of classes.
        OnnxConversionError: ``white_box=True`` on an ONNX graph with operators the conversion lacks (named), or
            whose conversion differs from onnxruntime beyond ``tolerance=`` (the largest difference is given).
    """
    from sparring.data import zoo

    src = os.fspath(source)
    if isinstance(source, str) and source in zoo.names() and not Path(source).exists():
        if entry_point is not None:
            raise ParameterError(f"{source!r} is a zoo model; entry_point is only for state-dict files. Drop it.")
        given = _resolve_spec(spec)
        if given is not None and given != zoo.entry(source).spec():
            raise ParameterError(f"zoo model {source!r} has its own spec; the spec given differs. Drop spec=.")
        return zoo.load(source, device=device, **target_kwargs)
    path = Path(src)
    if not path.exists():
        close = difflib.get_close_matches(src, zoo.names(), n=1)
        hint = f" Did you mean the zoo model {close[0]!r}?" if close else ""
        raise ModelLoadError(f"no such file: {src!r}.{hint} Zoo models: {', '.join(zoo.names())}.")
    kind = detect_kind(path)
    if entry_point is not None and kind not in ("torch-save", "pickle"):
        raise ParameterError(
            f"entry_point is for state-dict files, but {path} is a {_label(kind)} that carries its own model. "
            "Drop entry_point."
        )
    the_spec = _resolve_spec(spec)
    if the_spec is None:
        raise ParameterError(
            f"loading {path} ({_label(kind)}) needs an input spec: pass spec=InputSpec(shape=..., "
            "n_classes=..., bounds=...) or spec='spec.json' (InputSpec.to_dict keys; --spec on the command line)."
            + _text_model_hint(path, kind)
        )
    if entry_point is not None:
        model = load_state_dict_model(path, entry_point)
        return _torch_target(model, the_spec, device, target_kwargs)
    if kind == "torchscript":
        script = _read_torch(path, kind, lambda: _jit_load(path))
        return _torch_target(script, the_spec, device, target_kwargs)
    if kind == "torch-export":
        ep = _read_torch(path, kind, lambda: torch.export.load(str(path)))
        _check_export_input(ep, the_spec, path)
        return _torch_target(ExportedModule(ep.module()), the_spec, device, target_kwargs)
    if kind == "torch-save":
        raise ModelLoadError(
            f"{path} is a torch.save file. sparring reads state dicts only (never full pickled modules), so it "
            "needs the code that builds the model: pass entry_point='package.module:build_fn' (--entry-point). "
            "Or save the whole model with torch.jit.save / torch.export.save."
        )
    if kind == "onnx":
        from sparring.targets.onnx import OnnxTarget

        kw = dict(target_kwargs)
        if str(device).startswith("cuda") and "providers" not in kw and not white_box:
            kw["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if white_box:
            from sparring.targets.onnx_torch import OnnxTorchTarget

            return OnnxTorchTarget(path, the_spec, device=device, **kw)
        return OnnxTarget(path, the_spec, **kw)
    estimator = (_load_skops(path, trust_pickle, trusted_types) if kind == "skops"
                 else _load_pickle(path, trust_pickle))
    if isinstance(estimator, nn.Module):  # a trusted pickle may hold a whole torch model
        return _torch_target(estimator, the_spec, device, target_kwargs)
    return _sklearn_target(estimator, the_spec, path, target_kwargs)


# ---------------------------------------------------------------------------------------------- torch
def _read_torch(path: Path, kind: str, read: Any) -> Any:
    try:
        return read()
    except Exception as exc:
        raise ModelLoadError(
            f"{path} could not be read as a {_label(kind)} (truncated, corrupted, or saved by an "
            f"incompatible torch version; this is torch {torch.__version__}): {_first_line(exc)}"
        ) from exc


class ExportedModule(nn.Module):
    """The module of a ``torch.export`` program, made safe for :class:`~sparring.targets.TorchTarget`.

    ``ExportedProgram.module()`` refuses ``.train()``/``.eval()`` (the graph has its mode baked in), but targets
    switch modes around attacks; this wrapper records the mode without passing it down.
    """

    def __init__(self, exported: nn.Module) -> None:
        super().__init__()
        self.exported = exported

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.exported(x)  # type: ignore[no-any-return]


def _jit_load(path: Path) -> Any:
    with warnings.catch_warnings():
        # torch >= 2.10 deprecates TorchScript; the user chose the format, so the notice is noise here.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]


def _torch_target(model: nn.Module, spec: InputSpec, device: str | torch.device, kw: dict[str, Any]) -> Target:
    from sparring.targets.torch import TorchTarget

    if torch.device(device) != torch.device("cpu"):
        model = model.to(device)
    return TorchTarget(model, spec, **kw)


def _check_export_input(ep: Any, spec: InputSpec, path: Path) -> None:
    """A torch.export program must take one input whose fixed sizes match the spec and whose batch axis is free."""
    user_inputs = set(ep.graph_signature.user_inputs)
    vals = [n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder" and n.name in user_inputs]
    if len(vals) != 1 or not isinstance(vals[0], torch.Tensor):
        raise ModelLoadError(f"{path} takes {len(vals)} inputs; sparring needs a model with one tensor input.")
    dims = [d if isinstance(d, int) else None for d in vals[0].shape]
    shown = "(" + ", ".join("N" if d is None else str(d) for d in dims) + ")"
    if len(dims) != 1 + len(spec.shape) or any(
        d is not None and d != s for d, s in zip(dims[1:], spec.shape, strict=True)
    ):
        raise InputSpecError(
            f"{path} was exported for inputs of shape {shown} but the spec declares "
            f"(N, {', '.join(map(str, spec.shape))}). Fix InputSpec.shape/layout or re-export."
        )
    if dims[0] is not None:
        raise ModelLoadError(
            f"{path} was exported with a fixed batch size of {dims[0]}, so it rejects other batch sizes. Re-export "
            "with a dynamic batch axis: torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("
            "'batch')},))."
        )


# ---------------------------------------------------------------------------------------------- scikit-learn
def _load_skops(path: Path, trust_pickle: bool, trusted_types: Sequence[str] = ()) -> Any:
    try:
        import skops.io as sio
    except ImportError as exc:  # pragma: no cover
        raise ModelLoadError(f"reading {path} needs skops: pip install 'sparring[skops]'.") from exc
    try:
        untrusted = list(sio.get_untrusted_types(file=path))
    except Exception as exc:
        raise ModelLoadError(f"{path} could not be read as a skops file (truncated or corrupted?): {exc}") from exc
    unlisted = [t for t in untrusted if t not in set(trusted_types)]
    if unlisted and not trust_pickle:
        raise ModelLoadError(
            f"{path} contains types that skops does not trust by default: {unlisted}. Loading them can run their "
            "code. If you trust this file and these types, list each one with trusted_types=[...] "
            "(--trusted-type TYPE, once per type; YAML system.trusted_types), or pass trust_pickle=True "
            "(--trust-pickle) to trust them all."
        )
    try:
        return sio.load(path, trusted=untrusted or None)
    except Exception as exc:
        raise ModelLoadError(f"{path} could not be loaded as a skops file: {_first_line(exc)}") from exc


def _load_pickle(path: Path, trust_pickle: bool) -> Any:
    if not trust_pickle:
        raise ModelLoadError(
            f"{path} is a pickle/joblib file, and unpickling runs arbitrary code stored in the file. Pass "
            "trust_pickle=True (--trust-pickle) only for files you made or trust; better, re-save the model with "
            "skops (skops.io.dump(model, 'model.skops'))."
        )
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:
        raise ModelLoadError(
            f"{path} could not be unpickled as a pickle/joblib file (truncated or corrupted?): {_first_line(exc)}"
        ) from exc


def _sklearn_target(estimator: Any, spec: InputSpec, path: Path, kw: dict[str, Any]) -> Target:
    from sparring.targets.sklearn import SklearnTarget

    n_in = getattr(estimator, "n_features_in_", None)
    if isinstance(n_in, int) and n_in != spec.n_features:
        raise InputSpecError(
            f"the model in {path} was fitted on {n_in} features but the spec declares shape {spec.shape} "
            f"({spec.n_features} features). Fix InputSpec.shape."
        )
    return SklearnTarget(estimator, spec, **kw)
