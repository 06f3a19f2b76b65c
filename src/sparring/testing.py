"""Robustness checks inside a project's own test suite.

::

    from sparring.testing import assert_robust

    def test_model_is_robust():
        assert_robust("model.pt2", (x_test, y_test), spec="spec.json", attack="pgd", eps=0.05, min_accuracy=0.6)

Enable the ``robustness`` marker (to select or skip these tests: ``pytest -m robustness``) by adding
``pytest_plugins = ["sparring.testing"]`` to a ``conftest.py``, or running ``pytest -p sparring.testing``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from sparring._util import as_xy
from sparring.attacks.base import EvasionAttack, get_attack
from sparring.attacks.result import EvasionResult
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import InputSpec

__all__ = ["assert_robust", "pytest_configure"]


def _target(model: Any, spec: InputSpec | str | None) -> Target:
    if isinstance(model, Target):
        return model
    if isinstance(model, torch.nn.Module):
        from sparring.targets.load import load_spec
        from sparring.targets.torch import TorchTarget

        if spec is None:
            raise ParameterError("an nn.Module needs spec= (an InputSpec or a spec JSON path) to be tested.")
        return TorchTarget(model, spec if isinstance(spec, InputSpec) else load_spec(spec))
    if isinstance(model, str | os.PathLike):
        from sparring.targets.load import load_target

        return load_target(model, spec=spec)
    raise ParameterError(
        f"model must be a Target, an nn.Module, a zoo name or a model file; got {type(model).__name__}."
    )


def assert_robust(
    model: Any,
    data: Any,
    *,
    eps: float,
    min_accuracy: float,
    attack: str | EvasionAttack = "pgd",
    norm: str = "linf",
    n: int | None = None,
    spec: InputSpec | str | None = None,
    **attack_params: Any,
) -> EvasionResult:
    """Fail (``AssertionError``) unless ``model`` keeps at least ``min_accuracy`` accuracy under ``attack`` at ``eps``.

    Args:
        model: a :class:`~sparring.targets.Target`, an ``nn.Module`` (with ``spec``), a zoo name or a model file.
        data: ``(x, y)``, a :class:`~sparring.data.Dataset` (test split) or loaded data with ``x``/``y``.
        eps, norm: the budget, in raw input units.
        min_accuracy: the lowest acceptable robust accuracy (0-1).
        attack: an attack name (``"pgd"``, ``"fgsm"``, ``"square"``, ...) or a configured attack (then ``eps``
            and ``norm`` must match its own).
        n: attack only the first ``n`` examples.
        spec: the input spec, for an ``nn.Module`` or a model file.
        **attack_params: extra parameters for a named attack (``steps=50``, ``restarts=2``, ``seed=1`` ...).

    Returns:
        The :class:`~sparring.attacks.EvasionResult`, for further checks.
    """
    if not 0 <= float(min_accuracy) <= 1:
        raise ParameterError(f"min_accuracy must be in [0, 1]; got {min_accuracy!r}.")
    target = _target(model, spec)
    x, y = as_xy(data, "test", "data")
    if n is not None:
        x, y = x[:n], y[:n]
    if isinstance(attack, EvasionAttack):
        if attack_params:
            raise ParameterError("attack_params apply to a named attack only; configure the attack object instead.")
        atk = attack
        given = getattr(atk, "eps", eps)
        if given is not None and abs(float(given) - float(eps)) > 1e-12:
            raise ParameterError(f"eps={eps} differs from the attack's own eps={given}; make them agree.")
    else:
        cls: Any = get_attack(attack)
        atk = cls(eps=eps, norm=norm, **attack_params)
    result = atk(target, x, y)
    robust = result.robust_accuracy
    if robust < min_accuracy:
        wrong = np.asarray(torch.as_tensor(result.adv_pred).cpu() != torch.as_tensor(result.y).cpu())
        raise AssertionError(
            f"robust accuracy {robust:.4f} < required {min_accuracy:.4f} under {atk!r} on {result.n} examples "
            f"(clean accuracy {result.clean_accuracy:.4f}; {int(wrong.sum())} examples misclassified under attack, "
            f"first: {np.flatnonzero(wrong)[:10].tolist()})."
        )
    return result


def pytest_configure(config: Any) -> None:
    """pytest plugin hook: register the ``robustness`` marker."""
    config.addinivalue_line("markers", "robustness: adversarial-robustness checks (sparring.testing.assert_robust)")
