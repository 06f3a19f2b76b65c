"""An ONNX model, run with onnxruntime, as a score-access target."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparring._util import first_line as _first_line
from sparring.errors import InputSpecError, ModelLoadError, ParameterError
from sparring.targets.base import ScoreKind, Target
from sparring.targets.spec import Access, InputSpec

__all__ = ["OnnxTarget"]

# ONNX tensor element types onnxruntime reports, and the numpy dtype we feed for each.
_INPUT_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}
_FLOAT_OUTPUTS = frozenset(_INPUT_DTYPES)


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - onnxruntime is installed in the dev environment
        raise ModelLoadError(
            "loading ONNX models needs onnxruntime, which is not installed. Install it with "
            "pip install 'sparring[onnx]'."
        ) from exc
    return onnxruntime


class OnnxTarget(Target):
    """An ONNX classifier under test, run on onnxruntime, with scores access (no gradients).

    On construction the model is loaded and checked against the spec: it must have a single input whose rank is
    ``1 + len(spec.shape)`` and whose fixed sizes match ``(N, *spec.shape)`` (symbolic sizes such as a dynamic
    batch axis are fine), and a float output of shape ``(N, n_classes)``. A model exported with a fixed batch size
    is fed batches of exactly that size (the last one padded). ``spec.mean``/``spec.std`` are applied before the
    call, as :class:`~sparring.targets.TorchTarget` does, and inputs are cast to the model's input dtype.

    Args:
        path_or_bytes: a path to a ``.onnx`` file, or the serialized model bytes.
        spec: the input specification.
        output: whether the model returns ``"logits"`` or ``"probabilities"``.
        providers: onnxruntime execution providers, e.g. ``["CUDAExecutionProvider", "CPUExecutionProvider"]``;
            default CPU only.
        access, batch_size, query_budget, top_k, decimals: see :class:`~sparring.targets.Target`.

    Example:
        >>> from sparring.targets.onnx import OnnxTarget
        >>> t = OnnxTarget("model.onnx", InputSpec(shape=(1, 28, 28), n_classes=10))  # doctest: +SKIP
        >>> t.predict(x)  # doctest: +SKIP
    """

    native_access = Access.SCORES

    def __init__(
        self,
        path_or_bytes: str | os.PathLike[str] | bytes,
        spec: InputSpec,
        *,
        output: ScoreKind = "logits",
        providers: list[str] | None = None,
        batch_size: int = 256,
        query_budget: int | None = None,
        top_k: int | None = None,
        decimals: int | None = None,
        access: Access | None = None,
    ) -> None:
        super().__init__(
            spec, access=access, output=output, batch_size=batch_size, query_budget=query_budget,
            top_k=top_k, decimals=decimals,
        )
        ort = _import_ort()
        norm = spec.norm_tensors()
        self._norm: tuple[torch.Tensor, torch.Tensor] | None = None if norm is None else (norm[0], 1.0 / norm[1])
        if isinstance(path_or_bytes, (bytes, bytearray)):
            self.source = f"<{len(path_or_bytes)} bytes of ONNX>"
            model: str | bytes = bytes(path_or_bytes)
        elif isinstance(path_or_bytes, (str, os.PathLike)):
            path = Path(path_or_bytes)
            if not path.is_file():
                raise ModelLoadError(f"no such file: {str(path)!r}; give the path of an existing .onnx model.")
            self.source = str(path)
            model = str(path)
        else:
            raise ParameterError(
                f"OnnxTarget needs a path to a .onnx file or the model bytes; got {type(path_or_bytes).__name__}."
            )
        available = list(ort.get_available_providers())
        self.providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        missing = [p for p in self.providers if p not in available]
        if missing or not self.providers:
            raise ParameterError(
                f"onnxruntime providers {missing or self.providers} are not available here; available: {available}."
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: onnxruntime's warnings go to stderr, not to warnings
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
            raise ModelLoadError(
                f"{self.source} is not a valid ONNX model (truncated, corrupted, or another format): "
                f"{_first_line(exc)}. Re-export it, e.g. with torch.onnx.export."
            ) from exc
        self._bind_io()
        self._check_output()

    # ------------------------------------------------------------------ set-up checks
    def _bind_io(self) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(
                f"{self.source} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); OnnxTarget takes "
                "a model with exactly one input (the batch of examples)."
            )
        inp = inputs[0]
        if inp.type not in _INPUT_DTYPES:
            raise ModelLoadError(
                f"{self.source} takes {inp.type} input; OnnxTarget feeds float tensors "
                f"({', '.join(sorted(_INPUT_DTYPES))})."
            )
        self.input_name: str = inp.name
        self._np_dtype = _INPUT_DTYPES[inp.type]
        want = (None, *self.spec.shape)
        model_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in (inp.shape or []))
        shown = tuple(d if isinstance(d, int) and d > 0 else (d or "?") for d in (inp.shape or []))
        if len(model_shape) != len(want) or any(
            m is not None and m != w for m, w in zip(model_shape[1:], want[1:], strict=True)
        ):
            raise InputSpecError(
                f"{self.source} takes inputs of shape {shown} but the spec declares (N, "
                f"{', '.join(map(str, self.spec.shape))}). Fix InputSpec.shape/layout to match the model (e.g. "
                f"shape={tuple(d if isinstance(d, int) else 1 for d in shown[1:])}) or re-export the model."
            )
        self._fixed_batch: int | None = model_shape[0]
        outputs = [o for o in self.session.get_outputs() if o.type in _FLOAT_OUTPUTS]
        if not outputs:
            raise ModelLoadError(
                f"{self.source} has no float tensor output (outputs: "
                f"{', '.join(f'{o.name}: {o.type}' for o in self.session.get_outputs())}); OnnxTarget needs "
                "class scores of shape (N, n_classes). For skl2onnx models, convert with options={'zipmap': False}."
            )
        self.output_name: str = outputs[0].name

    def _check_output(self) -> None:
        lo, hi = self.spec.bounds_tensors()
        probe = ((lo + hi) / 2).expand(1, *self.spec.shape)
        try:
            out = self._run(probe)
        except Exception as exc:
            raise InputSpecError(
                f"{self.source} fails on an input of the declared shape (1, {', '.join(map(str, self.spec.shape))}): "
                f"{_first_line(exc)}. Check InputSpec.shape and layout."
            ) from exc
        if tuple(out.shape) != (1, self.spec.n_classes):
            raise InputSpecError(
                f"{self.source} returns {tuple(out.shape)} for one example; the spec declares {self.spec.n_classes} "
                f"classes, so (1, {self.spec.n_classes}) was expected. Fix InputSpec.n_classes."
            )

    # ------------------------------------------------------------------ inference
    def _prepare(self, x: torch.Tensor) -> np.ndarray:
        x = x.detach().to("cpu", torch.float32)
        if self._norm is not None:
            mean, inv_std = self._norm
            x = (x - mean) * inv_std
        return np.ascontiguousarray(x.numpy(), dtype=self._np_dtype)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        arr = self._prepare(x)
        n, fixed = arr.shape[0], self._fixed_batch
        if fixed is None or fixed == n:
            chunks = [arr]
        else:  # a model exported with a fixed batch size: feed exactly that many, padding the last chunk
            chunks = []
            for s in range(0, n, fixed):
                c = arr[s : s + fixed]
                if c.shape[0] < fixed:
                    c = np.concatenate([c, np.repeat(c[-1:], fixed - c.shape[0], axis=0)])
                chunks.append(c)
        outs = [np.asarray(self.session.run([self.output_name], {self.input_name: c})[0]) for c in chunks]
        out = np.concatenate(outs)[:n] if len(outs) > 1 else outs[0][:n]
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["model"] = self.source
        d["providers"] = list(self.providers)
        d["input"] = self.input_name
        return d
