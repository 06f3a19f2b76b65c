"""Building a model from ``package.module:callable`` and filling it with a state dict (``weights_only=True``)."""

from __future__ import annotations

import difflib
import importlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparring._util import first_line as _first_line
from sparring.errors import ModelLoadError

__all__ = ["build_from_entry_point", "load_state_dict_model"]


def build_from_entry_point(entry_point: str) -> nn.Module:
    mod_name, sep, attr = entry_point.partition(":")
    if not sep or not mod_name.strip() or not attr.strip():
        raise ModelLoadError(
            f"entry_point must look like 'package.module:callable'; got {entry_point!r} (no ':' or an empty part)."
        )
    try:
        obj: Any = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"entry point {entry_point!r}: no module named {exc.name!r}. Check the spelling, and that the package is "
            "installed or on sys.path (PYTHONPATH)."
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"entry point {entry_point!r}: importing {mod_name!r} failed: {_first_line(exc)}") from exc
    where = mod_name
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, public, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ModelLoadError(f"entry point {entry_point!r}: {where!r} has no attribute {part!r}.{hint}")
        obj, where = getattr(obj, part), f"{where}.{part}"
    if not callable(obj):
        raise ModelLoadError(
            f"entry point {entry_point!r} is a {type(obj).__name__}, not a callable; it must name a function or "
            "class that builds the model with no arguments."
        )
    try:
        model = obj()
    except Exception as exc:
        raise ModelLoadError(
            f"calling entry point {entry_point!r} with no arguments failed: {_first_line(exc)}. Point it at a "
            "function that builds the model with no arguments (e.g. def build(): return Net(n_classes=10))."
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"entry point {entry_point!r} returned a {type(model).__name__}; it must return a torch.nn.Module."
        )
    return model


def load_state_dict_model(path: Path, entry_point: str) -> nn.Module:
    model = build_from_entry_point(entry_point)
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(
            f"{path} holds pickled Python objects beyond tensors (e.g. a whole model saved with torch.save(model)); "
            "sparring loads state dicts with weights_only=True only. Save model.state_dict() instead. "
            f"({_first_line(exc)})"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"{path} could not be read as a torch.save state dict (truncated or corrupted?): {_first_line(exc)}"
        ) from exc
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model"):  # a training checkpoint wrapping the weights
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of name -> tensor).")
    expected = model.state_dict()
    missing = [k for k in expected if k not in obj]
    unexpected = [k for k in obj if k not in expected]
    shapes = [
        f"{k}: file {tuple(obj[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in obj and isinstance(obj[k], torch.Tensor) and tuple(obj[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = [f"{what} ({len(items)}): {items[:5]}" for what, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if items]
        hint = ""
        if unexpected and all(str(k).startswith("module.") for k in obj):
            hint = " The keys start with 'module.' (saved from DataParallel/DDP): strip that prefix before saving."
        raise ModelLoadError(
            f"the state dict in {path} does not fit the model built by {entry_point!r}: " + "; ".join(parts)
            + "." + hint + " Check that the entry point builds the same architecture the weights were trained on."
        )
    try:
        model.load_state_dict(obj, strict=True)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"loading {path} into {entry_point!r} failed: {_first_line(exc)}") from exc
    return model.eval()
