"""Exact minimum-cost evasion of scikit-learn tree ensembles as a mixed-integer linear program.

After Kantchelian, Tygar and Joseph 2016, "Evasion and hardening of tree ensemble classifiers" (ICML), section 3:
one binary *predicate* variable ``p[j,k] = [x_j <= t_jk]`` per distinct threshold of each feature (ordered:
``p[j,k] <= p[j,k+1]``), one leaf variable per leaf with ``sum(leaves of a tree) = 1`` and, for every split, the
leaves of its left subtree bounded by the predicate and those of its right subtree by its negation; the ensemble
score is linear in the leaf variables and must fall on the other side of the decision threshold. Here the feature
values ``x_j`` are explicit variables linked to the predicates (big-M from the bounds), so every linear domain
constraint of :class:`~sparring.targets.constraints.FeatureConstraints` enters the program unchanged: immutables and
directions as bounds, integer / binary / one-hot types as integrality, derived features and inequalities as rows.
The objective is the constraints' weighted L1 cost, so the optimum is the cheapest feasible evasion (up to a
margin of two float32 ulps on each side of each threshold for features that move, so that the float32 rows sklearn
compares land on the intended side, and the solver's MIP gap). Solved with HiGHS through ``scipy.optimize.milp``.

Threat model: white-box on the trees (structure and leaf values), untargeted, binary classifiers.
Supported: ``GradientBoostingClassifier``, ``RandomForestClassifier``, ``ExtraTreesClassifier``,
``DecisionTreeClassifier``. Size limit: ``max_nodes`` (default 20,000 tree nodes in all; the program grows with
leaves + distinct thresholds, and a 60-tree depth-3 ensemble solves in well under a second per point).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from sparring.attacks.tabular.result import ConstrainedResult, run_tabular
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.constraints import FeatureConstraints
from sparring.targets.sklearn import SklearnTarget
from sparring.targets.spec import Access

__all__ = ["TreeEvasion"]

_SUPPORTED = ("GradientBoostingClassifier", "RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier")


@dataclass
class _Ensemble:
    trees: list[Any]  # sklearn Tree objects
    leaf_values: list[np.ndarray]  # per tree: score contribution of each node (used at leaves)
    threshold: float  # class 1 iff offset + sum(contributions) > threshold
    offset: float


def _ensemble(est: Any) -> _Ensemble:
    kind = type(est).__name__
    if kind not in _SUPPORTED:
        raise ParameterError(
            f"TreeEvasion supports {', '.join(_SUPPORTED)}; got {kind}. For other models use CostSearch (black-box)."
        )
    if len(getattr(est, "classes_", ())) != 2:
        raise ParameterError(f"TreeEvasion handles binary classifiers; {kind} has {len(est.classes_)} classes.")
    if kind == "GradientBoostingClassifier":
        trees = [e.tree_ for e in est.estimators_[:, 0]]
        vals = [est.learning_rate * t.value[:, 0, 0] for t in trees]
        return _Ensemble(trees, vals, 0.0, 0.0)  # offset (the init score) is set per point
    trees = [est.tree_] if kind == "DecisionTreeClassifier" else [e.tree_ for e in est.estimators_]
    vals = []
    for t in trees:
        v = t.value[:, 0, :]
        vals.append((v[:, 1] / np.maximum(v.sum(1), 1e-12)) / len(trees))
    return _Ensemble(trees, vals, 0.5, 0.0)


class _Program:
    """The point-independent MILP (variables, rows); each point changes only bounds and right-hand sides."""

    def __init__(self, ens: _Ensemble, c: FeatureConstraints, margin: float) -> None:
        nf = c.n_features
        thr: list[np.ndarray] = []
        for j in range(nf):
            ts = [t.threshold[t.feature == j] for t in ens.trees]
            thr.append(np.unique(np.concatenate(ts)) if ts else np.zeros(0))
        self.thr = thr
        p_off = np.cumsum([0] + [len(t) for t in thr])
        # variables: x (nf) | u (nf) | v (nf) | predicates | leaves
        self.nx, self.np_ = nf, int(p_off[-1])
        base_leaf = 3 * nf + self.np_
        leaf_ids, n_leaves = [], 0
        for t in ens.trees:
            ids = np.full(t.node_count, -1)
            leaves = np.flatnonzero(t.children_left == -1)
            ids[leaves] = base_leaf + n_leaves + np.arange(len(leaves))
            n_leaves += len(leaves)
            leaf_ids.append(ids)
        self.n = base_leaf + n_leaves
        rows: list[tuple[dict[int, float], float, float]] = []
        for j in range(nf):  # x - u + v = x0 (rhs filled per point)
            rows.append(({j: 1.0, nf + j: -1.0, 2 * nf + j: 1.0}, 0.0, 0.0))
        low, high = c.vector("low", dtype=torch.float64).numpy(), c.vector("high", dtype=torch.float64).numpy()
        movable = c.vector("mutable").bool().tolist()
        for d in c.derived:
            movable[c.index(d.feature)] = True
        for j in range(nf):  # predicates linked to x by big-M; ordered along each feature
            for k, t in enumerate(thr[j]):
                pv = 3 * nf + int(p_off[j]) + k
                left, right = _float32_sides(t, slack=2 if movable[j] else 0)
                rows.append(({j: 1.0, pv: high[j] - left}, -np.inf, high[j]))  # p=1 -> x <= left
                rows.append(({j: 1.0, pv: right - low[j]}, right, np.inf))  # p=0 -> x >= right
                if k + 1 < len(thr[j]):
                    rows.append(({pv: 1.0, pv + 1: -1.0}, -np.inf, 0.0))
        score: dict[int, float] = {}
        for t, ids, vals in zip(ens.trees, leaf_ids, ens.leaf_values, strict=True):
            leaves = np.flatnonzero(ids >= 0)
            rows.append(({int(ids[i]): 1.0 for i in leaves}, 1.0, 1.0))
            for i in leaves:
                score[int(ids[i])] = float(vals[i])
            for node in np.flatnonzero(t.children_left != -1):
                j, thv = int(t.feature[node]), t.threshold[node]
                pv = 3 * nf + int(p_off[j]) + int(np.searchsorted(thr[j], thv))
                under_l, under_r = _leaves_under(t, t.children_left[node]), _leaves_under(t, t.children_right[node])
                rows.append(({**{int(ids[i]): 1.0 for i in under_l}, pv: -1.0}, -np.inf, 0.0))
                rows.append(({**{int(ids[i]): 1.0 for i in under_r}, pv: 1.0}, -np.inf, 1.0))
        self.score_row = len(rows)
        rows.append((score, -np.inf, np.inf))
        for d in c.derived:
            rows.append(({c.index(d.feature): 1.0, **{c.index(n): -w for n, w in d.terms.items()}},
                         d.constant, d.constant))
        for q in c.inequalities:
            rows.append(({c.index(n): w for n, w in q.terms.items()}, -np.inf, q.rhs))
        for g in c.groups:
            rows.append(({c.index(n): 1.0 for n in g.features}, 1.0, 1.0))
        a = sp.lil_matrix((len(rows), self.n))
        for r, (coefs, _, _) in enumerate(rows):
            for col, val in coefs.items():
                a[r, col] += val
        self.a = a.tocsr()
        self.lb = np.array([r[1] for r in rows])
        self.ub = np.array([r[2] for r in rows])
        self.cost = np.zeros(self.n)
        w = c.vector("cost", dtype=torch.float64).numpy()
        self.cost[nf:2 * nf], self.cost[2 * nf:3 * nf] = w, w
        self.integrality = np.zeros(self.n)
        self.integrality[3 * nf:base_leaf] = 1
        for j, f in enumerate(c.features):
            if f.type in ("integer", "binary"):
                self.integrality[j] = 1
        self.low, self.high, self.margin, self.c = low, high, margin, c

    def solve(self, x0: np.ndarray, offset: float, threshold: float, to_class: int, time_limit: float
              ) -> tuple[np.ndarray | None, bool]:
        """The cheapest feasible row of class ``to_class`` (None if none) and whether it was proven optimal."""
        nf, c = self.nx, self.c
        lb, ub = self.lb.copy(), self.ub.copy()
        lb[:nf], ub[:nf] = x0, x0
        if to_class == 0:
            lb[self.score_row], ub[self.score_row] = -np.inf, threshold - offset - self.margin
        else:
            lb[self.score_row], ub[self.score_row] = threshold - offset + self.margin, np.inf
        vlo, vhi = np.zeros(self.n), np.ones(self.n)
        vhi[nf:3 * nf] = np.inf
        mutable = c.vector("mutable", dtype=torch.float64).numpy().astype(bool) | np.isin(
            np.arange(nf), [c.index(d.feature) for d in c.derived])
        vlo[:nf] = np.where(mutable, self.low, x0)
        vhi[:nf] = np.where(mutable, self.high, x0)
        for j, f in enumerate(c.features):
            if f.direction == "increase":
                vlo[j] = max(vlo[j], x0[j])
            elif f.direction == "decrease":
                vhi[j] = min(vhi[j], x0[j])
            if f.type == "integer":
                vlo[j], vhi[j] = np.ceil(vlo[j] - 1e-9), np.floor(vhi[j] + 1e-9)
        res = milp(self.cost, integrality=self.integrality, bounds=Bounds(vlo, vhi),
                   constraints=LinearConstraint(self.a, lb, ub), options={"time_limit": time_limit})
        return (None if res.x is None else np.asarray(res.x[:nf])), bool(res.status == 0)


def _float32_sides(t: float, slack: int) -> tuple[float, float]:
    """The float32 values just left (``<= t``) and right (``> t``) of a threshold, ``slack`` ulps further apart, so
    that a solution rounded to float32 (as sklearn compares) stays on its side."""
    t32 = np.float32(t)
    if float(t32) > t:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    left, right = t32, np.nextafter(t32, np.float32(np.inf))
    for _ in range(slack):
        left, right = np.nextafter(left, np.float32(-np.inf)), np.nextafter(right, np.float32(np.inf))
    return float(left), float(right)


def _leaves_under(t: Any, node: int) -> list[int]:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        if t.children_left[n] == -1:
            out.append(n)
        else:
            stack += [t.children_left[n], t.children_right[n]]
    return out


class TreeEvasion:
    """Minimum-cost feasible evasion of a scikit-learn tree ensemble by MILP (see the module docstring).

    Args:
        constraints: the feasible set and per-feature costs (every constraint is linear, so all of them are exact).
        max_nodes: refuse ensembles with more tree nodes than this (the documented size limit).
        time_limit: seconds per point given to the solver; when it runs out the best solution found is used.
        margin: how far past the decision threshold the ensemble score must go.
        ordinal features are not supported (declare them integer).
    """

    name: ClassVar[str] = "tree-milp"
    needs: ClassVar[Access] = Access.SCORES

    def __init__(self, *, constraints: FeatureConstraints, max_nodes: int = 20_000, time_limit: float = 10.0,
                 margin: float = 1e-5) -> None:
        self.constraints = constraints
        self.max_nodes = max_nodes
        self.time_limit = time_limit
        self.margin = margin

    def get_params(self) -> dict[str, Any]:
        return {"max_nodes": self.max_nodes, "time_limit": self.time_limit, "margin": self.margin}

    def _check(self, target: Target) -> _Ensemble:
        if not isinstance(target, SklearnTarget):
            raise ParameterError(f"TreeEvasion needs a SklearnTarget holding a tree ensemble; got "
                                 f"{type(target).__name__}. Use CostSearch for black-box models.")
        if not self.time_limit > 0 or not self.margin > 0:
            raise ParameterError(f"time_limit and margin must be > 0; got {self.time_limit}, {self.margin}.")
        if any(f.type == "ordinal" for f in self.constraints.features):
            raise ParameterError("TreeEvasion does not model ordinal features; declare them 'integer' instead.")
        ens = _ensemble(target.estimator)
        nodes = sum(t.node_count for t in ens.trees)
        if nodes > self.max_nodes:
            raise ParameterError(f"the ensemble has {nodes} tree nodes, above max_nodes={self.max_nodes}; raise "
                                 "max_nodes (solving gets slower) or use CostSearch.")
        return ens

    def __call__(self, target: Target, x: Any, y: Any) -> ConstrainedResult:
        """Solve one MILP per row of ``x`` (true labels ``y``); returns a :class:`ConstrainedResult`."""
        ens = self._check(target)
        assert isinstance(target, SklearnTarget)
        est, c = target.estimator, self.constraints

        def attack(x0: torch.Tensor, y0: torch.Tensor, notes: dict[str, Any]) -> torch.Tensor:
            prog = _Program(ens, c, self.margin)
            xs = x0.detach().cpu().double().numpy()
            out, solved, optimal = xs.copy(), 0, 0
            for i, (row, label) in enumerate(zip(xs, y0.tolist(), strict=True)):
                offset = _offset(est, ens, row)
                sol, proven = prog.solve(row, offset, ens.threshold, 1 - int(label), self.time_limit)
                if sol is not None:
                    out[i], solved, optimal = sol, solved + 1, optimal + proven
            notes["solved"], notes["proven_optimal"] = solved, optimal
            return c.repair(x0, torch.from_numpy(out).to(x0.device, x0.dtype))

        return run_tabular(self.name, self.get_params(), target, c, x, y, attack)


def _offset(est: Any, ens: _Ensemble, row: np.ndarray) -> float:
    """The constant part of the score (gradient boosting's initial log-odds); 0 for forests."""
    if type(est).__name__ != "GradientBoostingClassifier":
        return 0.0
    r = row[None].astype(np.float32)
    trees_sum = sum(float(v[t.apply(r)[0]]) for t, v in zip(ens.trees, ens.leaf_values, strict=True))
    return float(est.decision_function(r)[0]) - trees_sum
