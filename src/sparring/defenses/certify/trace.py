"""Trace a model into a ``torch.fx`` graph for bound propagation: ``torch.fx`` symbolic tracing, ``torch.export``
when Python control flow stops it, ``torch.export`` programs as they are, TorchScript through torch's
TorchScript-to-export converter. Each failure is a :class:`~sparring.errors.ModelGraphError` saying what to do."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import fx, nn

from sparring.errors import ModelGraphError

__all__ = ["first_line", "trace"]

Tensor = torch.Tensor


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """torch.export logs shape specialisations and, when it fails, prints the partial graph to stderr; the
    TorchScript converter warns about unused buffers. All of it is expected here (a failure becomes a typed error),
    so none of it is shown."""
    loggers = [logging.getLogger(n) for n in ("torch._export", "torch.export", "torch.fx", "torch._dynamo",
                                              "torch._subclasses", "torch._functorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _export(model: nn.Module, example: Tensor) -> fx.GraphModule:
    batch = torch.export.Dim("batch")
    with _quiet_torch_export():
        ep = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
    return ep.module()  # type: ignore[return-value]


def trace(model: Any, example: Tensor) -> tuple[fx.Graph, Any, Callable[[Tensor], Tensor]]:
    """``(graph, root holding its modules and parameters, the callable that runs the real model)``."""
    from sparring.targets.load import ExportedModule

    if isinstance(model, torch.export.ExportedProgram):
        gm = model.module()
        return gm.graph, gm, gm
    if isinstance(model, ExportedModule):
        return model.exported.graph, model.exported, model  # type: ignore[return-value]
    if isinstance(model, torch.jit.ScriptModule):
        try:
            from torch._export.converter import TS2EPConverter

            with _quiet_torch_export():
                gm = TS2EPConverter(model, (example,)).convert().module()
        except Exception as exc:
            raise ModelGraphError(
                f"bound propagation could not read this TorchScript module ({type(model).__name__}): torch's "
                f"TorchScript-to-export converter failed: {first_line(exc)}. Export the model instead: "
                "torch.export.save(torch.export.export(model, (x,)), 'model.pt2'), or pass the nn.Module.") from exc
        return gm.graph, gm, model
    if isinstance(model, fx.GraphModule):
        return model.graph, model, model
    if not isinstance(model, nn.Module):
        raise ModelGraphError(f"bound propagation needs a torch.nn.Module, an ExportedProgram or a TorchScript "
                              f"module; got {type(model).__name__}.")
    try:
        tracer = fx.Tracer()
        tracer.record_stack_traces = True
        return tracer.trace(model), model, model
    except Exception as fx_exc:  # e.g. Python control flow on tensors: torch.export follows one path of it
        try:
            gm = _export(model, example)
        except Exception as ex_exc:
            raise ModelGraphError(
                f"bound propagation could not trace {type(model).__name__}: torch.fx said {first_line(fx_exc)}; "
                f"torch.export said {first_line(ex_exc)}. Rewrite forward without data-dependent control flow, or "
                "pass a torch.export program.") from ex_exc
        return gm.graph, gm, model


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
