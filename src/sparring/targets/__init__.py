"""Models under test: one input spec, one access level, one query counter, whatever the model kind."""

from sparring.targets.base import QueryCounter, Target
from sparring.targets.http import HttpTarget
from sparring.targets.sklearn import SklearnTarget
from sparring.targets.spec import Access, InputSpec
from sparring.targets.torch import TorchTarget

__all__ = ["Access", "HttpTarget", "InputSpec", "QueryCounter", "SklearnTarget", "Target", "TorchTarget"]
