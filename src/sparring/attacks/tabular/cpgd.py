"""Constrained PGD and constrained adaptive PGD for differentiable tabular models.

After Simonetto, Dyrmishi, Ghamizi, Cordy and Le Traon 2022, "A unified framework for adversarial attack and
defense in constrained feature space" (IJCAI; CPGD), and Simonetto et al. 2024, "Constrained adaptive attack:
effective adversarial attack against deep neural networks for tabular data" (NeurIPS; CAPGD). Threat model:
white-box (gradients), untargeted, an L∞ budget ``eps`` measured as a *fraction of each feature's range*,
intersected with the feasible set of :class:`~sparring.targets.constraints.FeatureConstraints`.

Each step ascends ``CE(f(x), y) - penalty * inequality_excess(x)`` (CPGD's loss with the relation penalty), takes a
signed step scaled per feature by its range, clips to the eps box and projects with
:meth:`FeatureConstraints.project` (immutables reset, directions, bounds, derived features recomputed). Every iterate
is also *repaired* (:meth:`FeatureConstraints.repair`: integer rounding, one-hot argmax) and checked; the cheapest
feasible misclassified repair seen is kept, which is how CPGD handles discrete features. CAPGD replaces the fixed
step by APGD's (Croce and Hein 2020, Algorithm 1) momentum 0.75 and step halving at checkpoints when the loss stops
improving, restarting from the best point. A label-only refinement (:func:`~sparring.attacks.tabular.search.refine`)
then lowers the cost of each evasion.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from sparring.attacks.tabular.result import ConstrainedResult, run_tabular
from sparring.attacks.tabular.search import _Best, _Evaluator, _refine
from sparring.errors import ParameterError, QueryBudgetExceeded
from sparring.targets.base import Target
from sparring.targets.constraints import FeatureConstraints
from sparring.targets.spec import Access

__all__ = ["CAPGD", "CPGD"]


class CPGD:
    """Constrained PGD (see the module docstring).

    Args:
        constraints: the feasible set and per-feature costs.
        eps: L∞ budget as a fraction of each feature's range (``0 < eps <= 1``).
        steps: gradient steps.
        step_size: fraction of the range per step; default ``eps / 4``.
        penalty: weight of the inequality penalty in the loss.
        adaptive: use CAPGD's momentum and step-size schedule.
        refine: lower the cost of each evasion with label queries afterwards.
        constrained: False attacks within the bounds only (:meth:`FeatureConstraints.relaxed`): the unconstrained
            baseline whose rows are checked against the real constraints and reported, not reverted.
        seed: kept for reports (the attack is deterministic).
    """

    name: ClassVar[str] = "cpgd"
    needs: ClassVar[Access] = Access.GRADIENTS

    def __init__(self, *, constraints: FeatureConstraints, eps: float = 0.3, steps: int = 40,
                 step_size: float | None = None, penalty: float = 10.0, adaptive: bool = False, refine: bool = True,
                 constrained: bool = True, seed: int = 0) -> None:
        self.constraints = constraints
        self.eps = eps
        self.steps = steps
        self.step_size = step_size
        self.penalty = penalty
        self.adaptive = adaptive
        self.refine = refine
        self.constrained = constrained
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {"eps": self.eps, "steps": self.steps, "step_size": self.step_size, "penalty": self.penalty,
                "adaptive": self.adaptive, "refine": self.refine, "constrained": self.constrained, "seed": self.seed}

    def _check_params(self) -> None:
        if isinstance(self.eps, bool) or not isinstance(self.eps, int | float) or not 0 < self.eps <= 1:
            raise ParameterError(f"eps is a fraction of each feature's range, in (0, 1]; got {self.eps!r}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ParameterError(f"steps must be a positive integer; got {self.steps!r}.")
        if self.step_size is not None and not 0 < self.step_size <= 1:
            raise ParameterError(f"step_size must be in (0, 1] (a fraction of the range) or None; got "
                                 f"{self.step_size!r}.")
        if not self.penalty >= 0:
            raise ParameterError(f"penalty must be >= 0; got {self.penalty!r}.")

    def __call__(self, target: Target, x: Any, y: Any) -> ConstrainedResult:
        """Attack every row of ``x`` (true labels ``y``); returns a :class:`ConstrainedResult`."""
        self._check_params()
        target.require(self.needs, type(self).__name__)
        c = self.constraints if self.constrained else self.constraints.relaxed()

        def attack(x0: torch.Tensor, y0: torch.Tensor, notes: dict[str, Any]) -> torch.Tensor:
            best = _Best.start(x0)  # filled in place batch by batch: a budget stop keeps what was found
            finished = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
            try:
                for s in range(0, x0.shape[0], target.batch_size):
                    rows = slice(s, s + target.batch_size)
                    xb, yb, b = x0[rows], y0[rows], best.rows(rows)
                    self._run(target, c, xb, yb, notes, into=b)
                    if self.refine:
                        _refine(_Evaluator(target, c, xb, yb, use_scores=False), c, xb, b, b.pred >= 0)
                    finished[rows] = True
            except QueryBudgetExceeded:
                notes["budget_exhausted"] = True
            notes["finished"], notes["adv_pred"] = finished, best.pred
            return best.x

        return run_tabular(self.name, self.get_params(), target, self.constraints, x, y, attack,
                           constrained=self.constrained)

    def _run(self, target: Any, c: FeatureConstraints, x0: torch.Tensor, y: torch.Tensor,
             notes: dict[str, Any], max_loss: bool = False, into: _Best | None = None) -> torch.Tensor:
        """The cheapest feasible misclassified repair seen per row (``max_loss``: the feasible point of highest
        loss); ``into`` receives the cheapest evasions in place as they are found, with the labels the model gave."""
        f = target.differentiable(type(self).__name__)  # every gradient-access target provides it
        dev, dt = x0.device, x0.dtype
        low, high = c.vector("low", dev, dt), c.vector("high", dev, dt)
        scale = high - low
        box_lo, box_hi = torch.maximum(low, x0 - self.eps * scale), torch.minimum(high, x0 + self.eps * scale)

        def proj(z: torch.Tensor) -> torch.Tensor:
            return c.project(x0, torch.maximum(torch.minimum(z, box_hi), box_lo))

        def loss_grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z = z.detach().requires_grad_(True)
            loss = F.cross_entropy(f(z), y, reduction="none") - self.penalty * c.inequality_excess(z)
            (g,) = torch.autograd.grad(loss.sum(), z)
            notes["gradients"] += z.shape[0]
            return loss.detach(), g

        state = into if into is not None else _Best.start(x0)
        best, best_cost = state.x, state.cost

        def keep(z: torch.Tensor) -> None:
            zd = c.repair(x0, z)
            with torch.no_grad():
                pred = f(zd).argmax(1)
            succ = c.check(x0, zd).ok & (pred != y)
            cost = torch.where(succ, c.cost(x0, zd), torch.full_like(best_cost, float("inf")))
            better = cost < best_cost
            best[better], best_cost[better], state.pred[better] = zd[better], cost[better], pred[better]

        alpha = torch.full((x0.shape[0], 1), self.step_size or self.eps / 4, device=dev, dtype=dt)
        if self.adaptive:
            alpha = alpha * 0 + 2 * self.eps
        x, x_prev = proj(x0), proj(x0)
        keep(x)
        loss, g = loss_grad(x)
        best_loss, x_best_loss = loss.clone(), x.clone()
        period, improved, last_best = max(1, self.steps // 5), torch.zeros_like(loss), loss.clone()
        for t in range(self.steps):
            z = proj(x + alpha * g.sign() * scale)
            if self.adaptive and t > 0:
                z = proj(x + 0.75 * (z - x) + 0.25 * (x - x_prev))
            x_prev, x = x, z
            keep(x)
            loss, g = loss_grad(x)
            up = loss > best_loss
            improved += up.to(loss.dtype)
            best_loss, x_best_loss = torch.where(up, loss, best_loss), torch.where(up[:, None], x, x_best_loss)
            if self.adaptive and (t + 1) % period == 0:
                halve = (improved < 0.75 * period) | (best_loss <= last_best)
                alpha = torch.where(halve[:, None], alpha / 2, alpha)
                x = torch.where(halve[:, None], x_best_loss, x)
                if bool(halve.any()):
                    loss, g = loss_grad(x)
                improved, last_best = torch.zeros_like(loss), best_loss.clone()
        if max_loss:
            xr = c.repair(x0, x_best_loss)
            return torch.where(c.check(x0, xr).ok[:, None], xr, x0)
        return best

    def perturb(self, target: Target, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The feasible point of highest loss found for each row (adversarial training's inner maximisation).

        ``x``, ``y``: tensors on the target's device, already valid; no refinement, no result bookkeeping.
        """
        self._check_params()
        target.require(self.needs, type(self).__name__)
        c = self.constraints if self.constrained else self.constraints.relaxed()
        return self._run(target, c, x, y, {"gradients": 0}, max_loss=True)


class CAPGD(CPGD):
    """Constrained adaptive PGD (Simonetto et al. 2024): :class:`CPGD` with APGD's momentum and step schedule."""

    name: ClassVar[str] = "capgd"

    def __init__(self, *, constraints: FeatureConstraints, eps: float = 0.3, steps: int = 40,
                 step_size: float | None = None, penalty: float = 10.0, adaptive: bool = True, refine: bool = True,
                 constrained: bool = True, seed: int = 0) -> None:
        super().__init__(constraints=constraints, eps=eps, steps=steps, step_size=step_size, penalty=penalty,
                         adaptive=adaptive, refine=refine, constrained=constrained, seed=seed)
