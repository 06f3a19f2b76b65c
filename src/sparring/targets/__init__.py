"""Models under test: one input spec, one access level, one query counter, whatever the model kind."""

from sparring.targets.base import QueryCounter, Target
from sparring.targets.constraints import Derived, Feature, FeatureConstraints, LinearInequality, OneHotGroup, Violations
from sparring.targets.http import HttpTarget
from sparring.targets.load import load_spec, load_target
from sparring.targets.onnx import OnnxTarget
from sparring.targets.onnx_torch import OnnxTorchTarget
from sparring.targets.sklearn import SklearnTarget
from sparring.targets.spec import Access, InputSpec
from sparring.targets.text import (
    CallableTextTarget,
    HttpTextTarget,
    SklearnTextTarget,
    TextTarget,
    TorchTextTarget,
)
from sparring.targets.text_load import load_text_target
from sparring.targets.torch import TorchTarget
from sparring.targets.units import FeatureScale, in_units

__all__ = [
    "Access",
    "CallableTextTarget",
    "Derived",
    "Feature",
    "FeatureConstraints",
    "FeatureScale",
    "HttpTarget",
    "HttpTextTarget",
    "InputSpec",
    "LinearInequality",
    "OneHotGroup",
    "OnnxTarget",
    "OnnxTorchTarget",
    "QueryCounter",
    "SklearnTarget",
    "SklearnTextTarget",
    "Target",
    "TextTarget",
    "TorchTarget",
    "TorchTextTarget",
    "Violations",
    "in_units",
    "load_spec",
    "load_target",
    "load_text_target",
]
