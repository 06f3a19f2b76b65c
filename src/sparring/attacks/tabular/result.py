"""The result of a constrained tabular attack, and the one runner every tabular attack goes through.

The runner validates the data, runs the attack, then checks every returned row with
:meth:`~sparring.targets.constraints.FeatureConstraints.check` — a checker separate from the attack. In constrained
mode a row that breaks any constraint is reverted to the clean input and counts as a failure, so every returned
adversarial example is feasible by verification, not by assumption. In unconstrained mode (the baseline that shows
"fantasy" vulnerabilities) the rows are kept and their violations reported.

Query budget: when the target's budget runs out (:class:`~sparring.errors.QueryBudgetExceeded`), the result is
partial, never an exception: rows the attack had not finished with and had not broken are ``unknown`` (never
robust; :attr:`~sparring.attacks.result.EvasionResult.unknown`), ``extras["budget_exhausted"]`` is True. An attack
reports what it established in ``notes``: ``"budget_exhausted"``, ``"finished"`` (per row) and ``"adv_pred"`` (the
label the model gave each returned row when it was queried, -1 where none), which stand in for the final label
query when the budget leaves none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparring.attacks.result import Cost, EvasionResult, _np
from sparring.errors import InputSpecError, QueryBudgetExceeded
from sparring.targets.base import Target
from sparring.targets.constraints import FeatureConstraints

__all__ = ["ConstrainedResult", "run_tabular"]

AttackFn = Callable[[torch.Tensor, torch.Tensor, dict[str, Any]], torch.Tensor]
"""``(x0, y, notes) -> x_adv`` on the target's device; ``notes`` collects counts (``gradients``) and facts."""


@dataclass
class ConstrainedResult(EvasionResult):
    """An :class:`EvasionResult` whose ``norms`` are constraint-aware costs (``norm == "cost"``).

    Attributes:
        costs: per example, the cost ``sum_j cost_j |x_adv_j - x_j|`` under the constraints (0 where unchanged).
        feasible: per example, True where ``x_adv`` satisfies every constraint (checked after the attack).
        violations: rows violating each rule (empty for a constrained attack: violating rows were reverted).
        constrained: False for the unconstrained baseline, whose successes may be infeasible.
    """

    costs: Any = None
    feasible: Any = None
    violations: dict[str, int] = field(default_factory=dict)
    constrained: bool = True

    @property
    def feasible_success(self) -> Any:
        """Per example: the attack succeeded *and* the example is feasible."""
        return _np(self.success) & _np(self.feasible)

    @property
    def median_cost(self) -> float | None:
        """Median cost over the examples evaded with a change (clean-correct, feasible successes)."""
        mask = self.feasible_success & _np(self.clean_correct)
        return float(np.median(_np(self.costs)[mask])) if mask.any() else None

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        cc = _np(self.clean_correct)
        s.update(
            constrained=self.constrained,
            feasible_rate=float(_np(self.feasible).mean()),
            feasible_success_rate=float(self.feasible_success[cc].mean()) if cc.any() else 0.0,
            median_cost=self.median_cost,
            violations=dict(self.violations),
        )
        return s


def run_tabular(
    name: str, params: dict[str, Any], target: Target, constraints: FeatureConstraints, x: Any, y: Any,
    attack: AttackFn, *, constrained: bool = True,
) -> ConstrainedResult:
    """Validate, attack, check every row against ``constraints``; see the module docstring."""
    if not isinstance(constraints, FeatureConstraints):
        raise InputSpecError(f"constraints must be a FeatureConstraints; got {type(constraints).__name__}. Build one "
                             "with FeatureConstraints.from_dict(...) or FeatureConstraints.load(path).")
    xt, yt = target.spec.validate(x, y)
    assert yt is not None
    if target.spec.n_features != constraints.n_features or xt.ndim != 2:
        raise InputSpecError(
            f"the target takes {target.spec.n_features} features of shape {target.spec.shape} but the constraints "
            f"declare {constraints.n_features} flat features; declare one constraint entry per column."
        )
    dev = target.device
    x0, y0 = xt.to(dev, torch.float32), yt.to(dev)
    clean_check = constraints.check(x0, x0)
    if not bool(clean_check.ok.all()):
        bad = int((~clean_check.ok).nonzero()[0, 0])
        raise InputSpecError(
            f"{int((~clean_check.ok).sum())} clean row(s) already break the constraints (row {bad}: "
            f"{', '.join(clean_check.describe(bad))}); fix the data or the constraints before attacking."
        )
    q0, t0 = target.counter.used, time.perf_counter()
    notes: dict[str, Any] = {"gradients": 0}
    n = x0.shape[0]
    finished: torch.Tensor
    try:
        clean_pred = target.query_labels(x0).to(dev)
    except QueryBudgetExceeded:  # not even the clean predictions: nothing is known about any row
        clean_pred, notes["budget_exhausted"], notes["unattacked"] = y0.clone(), True, n
        x_adv = x0.clone()
        finished = torch.zeros(n, dtype=torch.bool, device=dev)
    else:
        try:
            x_adv = attack(x0, y0, notes).to(dev, torch.float32)
        except QueryBudgetExceeded:  # an attack that keeps no partial state: every row unfinished
            notes["budget_exhausted"], x_adv = True, x0.clone()
            notes.pop("finished", None), notes.pop("adv_pred", None)
        done = notes.pop("finished", None)
        exhausted = bool(notes.get("budget_exhausted", False))
        finished = (torch.full((n,), not exhausted, device=dev) if done is None else done.to(dev)).bool()
    seen = notes.pop("adv_pred", None)
    viol = constraints.check(x0, x_adv)
    feasible = viol.ok.to(dev)
    if constrained:  # verified, not assumed: an infeasible row goes back to the clean input and fails
        notes["reverted_infeasible"] = int((~feasible).sum())
        x_adv = torch.where(feasible[:, None], x_adv, x0)
        feasible = torch.ones_like(feasible)
    changed = (x_adv != x0).any(dim=1)
    adv_pred = clean_pred.clone()  # an unchanged row keeps its clean prediction (no second query)
    try:
        if bool(changed.any()):
            adv_pred[changed] = target.query_labels(x_adv[changed]).to(dev)
    except QueryBudgetExceeded:  # no queries left to verify: use the labels the attack's own queries saw
        notes["budget_exhausted"] = True
        known = changed & (seen.to(dev) >= 0) if seen is not None else torch.zeros_like(changed)
        if seen is not None:
            adv_pred[known] = seen.to(dev)[known]
        lost = changed & ~known  # never seen by the model where it stands: back to the clean row, unfinished
        x_adv = torch.where(lost[:, None], x0, x_adv)
        finished = finished & ~lost
        if not constrained:
            viol = constraints.check(x0, x_adv)
            feasible = viol.ok.to(dev)
    success = adv_pred != y0
    unknown = ~finished & ~success  # not finished and not broken: neither robust nor evaded
    costs = constraints.cost(x0, x_adv)
    cost = Cost(queries=target.counter.used - q0, gradients=int(notes.pop("gradients")),
                seconds=time.perf_counter() - t0)

    def out(v: torch.Tensor) -> Any:
        return v.detach().cpu().numpy() if isinstance(x, np.ndarray) else v.detach().to(
            x.device if isinstance(x, torch.Tensor) else "cpu")

    return ConstrainedResult(
        attack=name, params=params, cost=cost, x_adv=out(x_adv), y=out(y0), success=out(success),
        clean_correct=out(clean_pred == y0), adv_pred=out(adv_pred), norms=out(costs), norm="cost",
        extras=notes, costs=out(costs), feasible=out(feasible),
        violations={} if constrained else viol.by_rule(), constrained=constrained, unknown=out(unknown),
    )
