"""Every error sparring raises on purpose, in one tree.

Each class also subclasses the built-in exception a Python user would expect, so ``except ValueError`` keeps
working. Messages name the value seen, the value expected, and what to do about it.

::

    SparringError
     ├── InputSpecError (ValueError)         data or spec do not match: shape, dtype, NaN, bounds, empty batch
     │    └── LabelError                      labels outside 0..n_classes-1, wrong length
     ├── ParameterError (ValueError)          an attack/defence parameter is invalid (eps < 0, steps = 0, ...)
     │    ├── ModelGraphError                 bound propagation cannot read or reproduce a model's computation
     │    └── GuardConfigError                a guard service configuration (guard.yaml) is missing or invalid
     ├── AccessError (PermissionError)        the target cannot give what the attack needs (gradients, scores)
     ├── QueryBudgetExceeded (RuntimeError)   a black-box target's query budget would be exceeded
     ├── ModelLoadError (OSError)             a model file is missing, corrupted, of the wrong kind, or untrusted
     │    └── OnnxConversionError             an ONNX graph has operators the torch conversion lacks, or the
     │                                        converted model's outputs differ from onnxruntime's
     ├── DataLoadError (OSError)              a data file or dataset is missing or malformed
     ├── EndpointError (ConnectionError)      a remote prediction API is unreachable, slow, or answers nonsense
     ├── StoreError (OSError)                 a database (guard events, audit history) cannot be opened or used
     ├── ThreatModelError (ValueError)        an audit's threat model file is missing, not YAML, or invalid
     ├── CheckpointError (RuntimeError)       an audit's checkpoints do not belong to the run being resumed
     ├── BaselineError (ValueError)           an audit's --baseline report is missing or not a sparring report
     └── WorkerLostError (RuntimeError)       a worker (process or Ray node) died under a task more times than allowed
"""

from __future__ import annotations

__all__ = [
    "AccessError",
    "BaselineError",
    "CheckpointError",
    "DataLoadError",
    "EndpointError",
    "GuardConfigError",
    "InputSpecError",
    "LabelError",
    "ModelGraphError",
    "ModelLoadError",
    "OnnxConversionError",
    "ParameterError",
    "QueryBudgetExceeded",
    "SparringError",
    "StoreError",
    "ThreatModelError",
    "WorkerLostError",
]


class SparringError(Exception):
    """Base class of every error sparring raises on purpose."""


class InputSpecError(SparringError, ValueError):
    """Inputs do not match the target's :class:`~sparring.targets.InputSpec` (or the spec itself is invalid)."""


class LabelError(InputSpecError):
    """Labels are out of range, of the wrong length, or not integers."""


class ParameterError(SparringError, ValueError):
    """A parameter of an attack, defence or target is invalid."""


class ModelGraphError(ParameterError):
    """Bound propagation cannot follow a model: an operation it does not support (named with its position in the
    traced graph), a model that cannot be traced, or a parsed network whose outputs differ from the model's."""


class GuardConfigError(ParameterError):
    """A guard service configuration (``guard.yaml``) is missing, not YAML, or has a key or value not allowed."""


class AccessError(SparringError, PermissionError):
    """The target does not give the access an attack needs (e.g. gradients from a scores-only API)."""


class QueryBudgetExceeded(SparringError, RuntimeError):
    """Sending the next batch would exceed the target's query budget. Nothing was sent.

    ``used`` and ``budget`` hold the counts; ``requested`` the size of the refused batch.
    """

    def __init__(self, message: str, *, used: int, budget: int, requested: int) -> None:
        super().__init__(message)
        self.used = used
        self.budget = budget
        self.requested = requested


class ModelLoadError(SparringError, OSError):
    """A model could not be loaded: missing, corrupted, truncated, of an unknown kind, or untrusted."""


class OnnxConversionError(ModelLoadError):
    """An ONNX model cannot be run as torch for gradients: its graph uses operators (or attributes) the conversion
    does not support, named in the message, or the converted model's outputs differ from onnxruntime's by more than
    the tolerance (``max_abs_diff`` holds the difference seen; ``None`` for an unsupported operator)."""

    def __init__(self, message: str, *, max_abs_diff: float | None = None, ops: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.max_abs_diff = max_abs_diff
        self.ops = ops


class DataLoadError(SparringError, OSError):
    """A dataset could not be loaded: missing, malformed, or not installed."""


class EndpointError(SparringError, ConnectionError):
    """A remote prediction endpoint is unreachable, timed out, or answered something unusable."""


class StoreError(SparringError, OSError):
    """A database sparring keeps (the guard's event store, the audit history) cannot be opened, written or read
    (locked, unreachable, not intact, bad URL)."""


class ThreatModelError(SparringError, ValueError):
    """A threat model (audit spec) is missing, not valid YAML, or has a key or value that is not allowed."""


class CheckpointError(SparringError, RuntimeError):
    """Checkpoints found in an audit's output folder belong to a different threat model (or are unreadable)."""


class BaselineError(SparringError, ValueError):
    """The earlier report an audit is compared with (``--baseline``) is missing, not JSON, or not a sparring report."""


class WorkerLostError(SparringError, RuntimeError):
    """A task's worker (a pool process or a Ray worker/node) died under it more times than the executor retries."""
