"""An audit in per-feature budget units (``system.units``): the model and the audit rows seen in those units.

With ``units: range`` every evasion budget of the threat model is a fraction of each feature's range, so
``eps: 0.03`` moves every feature by at most 3 % of its range (see :mod:`sparring.targets.units`); ``std`` and a
scale file work alike. The target, the attacker's view and the audit rows are mapped once, here, so every check
(evasion, masking sanity checks, the black-box retry, bound propagation, extraction) runs unchanged in those units
and every report states its budgets in them.

Checks that read raw data of their own (membership inference, poisoning scans, layered defences) or raw feature
constraints (the constrained tabular attacks, whose budgets are already fractions of each feature's range) are
refused with a :class:`~sparring.errors.ThreatModelError` that names the key to drop: audit them in a second threat
model with ``units: raw``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sparring.errors import ThreatModelError

if TYPE_CHECKING:
    from sparring.audit.threat import ThreatModel
    from sparring.targets.base import Target

__all__ = ["system_in_units"]


def system_in_units(tm: ThreatModel, target: Target, attacker: Target, x: torch.Tensor, y: torch.Tensor
                    ) -> tuple[Target, Target, torch.Tensor, torch.Tensor]:
    """``(target, attacker, x, y)`` in ``tm.system.units`` (unchanged for ``raw``)."""
    from sparring.targets.units import FeatureScale, in_units

    units = tm.system.units
    if units == "raw":
        return target, attacker, x, y
    raw_only = [key for key, on in (("system.constraints", tm.system.constraints is not None),
                                    ("assets.training_data_privacy", tm.assets.training_data_privacy),
                                    ("attacker.poisoning_share", tm.attacker.poisoning_share is not None),
                                    ("defence", tm.defence is not None)) if on]
    if raw_only:
        raise ThreatModelError(
            f"system.units {units!r} applies to evasion budgets; {', '.join(raw_only)} work on raw features (their "
            "own data or constraints). Drop them here and audit them in a second threat model with units: raw "
            "(constrained tabular budgets are already fractions of each feature's range)."
        )
    scale = FeatureScale.resolve(units, target.spec, x)
    assert scale is not None
    seen = in_units(target, scale)
    view = seen if attacker is target else in_units(attacker, scale)
    return seen, view, scale.to_units(x), y

