"""Adversarial training with constrained (feasible) adversarial examples, and constraint-aware robustness reports.

Training follows Madry et al. 2018 (min-max adversarial training) with the inner maximisation done by constrained
PGD (Simonetto et al. 2022, section 5: adversarial retraining with CPGD examples): each batch is augmented with the
feasible point of highest loss that CPGD finds for the rows of the attacked classes (for fraud: only fraudsters
attack, so ``attacked_classes=(1,)``). Because only feasible examples are used, the model spends no capacity on
changes no attacker can make.

:func:`cost_to_evade` is the constraint-aware robustness report: per example, the cheapest evasion found, and its
distribution over the attacked class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sparring._util import reinit_parameters
from sparring.attacks.tabular.cpgd import CPGD
from sparring.attacks.tabular.result import ConstrainedResult
from sparring.data.datasets import Dataset
from sparring.errors import InputSpecError, ParameterError
from sparring.targets.constraints import FeatureConstraints
from sparring.targets.torch import TorchTarget

__all__ = ["CostReport", "constrained_adversarial_train", "cost_to_evade"]


def constrained_adversarial_train(
    target: TorchTarget, ds: Dataset, constraints: FeatureConstraints, *, eps: float = 0.3, steps: int = 10,
    epochs: int = 10, lr: float = 3e-3, batch_size: int = 64, attacked_classes: Sequence[int] | None = (1,),
    reinit: bool = True, seed: int = 0,
) -> list[float]:
    """Train ``target``'s model in place on clean plus CPGD-constrained examples; returns the loss per epoch.

    Args:
        target: the model to train (its spec's normalisation is applied inside, as when it is attacked).
        ds: training data (``ds.x_train`` must satisfy ``constraints``).
        constraints: the attacker's feasible set.
        eps, steps: the inner CPGD's budget (fraction of each feature's range) and steps.
        epochs, lr, batch_size: Adam training schedule.
        attacked_classes: classes whose rows are perturbed (None: every class).
        reinit: start from freshly initialised weights (seeded) rather than the current ones.
        seed: seed of the shuffling and the initialisation (the global RNG is left untouched).
    """
    if not isinstance(target, TorchTarget):
        raise ParameterError(f"constrained adversarial training needs a TorchTarget; got {type(target).__name__}.")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("steps", steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ParameterError(f"{name} must be a positive integer; got {v!r}.")
    if not lr > 0:
        raise ParameterError(f"lr must be > 0; got {lr!r}.")
    x, y = ds.x_train.to(target.device), ds.y_train.to(target.device)
    ok = constraints.check(x, x).ok
    if not bool(ok.all()):
        raise InputSpecError(f"{int((~ok).sum())} training rows break the constraints; fix the data first.")
    attack = CPGD(constraints=constraints, eps=eps, steps=steps, refine=False)
    attack._check_params()
    classes = None if attacked_classes is None else torch.tensor(list(attacked_classes), device=target.device)
    model, fwd = target.model, target._raw_forward()
    if reinit:
        reinit_parameters(model, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        perm, total = torch.randperm(len(x), generator=gen).to(target.device), 0.0
        for s in range(0, len(x), batch_size):
            idx = perm[s:s + batch_size]
            xb, yb = x[idx], y[idx]
            sel = torch.ones_like(yb, dtype=torch.bool) if classes is None else torch.isin(yb, classes)
            model.eval()
            with target.frozen():
                x_adv = attack.perturb(target, xb[sel], yb[sel]) if bool(sel.any()) else xb[:0]
            model.train()
            xa, ya = torch.cat([xb, x_adv]), torch.cat([yb, yb[sel]])
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(fwd(xa), ya)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += float(loss.detach()) * len(xa)
        losses.append(total / len(x))
    opt.zero_grad(set_to_none=True)
    model.eval()
    target.counter.reset()
    return losses


@dataclass
class CostReport:
    """Per-example cost to evade (``inf`` where no feasible evasion was found) and its distribution."""

    costs: np.ndarray
    evaded: np.ndarray

    @property
    def evasion_rate(self) -> float:
        return float(self.evaded.mean()) if self.evaded.size else 0.0

    def quantiles(self, qs: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 0.9)) -> dict[str, float]:
        """Quantiles of the cost over *all* attacked examples (``inf`` once more than that share resists)."""
        if not self.costs.size:
            return {}
        return {f"q{round(q * 100)}": float(np.quantile(self.costs, q, method="inverted_cdf")) for q in qs}

    def robust_at(self, budget: float) -> float:
        """Share of attacked examples with no feasible evasion cheaper than ``budget``."""
        return float((self.costs > budget).mean()) if self.costs.size else 1.0

    def to_dict(self) -> dict[str, Any]:
        fin = self.costs[np.isfinite(self.costs)]
        return {"n": int(self.costs.size), "evasion_rate": self.evasion_rate,
                "median_cost_of_evasions": float(np.median(fin)) if fin.size else None,
                "quantiles": {k: (v if np.isfinite(v) else None) for k, v in self.quantiles().items()}}


def cost_to_evade(results: Sequence[ConstrainedResult]) -> CostReport:
    """Per example, the cheapest feasible evasion over several attacks on the same rows (worst case per point)."""
    if not results:
        raise ParameterError("cost_to_evade needs at least one ConstrainedResult.")
    n = results[0].n
    best = np.full(n, np.inf)
    for r in results:
        if r.n != n:
            raise ParameterError(f"results cover different rows ({r.n} vs {n}); attack the same rows with each.")
        succ = np.asarray(r.feasible_success & _np(r.clean_correct))
        best = np.where(succ, np.minimum(best, _np(r.costs)), best)
    return CostReport(costs=best, evaded=np.isfinite(best))


def _np(v: Any) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

