"""Models under test: one input spec, one access level, one query counter, whatever the model kind."""

from sparring.targets.base import QueryCounter, Target
from sparring.targets.http import HttpTarget
from sparring.targets.load import load_spec, load_target
from sparring.targets.onnx import OnnxTarget
from sparring.targets.sklearn import SklearnTarget
from sparring.targets.spec import Access, InputSpec
from sparring.targets.torch import TorchTarget

__all__ = [
    "Access",
    "HttpTarget",
    "InputSpec",
    "OnnxTarget",
    "QueryCounter",
    "SklearnTarget",
    "Target",
    "TorchTarget",
    "load_spec",
    "load_target",
]
