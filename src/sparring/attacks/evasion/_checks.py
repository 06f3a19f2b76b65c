"""Parameter checks shared by the evasion attacks."""

from __future__ import annotations

import math

from sparring.attacks.norms import Norm
from sparring.errors import ParameterError
from sparring.targets.spec import InputSpec


def check_eps_value(eps: object) -> float:
    """``eps`` as a float when it is a finite number >= 0 (no input range to compare it with)."""
    try:
        e = float(eps)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ParameterError(f"eps must be a number; got {eps!r}.") from None
    if not math.isfinite(e) or e < 0:
        raise ParameterError(f"eps must be a finite number >= 0; got {eps!r}.")
    return e


def check_eps(eps: float, norm: Norm, spec: InputSpec) -> float:
    """``eps`` must be a finite number in ``[0, largest meaningful budget]`` for the norm and the input range."""
    e = check_eps_value(eps)
    width = spec.range_width
    limit = width if norm is Norm.LINF else width * math.sqrt(spec.n_features)
    if e > limit:
        raise ParameterError(
            f"eps={e:g} exceeds the whole input range for the {norm.value} norm (at most {limit:g} for bounds of "
            f"width {width:g}); budgets are in raw input space — e.g. 8/255 for 0-1 pixels, not 8."
        )
    return e


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{name} must be a positive integer; got {value!r}.")
    return value


def check_fraction(value: object, name: str) -> float:
    """A fraction of eps in (0, 1] (step sizes and search radii of the black-box attacks)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < float(value) <= 1:
        raise ParameterError(f"{name} (a fraction of eps) must be in (0, 1]; got {value!r}.")
    return float(value)
