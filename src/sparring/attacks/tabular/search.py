"""Black-box minimum-cost evasion over feasible feature changes, for any model (trees included).

Threat model: score-based or decision-based (labels only), untargeted, the cost being the constraints' weighted L1
(``FeatureConstraints.cost``). Every candidate is repaired (:meth:`FeatureConstraints.repair`) and checked
(:meth:`FeatureConstraints.check`) before it is sent, so only feasible rows are ever queried.

* With scores, a beam search (after the cost-ordered greedy searches for tabular evasion of Kulynych et al. 2018,
  "Evading classifiers in discrete domains with provable optimality guarantees", and Ballet et al. 2019,
  "Imperceptible adversarial attacks on tabular data") expands, at each depth, every single feasible change (a
  ladder of steps per feature, a bit flip, an ordinal level, a one-hot category) of the ``beam_width`` states with
  the lowest true-class margin, keeps the cheapest misclassified candidate per row, and prunes states that already
  cost more than it.
* With labels only, random sparse feasible changes are sampled and the cheapest misclassified one is kept;
  optionally (``boundary_steps``) HopSkipJump with projection then walks along the decision boundary.

Both end with a label-only refinement: changed features are reverted one at a time while the row stays misclassified,
then each remaining numeric change is shrunk by bisection towards the clean value (as the boundary search of
HopSkipJump, Chen et al. 2020, does along a line).

Query budget: when the target's budget would be crossed, the search stops before sending (nothing is overspent) and
returns what it has: every row kept as an evasion was seen misclassified by the model when it was queried, and every
row whose search had not finished and that is not broken is ``unknown`` in the result (never robust).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparring.attacks.tabular.result import ConstrainedResult, run_tabular
from sparring.errors import ParameterError, QueryBudgetExceeded
from sparring.targets.base import Target
from sparring.targets.constraints import FeatureConstraints
from sparring.targets.spec import Access

__all__ = ["CostSearch", "refine"]

_FRACS = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


@dataclass
class _Move:
    cols: torch.Tensor  # (k,) columns set together
    values: torch.Tensor  # (N, K, k) candidate values per row


def _moves(c: FeatureConstraints, x0: torch.Tensor) -> list[_Move]:
    """Every single feasible change of each row of ``x0``: a ladder per numeric feature, flips, levels, categories."""
    dev, dt = x0.device, x0.dtype
    mutable, groups = c.vector("mutable", dev).bool().tolist(), c.group_of()
    out = []
    for j, f in enumerate(c.features):
        if not mutable[j] or j in groups:
            continue
        v0, width = x0[:, j:j + 1], f.high - f.low
        if f.type == "binary":
            vals = 1 - v0
        elif f.type == "ordinal" and f.levels:
            vals = torch.tensor(f.levels, device=dev, dtype=dt).expand(x0.shape[0], -1)
        else:
            steps = torch.tensor(_FRACS, device=dev, dtype=dt) * width
            if f.type == "integer":
                steps = torch.unique(torch.cat([torch.tensor([1.0, 2.0], device=dev, dtype=dt), steps.round()]))
                steps = steps[steps >= 1]
            signed = {"any": torch.cat([steps, -steps]), "increase": steps, "decrease": -steps}[f.direction]
            vals = (v0 + signed).clamp(f.low, f.high)
        out.append(_Move(torch.tensor([j], device=dev), vals[:, :, None]))
    for g in c.groups:
        if g.mutable:
            idx = torch.tensor([c.index(n) for n in g.features], device=dev)
            eye = torch.eye(len(idx), device=dev, dtype=dt)
            out.append(_Move(idx, eye.expand(x0.shape[0], -1, -1)))
    return out


class _Evaluator:
    """Repairs, checks and queries candidate rows ``(N, C, F)``; infeasible ones are never sent."""

    def __init__(self, target: Target, c: FeatureConstraints, x0: torch.Tensor, y: torch.Tensor,
                 use_scores: bool) -> None:
        self.target, self.c, self.x0, self.y, self.use_scores = target, c, x0, y, use_scores

    def __call__(self, cand: torch.Tensor) -> _Batch:
        n, m, f = cand.shape
        x0 = self.x0[:, None, :].expand(n, m, f).reshape(-1, f)
        flat = self.c.repair(x0, cand.reshape(-1, f))
        ok = self.c.check(x0, flat).ok
        margin = torch.full((n * m,), float("inf"), device=flat.device)
        pred = torch.full((n * m,), -1, dtype=torch.long, device=flat.device)
        y = self.y[:, None].expand(n, m).reshape(-1)
        if bool(ok.any()):
            if self.use_scores:
                s = self.target.query(flat[ok])
                p = s.softmax(dim=1) if self.target.view_output == "logits" else s
                true = p.gather(1, y[ok, None])[:, 0]
                other = p.scatter(1, y[ok, None], float("-inf")).max(dim=1).values
                margin[ok] = (true - other).float()
                pred[ok] = p.argmax(dim=1).to(pred.device)
            else:
                lab = self.target.query_labels(flat[ok]).to(pred.device).long()
                margin[ok] = torch.where(lab != y[ok], -1.0, 1.0)
                pred[ok] = lab
        cost = self.c.cost(x0, flat)
        return _Batch(flat.reshape(n, m, f), ok.reshape(n, m), margin.reshape(n, m), cost.reshape(n, m),
                      pred.reshape(n, m))


@dataclass
class _Batch:
    """Evaluated candidates ``(N, C)``: repaired rows, feasible, true-class margin (< 0: misclassified; inf where
    not sent), cost, and the label the model gave (-1 where not sent)."""

    cand: torch.Tensor
    ok: torch.Tensor
    margin: torch.Tensor
    cost: torch.Tensor
    pred: torch.Tensor


@dataclass
class _Best:
    """The cheapest misclassified feasible row found so far per row (the clean row while none), its cost and the
    label the model gave it when it was queried (-1 while none). Updated in place (views of it may be searched)."""

    x: torch.Tensor
    cost: torch.Tensor
    pred: torch.Tensor

    @classmethod
    def start(cls, x0: torch.Tensor) -> _Best:
        n = x0.shape[0]
        return cls(x0.clone(), torch.full((n,), float("inf"), device=x0.device),
                   torch.full((n,), -1, dtype=torch.long, device=x0.device))

    def rows(self, s: slice) -> _Best:
        return _Best(self.x[s], self.cost[s], self.pred[s])


def _expand(states: torch.Tensor, mv: list[_Move]) -> torch.Tensor:
    n, b, f = states.shape
    out = []
    for m in mv:
        k = m.values.shape[1]
        s = states[:, :, None, :].expand(n, b, k, f).clone()
        s[..., m.cols] = m.values[:, None, :, :].expand(n, b, k, len(m.cols)).to(s.dtype)
        out.append(s.reshape(n, b * k, f))
    return torch.cat(out, dim=1)


def _keep_cheapest(best: _Best, b: _Batch, allowed: torch.Tensor | None = None) -> None:
    ok = b.ok if allowed is None else b.ok & allowed
    c = torch.where(ok & (b.margin < 0), b.cost, torch.full_like(b.cost, float("inf")))
    m, i = c.min(dim=1)
    better = m < best.cost
    best.x[better] = b.cand[better, i[better]]
    best.cost[better] = m[better]
    best.pred[better] = b.pred[better, i[better]]


def refine(target: Target, c: FeatureConstraints, x0: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
           bisections: int = 6) -> torch.Tensor:
    """Lower the cost of misclassified feasible rows with label queries only (revert features, then bisect).

    Rows of ``x_adv`` that are not misclassified or not feasible are returned unchanged.
    """
    ev = _Evaluator(target, c, x0, y, use_scores=False)
    b = ev(x_adv[:, None, :])
    best = _Best(x_adv.clone(), b.cost[:, 0].clone(), b.pred[:, 0].clone())
    _refine(ev, c, x0, best, b.ok[:, 0] & (b.margin[:, 0] < 0), bisections)
    return best.x


def _refine(ev: _Evaluator, c: FeatureConstraints, x0: torch.Tensor, best: _Best, active: torch.Tensor,
            bisections: int = 6) -> None:
    """:func:`refine` in place on the ``active`` rows of ``best`` (each change kept was seen misclassified)."""
    if not bool(active.any()):
        return
    mv = _moves(c, x0)
    if not mv:
        return

    def keep(trial: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        b = ev(trial[:, None, :])
        good = rows & b.ok[:, 0] & (b.margin[:, 0] < 0)
        best.x[good], best.pred[good], best.cost[good] = b.cand[good, 0], b.pred[good, 0], b.cost[good, 0]
        return good

    contrib = torch.stack([((best.x[:, m.cols] - x0[:, m.cols]).abs().sum(1)) for m in mv], 1).mean(0)
    for k in contrib.argsort(descending=True).tolist():
        cols = mv[k].cols
        trial = best.x.clone()
        trial[:, cols] = x0[:, cols]
        keep(trial, active)
    for m in mv:
        j = int(m.cols[0])
        if len(m.cols) > 1 or c.features[j].type in ("binary", "ordinal"):
            continue
        delta = best.x[:, j] - x0[:, j]
        lo, hi = torch.zeros_like(delta), torch.ones_like(delta)
        todo = active & (delta != 0)
        for _ in range(bisections if bool(todo.any()) else 0):
            mid = (lo + hi) / 2
            trial = best.x.clone()
            trial[:, j] = x0[:, j] + mid * delta
            good = keep(trial, todo)
            hi = torch.where(good, mid, hi)
            lo = torch.where(good | ~todo, lo, mid)


class CostSearch:
    """Minimum-cost feasible evasion for any classifier with scores or labels (see the module docstring).

    Args:
        constraints: the feasible set and per-feature costs.
        beam_width: states kept per row and depth (score access).
        max_changes: search depth: most feature changes combined by the beam (score access).
        samples: random candidates per row (labels-only access).
        boundary_steps: labels-only access: iterations of HopSkipJump with projection on the numeric features,
            started from the cheapest sampled evasion (0: off).
        refine: run the label-only cost refinement on the result.
        constrained: False searches with :meth:`FeatureConstraints.relaxed` (bounds only): the unconstrained
            baseline, whose rows are then checked against the real constraints and reported, not reverted.
        seed: seed of the default generator.
    """

    name: ClassVar[str] = "cost-search"
    needs: ClassVar[Access] = Access.LABELS

    def __init__(self, *, constraints: FeatureConstraints, beam_width: int = 4, max_changes: int = 4,
                 samples: int = 512, boundary_steps: int = 0, refine: bool = True, constrained: bool = True,
                 seed: int = 0) -> None:
        self.constraints = constraints
        self.beam_width = beam_width
        self.max_changes = max_changes
        self.samples = samples
        self.boundary_steps = boundary_steps
        self.refine = refine
        self.constrained = constrained
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {"beam_width": self.beam_width, "max_changes": self.max_changes, "samples": self.samples,
                "boundary_steps": self.boundary_steps, "refine": self.refine, "constrained": self.constrained,
                "seed": self.seed}

    def _check_params(self) -> None:
        for k in ("beam_width", "max_changes", "samples"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(f"CostSearch {k} must be a positive integer; got {v!r}.")
        if isinstance(self.boundary_steps, bool) or not isinstance(self.boundary_steps, int) or self.boundary_steps < 0:
            raise ParameterError(f"CostSearch boundary_steps must be an integer >= 0; got {self.boundary_steps!r}.")

    def __call__(self, target: Target, x: Any, y: Any, *, generator: torch.Generator | None = None
                 ) -> ConstrainedResult:
        """Search every row of ``x`` (true labels ``y``); returns a :class:`ConstrainedResult`."""
        self._check_params()
        target.require(self.needs, "CostSearch")
        c = self.constraints if self.constrained else self.constraints.relaxed()
        gen = generator or torch.Generator(device=target.device).manual_seed(self.seed)

        def attack(x0: torch.Tensor, y0: torch.Tensor, notes: dict[str, Any]) -> torch.Tensor:
            best = _Best.start(x0)
            finished = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
            try:
                for s in range(0, x0.shape[0], 64):
                    rows = slice(s, s + 64)
                    self._search(target, c, x0[rows], y0[rows], gen, best.rows(rows))
                    finished[rows] = True
            except QueryBudgetExceeded:  # stop before overspending; keep what the queries so far established
                notes["budget_exhausted"] = True
            notes["finished"], notes["adv_pred"] = finished, best.pred
            return best.x

        return run_tabular(self.name, self.get_params(), target, self.constraints, x, y, attack,
                           constrained=self.constrained)

    def _search(self, target: Target, c: FeatureConstraints, x0: torch.Tensor, y: torch.Tensor,
                gen: torch.Generator, best: _Best) -> None:
        """Search the rows ``x0`` into ``best`` (in place, so that a budget stop keeps what was found)."""
        use_scores = target.access >= Access.SCORES
        ev = _Evaluator(target, c, x0, y, use_scores)
        mv = _moves(c, x0)
        if not mv:
            return
        if use_scores:
            states = x0[:, None, :]
            for _ in range(self.max_changes):
                b = ev(_expand(states, mv))
                _keep_cheapest(best, b)
                key = torch.where(b.ok & (b.margin >= 0) & (b.cost < best.cost[:, None]), b.margin,
                                  torch.full_like(b.margin, float("inf")))
                if bool(torch.isinf(key).all()):
                    break
                idx = key.topk(min(self.beam_width, key.shape[1]), dim=1, largest=False).indices
                states = b.cand.gather(1, idx[:, :, None].expand(-1, -1, b.cand.shape[2]))
        else:
            self._sample(ev, mv, x0, best, gen)
            if self.boundary_steps:
                _boundary_walk(ev, c, x0, best, gen, self.boundary_steps)
        if self.refine:
            _refine(_Evaluator(target, c, x0, y, use_scores=False), c, x0, best, torch.isfinite(best.cost))

    def _sample(self, ev: _Evaluator, mv: list[_Move], x0: torch.Tensor, best: _Best, gen: torch.Generator) -> None:
        n, f, dev = x0.shape[0], x0.shape[1], x0.device
        per = max(1, min(self.samples, 4096 // max(1, n)))
        for _ in range(-(-self.samples // per)):
            cand = x0[:, None, :].expand(n, per, f).clone()
            rate = torch.rand((n, per), generator=gen, device=dev) * 0.6 + 0.1
            for m in mv:
                pick = torch.rand((n, per), generator=gen, device=dev) < rate
                k = torch.randint(m.values.shape[1], (n, per), generator=gen, device=dev)
                vals = m.values.gather(1, k[:, :, None].expand(-1, -1, len(m.cols))).to(cand.dtype)
                cand[..., m.cols] = torch.where(pick[..., None], vals, cand[..., m.cols])
            _keep_cheapest(best, ev(cand))


def _boundary_walk(ev: _Evaluator, c: FeatureConstraints, x0: torch.Tensor, best: _Best, gen: torch.Generator,
                   steps: int, n_dirs: int = 32) -> None:
    """HopSkipJump (Chen, Jordan and Wainwright 2020, Algorithm 1) with projection: a binary search to the boundary
    along the segment from the clean row, a Monte-Carlo estimate of the boundary's normal from label queries, a
    geometric step along it; on the mutable numeric features (range-scaled), every probe repaired and checked."""
    n, f, dev = x0.shape[0], x0.shape[1], x0.device
    groups, mut = c.group_of(), c.vector("mutable", dev).bool()
    numeric = torch.tensor([bool(mut[j]) and j not in groups and c.features[j].type in ("continuous", "integer")
                            for j in range(f)], device=dev)
    active = torch.isfinite(best.cost)
    if not bool(active.any()) or not bool(numeric.any()):
        return
    scale = (c.vector("high", dev, x0.dtype) - c.vector("low", dev, x0.dtype)) * numeric
    cur = best.x.clone()

    def probe(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = ev(z)
        _keep_cheapest(best, b, active[:, None])
        return b.cand, b.ok & (b.margin < 0)

    for t in range(steps):
        lo, hi = torch.zeros(n, 1, device=dev), torch.ones(n, 1, device=dev)
        for _ in range(8):
            mid = (lo + hi) / 2
            _, a = probe((x0 + mid * (cur - x0))[:, None])
            hi, lo = torch.where(a, mid, hi), torch.where(a, lo, mid)
        xb = x0 + hi * (cur - x0)
        dist = (((xb - x0) / scale.clamp_min(1e-12)) * numeric).norm(dim=1, keepdim=True).clamp_min(1e-6)
        u = torch.randn((n, n_dirs, f), generator=gen, device=dev) * numeric
        u = u / u.norm(dim=2, keepdim=True).clamp_min(1e-12)
        _, a = probe(xb[:, None] + 0.1 * dist[:, :, None] * u * scale)
        phi = a.to(u.dtype) * 2 - 1
        g = ((phi - phi.mean(1, keepdim=True))[..., None] * u).mean(1)
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        xi, moved = dist / (t + 1) ** 0.5, torch.zeros(n, dtype=torch.bool, device=dev)
        for _ in range(6):
            out, a = probe((xb + xi * g * scale)[:, None])
            take = a[:, 0] & ~moved
            cur[take], moved = out[take, 0], moved | take
            xi = torch.where(moved[:, None], xi, xi / 2)
