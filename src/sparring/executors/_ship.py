"""In-memory targets as bytes for worker processes and Ray tasks (``pack_target`` / ``unpack_target``).

A :class:`~sparring.targets.torch.TorchTarget` holds a query counter with a lock (it does not pickle), TorchScript
modules do not pickle, and an :class:`~sparring.targets.http.HttpTarget` holds a live session: each travels as its
settings plus what can travel (the module as ``torch.save`` / ``torch.jit.save`` bytes, the HTTP headers). Used by
the audit runner (an in-memory model under audit) and by sharded randomized-smoothing CERTIFY.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from sparring.errors import ParameterError
from sparring.targets.base import Target

__all__ = ["Shipped", "pack_target", "unpack_target"]


class Shipped:
    """A target packed once on the driver; :meth:`get` unpacks it once per process (workers keep it for every task)."""

    def __init__(self, target: Target) -> None:
        self.blob = pack_target(target)
        self._target: Target | None = target

    def __getstate__(self) -> dict[str, Any]:
        return {"blob": self.blob}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.blob, self._target = state["blob"], None

    def get(self) -> Target:
        if self._target is None:
            self._target = unpack_target(self.blob)
        return self._target


def pack_target(target: Target) -> bytes:
    """An in-memory target as bytes for the workers: a :class:`~sparring.targets.torch.TorchTarget` travels as its
    settings and its module (TorchScript modules do not pickle, so they travel as the bytes of ``torch.jit.save``);
    an :class:`~sparring.targets.http.HttpTarget` as its settings and headers (not its session or a custom test
    transport); any other target must pickle as it is. Each worker gets a fresh query counter."""
    import io
    import pickle

    from sparring.targets.http import HttpTarget
    from sparring.targets.torch import TorchTarget

    if isinstance(target, HttpTarget):  # its settings, not its session: each worker opens its own connections
        http = {"url": target.url, "spec": target.spec, "output": target.answers, "score_kind": target.output,
                "batch_size": target.batch_size, "timeout": target.timeout, "retries": target.retries,
                "backoff": target.backoff, "query_budget": target.counter.budget, "top_k": target.top_k,
                "decimals": target.decimals, "input_key": target.input_key, "output_key": target.output_key,
                "headers": dict(target._client.headers)}
        return pickle.dumps(("http", None, http))
    if not isinstance(target, TorchTarget):
        try:
            return pickle.dumps(("pickle", target, None))
        except Exception as exc:
            raise ParameterError(
                f"the in-memory {type(target).__name__} cannot be pickled for the workers ({type(exc).__name__}: "
                f"{exc}); save the model to a file and name it in system.model, or run with the local executor."
            ) from exc
    settings = {"spec": target.spec, "access": target.access, "output": target.output,
                "batch_size": target.batch_size, "query_budget": target.counter.budget, "top_k": target.top_k,
                "decimals": target.decimals}
    buf = io.BytesIO()
    try:
        if isinstance(target.model, torch.jit.ScriptModule):
            with warnings.catch_warnings():  # torch deprecates TorchScript, but users still audit TorchScript models
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(target.model, buf)
            kind = "jit"
        else:
            torch.save(target.model, buf)
            kind = "module"
        return pickle.dumps((kind, buf.getvalue(), settings))
    except Exception as exc:
        raise ParameterError(
            f"the in-memory {type(target.model).__name__} model cannot be pickled for the workers ({type(exc).__name__}"
            f": {exc}); define its class in an importable module, save it to a file and name it in system.model, "
            "or run with the local executor."
        ) from exc


def unpack_target(blob: bytes) -> Target:
    import io
    import pickle

    from sparring.targets.torch import TorchTarget

    kind, payload, settings = pickle.loads(blob)
    if kind == "pickle":
        return payload  # type: ignore[no-any-return]
    if kind == "http":
        from sparring.targets.http import HttpTarget

        return HttpTarget(**settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = (torch.jit.load(io.BytesIO(payload)) if kind == "jit"  # type: ignore[no-untyped-call]
                 else torch.load(io.BytesIO(payload), weights_only=False))  # our own bytes, from the driver
    return TorchTarget(model, **settings)
