"""ONNX models as torch modules, so gradient attacks, BPDA and bound propagation run on them.

:func:`onnx_to_torch` walks the ONNX graph once, in its (topological) node order, and turns every node into a torch
module (:mod:`sparring.targets.onnx_ops`): weights become the parameters of real ``nn.Conv2d``/``nn.Linear``/
``nn.BatchNorm2d`` layers, everything computable from constants alone (shape arithmetic, ``Constant`` nodes) is
folded at conversion, and the rest runs as plain torch calls. Operators outside :data:`SUPPORTED_OPS` are named, all
at once, in an :class:`~sparring.errors.OnnxConversionError`.

:class:`OnnxTorchTarget` is the white-box target built on it. It keeps the onnxruntime session
(:class:`~sparring.targets.OnnxTarget`, the reference for what the deployed model answers) and refuses to exist
unless the converted module reproduces onnxruntime's outputs, first on probe inputs drawn in the spec's bounds, then
on whatever :meth:`OnnxTorchTarget.check_agreement` is given (the attack data, the adversarial examples). The largest
difference seen is kept in :meth:`OnnxTorchTarget.describe`.

>>> from sparring.targets.load import load_target
>>> target = load_target("model.onnx", spec="spec.json", white_box=True)   # doctest: +SKIP
>>> target.check_agreement(x_test)                                          # doctest: +SKIP
3.1e-06
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparring.errors import ModelLoadError, OnnxConversionError, ParameterError
from sparring.targets.base import ScoreKind
from sparring.targets.onnx import OnnxTarget
from sparring.targets.onnx_ops import CONVERTERS, SUPPORTED_OPS, Converted, Node, Value
from sparring.targets.spec import Access, InputSpec
from sparring.targets.torch import Forward, TorchTarget

__all__ = ["SUPPORTED_OPS", "OnnxModule", "OnnxTorchTarget", "onnx_to_torch"]

_FLOAT_TYPES = {1: torch.float32, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


class OnnxModule(nn.Module):
    """A converted ONNX graph: ``forward(x)`` runs the node modules in graph order on a dict of named values.

    Attributes:
        input_name, output_name: the ONNX graph's input and the (first floating-point) output it returns.
        steps: the node modules, one per ONNX node that depends on the input, in graph order, keyed by the node's name
            (characters other than letters, digits and ``_`` replaced by ``_``); ``names`` holds the names as given.
    """

    def __init__(self, input_name: str, output_name: str,
                 steps: list[tuple[str, nn.Module, tuple[str, ...], tuple[str, ...]]]) -> None:
        super().__init__()
        self.input_name, self.output_name = input_name, output_name
        self.steps = nn.ModuleDict()  # keyed by the ONNX node names (made attribute-safe), so BPDA notes name them
        for name, module, _, _ in steps:
            key = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_") or "node"
            while key in self.steps:
                key += "_"
            self.steps[key] = module
        self.names = [n for n, _, _, _ in steps]
        self._wires = [(ins, outs) for _, _, ins, outs in steps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {self.input_name: x}
        for step, (ins, outs) in zip(self.steps.values(), self._wires, strict=True):
            res = step(*[env[i] for i in ins])
            if len(outs) == 1:
                env[outs[0]] = res
            else:
                for name, r in zip(outs, res, strict=True):
                    env[name] = r
        return env[self.output_name]  # type: ignore[no-any-return]


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - onnx is installed in the dev environment
        raise ModelLoadError("converting ONNX models needs the onnx package: pip install 'sparring[onnx]'.") from exc
    return onnx


def _read(source: str | os.PathLike[str] | bytes | Any) -> tuple[Any, str]:
    onnx = _import_onnx()
    if isinstance(source, onnx.ModelProto):
        return source, "<ONNX ModelProto>"
    try:
        if isinstance(source, bytes | bytearray):
            return onnx.load_model_from_string(bytes(source)), f"<{len(source)} bytes of ONNX>"
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            if not path.is_file():
                raise ModelLoadError(f"no such file: {str(path)!r}; give the path of an existing .onnx model.")
            return onnx.load_model(str(path)), str(path)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{source!r} could not be read as an ONNX model: {exc}. Re-export it.") from exc
    raise ParameterError(f"onnx_to_torch needs a .onnx path, the model bytes or an onnx.ModelProto; got "
                         f"{type(source).__name__}.")


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper, numpy_helper

    out: dict[str, Any] = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [b.decode("utf-8") for b in v]
        elif hasattr(v, "dims") and hasattr(v, "data_type"):  # a TensorProto
            v = _tensor(numpy_helper.to_array(v))
        out[a.name] = v
    return out


def _tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr, copy=True))


def _ranks(model: Any) -> dict[str, int]:
    """The rank of every value ONNX shape inference can tell (an empty map when it fails)."""
    onnx = _import_onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    out: dict[str, int] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = len(t.shape.dim)
    return out


def _opset(model: Any) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def _check_supported(graph: Any) -> None:
    seen: dict[str, list[str]] = {}
    for i, n in enumerate(graph.node):
        if n.domain not in ("", "ai.onnx") or n.op_type not in SUPPORTED_OPS:
            op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
            seen.setdefault(op, []).append(n.name or f"#{i}")
    if seen:
        listed = "; ".join(f"{op} (node {names[0]!r}" + (f" and {len(names) - 1} more)" if len(names) > 1 else ")")
                           for op, names in sorted(seen.items()))
        raise OnnxConversionError(
            f"the ONNX graph uses operators the torch conversion does not support: {listed}. Supported: "
            f"{', '.join(SUPPORTED_OPS)}. Run score-based attacks (square, hopskipjump) on the onnxruntime target "
            "instead (white_box=False), or re-export the model without these operators.",
            ops=tuple(sorted(seen)),
        )


def _folded(res: Any) -> torch.Tensor:
    if isinstance(res, torch.Tensor):
        return res
    return torch.tensor(res, dtype=torch.int64)


def onnx_to_torch(source: str | os.PathLike[str] | bytes | Any) -> OnnxModule:
    """Convert an ONNX classifier (one input, a floating-point output) to a torch module computing the same.

    Args:
        source: a ``.onnx`` path, the serialized bytes, or an ``onnx.ModelProto``.

    Returns:
        An :class:`OnnxModule` in eval mode on the CPU, whose parameters are the model's weights.

    Raises:
        OnnxConversionError: operators outside :data:`SUPPORTED_OPS` (all named, with a node of each), or a node
            whose attributes the conversion does not support (named with the node).
        ModelLoadError: the file is missing or is not an ONNX model, or the graph has no single input or no float
            output.
    """
    model, shown = _read(source)
    g = model.graph
    _check_supported(g)
    from onnx import numpy_helper

    opset, ranks = _opset(model), _ranks(model)
    values: dict[str, Value] = {i.name: Value("const", _tensor(numpy_helper.to_array(i))) for i in g.initializer}
    inputs = [i for i in g.input if i.name not in values]
    if len(inputs) != 1:
        raise ModelLoadError(f"{shown} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); the torch "
                             "conversion takes a model with exactly one input (the batch of examples).")
    values[inputs[0].name] = Value("tensor", rank=ranks.get(inputs[0].name))
    wire: dict[str, str] = {inputs[0].name: inputs[0].name}  # value name -> the env key holding it (aliases)
    steps: list[tuple[str, nn.Module, tuple[str, ...], tuple[str, ...]]] = []
    for index, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{index}"
        attrs = _attrs(n)
        ins = [values[i] if i else None for i in n.input]
        outs = list(n.output)
        if n.op_type == "Constant":
            values[outs[0]] = Value("const", _constant(attrs, name))
            continue
        if n.op_type in ("Identity", "Dropout"):
            if n.op_type == "Dropout" and ((len(outs) > 1 and outs[1]) or (len(n.input) > 2 and n.input[2])):
                raise Node(n.op_type, name, attrs, ins, len(outs), opset).fail("Dropout's mask output and "
                                                                               "training_mode are not supported")
            src = values[n.input[0]]
            values[outs[0]] = src
            if src.kind != "const":
                wire[outs[0]] = wire[n.input[0]]
            continue
        node = Node(n.op_type, name, attrs, ins, len([o for o in outs if o]), opset)
        conv: Converted = CONVERTERS[n.op_type](node)
        dynamic = [i for i, v in zip(n.input, ins, strict=True) if v is not None and v.kind != "const"]
        if not dynamic:  # everything is known: fold now
            res = conv.module()
            results = [res] if len(outs) == 1 else list(res)
            for o, r in zip(outs, results, strict=False):
                if o:
                    values[o] = Value("const", _folded(r))
            continue
        steps.append((name, conv.module, tuple(wire[i] for i in dynamic), tuple(outs[: len(conv.kinds)])))
        for o, kind in zip(outs, conv.kinds, strict=False):
            if o:
                values[o] = Value(kind, rank=ranks.get(o))
                wire[o] = o
    floats = [o for o in g.output if o.type.tensor_type.elem_type in _FLOAT_TYPES]
    if not floats:
        raise ModelLoadError(f"{shown} has no floating-point output; the conversion needs class scores (N, n_classes).")
    out = floats[0].name
    if values[out].kind != "tensor":
        raise ModelLoadError(f"{shown}: output {out!r} does not depend on the input; nothing to attack.")
    return OnnxModule(inputs[0].name, wire[out], steps).eval()


def _constant(attrs: dict[str, Any], name: str) -> torch.Tensor:
    if "value" in attrs:
        return attrs["value"]  # type: ignore[no-any-return]
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32), ("value_int", torch.int64),
                       ("value_ints", torch.int64)):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    raise OnnxConversionError(f"ONNX Constant node {name!r} holds {sorted(attrs)}; only tensors, floats and ints are "
                              "supported.", ops=("Constant",))


class OnnxTorchTarget(TorchTarget):
    """An ONNX classifier converted to torch (:func:`onnx_to_torch`), with gradient access, checked against
    onnxruntime.

    White-box attacks (FGSM, PGD, APGD, C&W ...), BPDA through defences and bound propagation run on the converted
    module; :attr:`reference` is the model as onnxruntime runs it (an :class:`~sparring.targets.OnnxTarget`). On
    construction the two are compared on ``check_points`` inputs drawn uniformly in the spec's bounds (seeded), and
    :meth:`check_agreement` compares them on any data (call it on the data you attack and on the adversarial
    examples). A graph exported with a fixed batch size is fed batches of exactly that size (the last one padded), as
    onnxruntime is. A difference beyond ``tolerance · max(1, max |onnxruntime output|)`` raises
    :class:`~sparring.errors.OnnxConversionError`; :attr:`max_abs_diff` (also in :meth:`describe`) is the largest
    absolute difference seen so far, over :attr:`checked_points` inputs. Checks are not charged as queries.

    Args:
        path_or_bytes: a ``.onnx`` path or the serialized model.
        spec: the input specification (``mean``/``std`` applied before the model, as for every target).
        tolerance: the largest output difference accepted, relative to ``max(1, |output|)``.
        check_points: probe inputs compared at construction (0 for none).
        seed: seeds the probe inputs.
        device: where the converted module runs.
        providers: onnxruntime execution providers for the reference (default CPU).
        access, output, batch_size, query_budget, top_k, decimals: see :class:`~sparring.targets.Target`.
    """

    def __init__(
        self,
        path_or_bytes: str | os.PathLike[str] | bytes,
        spec: InputSpec,
        *,
        tolerance: float = 1e-4,
        check_points: int = 64,
        seed: int = 0,
        device: str | torch.device = "cpu",
        providers: list[str] | None = None,
        access: Access | None = None,
        output: ScoreKind = "logits",
        batch_size: int = 256,
        query_budget: int | None = None,
        top_k: int | None = None,
        decimals: int | None = None,
    ) -> None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not tolerance >= 0:
            raise ParameterError(f"tolerance must be a non-negative number; got {tolerance!r}.")
        if isinstance(check_points, bool) or not isinstance(check_points, int) or check_points < 0:
            raise ParameterError(f"check_points must be a non-negative integer; got {check_points!r}.")
        self.reference = OnnxTarget(path_or_bytes, spec, output=output, providers=providers, batch_size=batch_size)
        self.fixed_batch: int | None = self.reference._fixed_batch
        module = onnx_to_torch(path_or_bytes)
        super().__init__(module.to(device), spec, access=access, output=output, batch_size=batch_size,
                         query_budget=query_budget, top_k=top_k, decimals=decimals)
        self.source = self.reference.source
        self.tolerance = float(tolerance)
        self.max_abs_diff = 0.0
        self.checked_points = 0
        self.adv_label_agreement: float | None = None
        if check_points:
            lo, hi = spec.bounds_tensors()
            gen = torch.Generator().manual_seed(seed)
            probe = lo + (hi - lo) * torch.rand((check_points, *spec.shape), generator=gen)
            self.check_agreement(probe)

    def _raw_forward(self) -> Forward:
        fwd = super()._raw_forward()
        fixed = self.fixed_batch
        if fixed is None:
            return fwd

        def chunked(x: torch.Tensor) -> torch.Tensor:
            """A graph exported with a fixed batch size (its shapes baked in) sees exactly that many, padded."""
            outs = []
            for s in range(0, x.shape[0], fixed):
                c = x[s : s + fixed]
                n = c.shape[0]
                if n < fixed:
                    c = torch.cat([c, c[-1:].expand(fixed - n, *c.shape[1:])])
                outs.append(fwd(c)[:n])
            return torch.cat(outs)

        return chunked

    def check_agreement(self, x: Any) -> float:
        """Compare the converted module with onnxruntime on ``x`` (raw inputs); return the max absolute difference.

        Raises :class:`~sparring.errors.OnnxConversionError` when it exceeds the tolerance.
        """
        xt, _ = self.spec.validate(x)
        fwd = self._raw_forward()
        worst, scale = 0.0, 1.0
        with torch.no_grad():
            for s in range(0, xt.shape[0], self.batch_size):
                xb = xt[s : s + self.batch_size]
                ours = fwd(xb.to(self.device, self.dtype)).float().cpu()
                ref = self.reference._run(xb)
                worst = max(worst, float((ours - ref).abs().max()))
                scale = max(scale, float(ref.abs().max()))
        self.max_abs_diff = max(self.max_abs_diff, worst)
        self.checked_points += int(xt.shape[0])
        if not worst <= self.tolerance * scale:  # NaN fails too
            raise OnnxConversionError(
                f"the torch conversion of {self.source} differs from onnxruntime by up to {worst:.3g} on "
                f"{xt.shape[0]} inputs (tolerance {self.tolerance:g} x {scale:.3g}); gradients from it would attack "
                "another model. Attack the onnxruntime target with score-based attacks (square, hopskipjump), or "
                "raise the tolerance if the difference is float rounding.", max_abs_diff=worst,
            )
        return worst

    def check_adversarial(self, x_adv: Any, adv_pred: Any) -> float:
        """Check adversarial examples found on the converted module against onnxruntime: their outputs must agree
        (:meth:`check_agreement`), and the share of them that onnxruntime labels as the attack saw them is returned
        (kept in :attr:`adv_label_agreement`). Points an attack left on the decision boundary can flip with float
        rounding; a share below 1 says how many."""
        self.check_agreement(x_adv)
        xt, _ = self.spec.validate(x_adv)
        theirs = self.reference._run(xt).argmax(1)
        ours = torch.as_tensor(np.asarray(adv_pred) if not isinstance(adv_pred, torch.Tensor) else adv_pred)
        share = float((theirs == ours.cpu().long()).float().mean()) if len(ours) else 1.0
        self.adv_label_agreement = share
        return share

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["model"] = self.source
        d["onnx"] = {"converted_to": "torch", "reference": "onnxruntime", "providers": list(self.reference.providers),
                     "max_abs_diff": self.max_abs_diff, "checked_points": self.checked_points,
                     "tolerance": self.tolerance, "adv_label_agreement": self.adv_label_agreement}
        return d
