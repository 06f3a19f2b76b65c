"""The universal adversarial perturbation (Moosavi-Dezfooli, Fawzi, Fawzi & Frossard 2017, "Universal adversarial
perturbations", Algorithm 1): one image-agnostic ``v`` with ``||v|| <= eps`` built from DeepFool steps on the
training images. Threat model: white-box (gradients), untargeted, L2 or L∞.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from sparring._progress import progress_bar
from sparring.attacks.base import _as_input_kind, _generator
from sparring.attacks.evasion._checks import check_eps, check_positive_int
from sparring.attacks.evasion.deepfool import DeepFool
from sparring.attacks.norms import Norm, project, steepest_direction
from sparring.attacks.result import AttackResult, Cost
from sparring.attacks.universal._common import number, params_of
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access, InputSpec
from sparring.targets.torch import TorchTarget

__all__ = ["PerturbationResult", "UniversalPerturbation"]


@dataclass
class PerturbationResult(AttackResult):
    """A trained universal perturbation.

    Attributes:
        v: the perturbation, shape ``spec.shape``, ``||v|| <= eps`` in ``norm``, on the model's device.
        norm: ``"linf"`` or ``"l2"``.
        eps: the budget.
        spec: the input spec of the target it was trained on.
        history: the fooling rate on the training set after each pass (``v`` is the best of these).
    """

    v: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    norm: str = "linf"
    eps: float = 0.0
    spec: InputSpec | None = None
    history: list[float] = field(default_factory=list)

    def apply(self, x: Any) -> Any:
        """``clip(x + v)`` to the spec's bounds; the same kind (tensor/numpy) and device as ``x``."""
        return _as_input_kind(self._add(x)[1], x)

    def _add(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.spec is not None
        xt, _ = self.spec.validate(x)
        lower, upper = self.spec.bounds_tensors(self.v.device, self.v.dtype)
        xd = xt.to(self.v.device, self.v.dtype)
        return xd, torch.clamp(xd + self.v, lower, upper)

    def evaluate(self, target: Target, x: Any, y: Any = None) -> dict[str, float]:
        """``fooling_rate``: share of inputs whose prediction changes when ``v`` is added (the paper's measure);
        with labels ``y`` also ``error_rate`` (share wrong after) and ``clean_accuracy``; and ``n``."""
        xd, xv = self._add(x)
        clean, pred = target.query_labels(xd).cpu(), target.query_labels(xv).cpu()
        out = {"fooling_rate": float((clean != pred).float().mean()), "n": float(xd.shape[0])}
        if y is not None:
            assert self.spec is not None
            yt = self.spec.validate_labels(y, n=xd.shape[0]).cpu()
            out["error_rate"] = float((pred != yt).float().mean())
            out["clean_accuracy"] = float((clean == yt).float().mean())
        return out


class UniversalPerturbation:
    r"""Universal adversarial perturbation (Moosavi-Dezfooli, Fawzi, Fawzi, Frossard 2017, "Universal adversarial
    perturbations", Algorithm 1), with the faster stochastic-gradient variant of Shafahi, Najibi, Xu, Dickerson,
    Davis, Goldstein (2020, "Universal Adversarial Training") as ``method="sgd"``.

    Threat model: white-box (gradients), untargeted, one image-agnostic perturbation ``v`` with
    ``||v||_p <= eps`` (the paper's ``ξ``), L∞ or L2, meant to change the model's prediction on most inputs.
    Labels are not needed: a point is fooled when ``k(x + v) != k(x)``, ``k`` the model's prediction.

    ``method="deepfool"`` (Moosavi-Dezfooli et al.): start from ``v = 0`` and pass over the training points in a
    random order. For each point ``x_i`` still not fooled by ``v``, DeepFool (L2, as in the paper) finds a minimal
    ``Δv_i`` sending ``x_i + v`` across the boundary, and ``v ← P_{p,ξ}(v + Δv_i)`` (projection onto the ball;
    where DeepFool fails within ``deepfool_steps`` the point adds nothing). ``batch_size=1`` is the algorithm
    exactly. With ``batch_size = b > 1`` DeepFool runs on ``b`` points at once against the same ``v``; their
    ``Δv_i`` are then folded in one after another, each only if its point is still not fooled by the current ``v``
    (as the algorithm asks), but computed up to ``b - 1`` updates earlier.

    ``method="sgd"`` (Shafahi et al.): for each mini-batch of ``batch_size`` points, one signed-gradient (L∞) or
    normalised-gradient (L2) ascent step of size ``lr`` on the mean of ``min(CE(x_i + v, k(x_i)), beta)``, then
    ``v ← P_{p,ξ}(v)``: the clipped cross-entropy keeps points already far across the boundary from dominating.

    Both stop once the fooling rate on the training set reaches ``1 - delta`` after a pass, or after ``max_iter``
    passes, and return the ``v`` that fooled the most training points at the end of a pass (the DeepFool
    iteration is not monotone: a pass can undo the previous one's gains). Inputs ``x + v`` are clipped to the
    spec's bounds.

    Args:
        eps: the budget ``ξ`` in raw input units.
        norm: ``"linf"`` or ``"l2"``.
        method: ``"deepfool"`` (the paper's algorithm) or ``"sgd"`` (faster, usually stronger).
        max_iter: most passes over the training set.
        delta: stop once the training fooling rate reaches ``1 - delta`` (paper: 0.2).
        batch_size: points per DeepFool call, or per SGD step.
        overshoot, deepfool_steps, n_candidates: DeepFool's settings (paper's code: 0.02, 10 and 10).
        lr: SGD step size in raw input units (default ``eps / 10``).
        beta: SGD's clip of the per-point cross-entropy (Shafahi et al.'s ``β``; 9 as in common implementations).
        seed: seed of the default generator (the order of the points).

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.universal import UniversalPerturbation
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> result = UniversalPerturbation(eps=0.2, method="sgd").fit(target, data.x_train)
        >>> result.evaluate(target, data.x_test, data.y_test)["fooling_rate"] > 0.5
        True
    """

    name = "universal_perturbation"

    def __init__(
        self, eps: float, norm: str | Norm = "linf", *, method: Literal["deepfool", "sgd"] = "deepfool",
        max_iter: int = 5, delta: float = 0.2, batch_size: int = 32, overshoot: float = 0.02,
        deepfool_steps: int = 10, n_candidates: int = 10, lr: float | None = None, beta: float = 9.0,
        seed: int | None = 0,
    ) -> None:
        self.eps = eps
        self.norm = norm
        self.method = method
        self.max_iter = max_iter
        self.delta = delta
        self.batch_size = batch_size
        self.overshoot = overshoot
        self.deepfool_steps = deepfool_steps
        self.n_candidates = n_candidates
        self.lr = lr
        self.beta = beta
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        p = params_of(self)
        p["norm"] = self.norm.value if isinstance(self.norm, Norm) else self.norm
        return p

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def _check_params(self, target: Target) -> tuple[Norm, float, DeepFool]:
        norm = Norm.parse(self.norm)
        eps = check_eps(self.eps, norm, target.spec)
        if self.method not in ("deepfool", "sgd"):
            raise ParameterError(f"method must be 'deepfool' (the paper's algorithm) or 'sgd'; got {self.method!r}.")
        check_positive_int(self.max_iter, "max_iter")
        check_positive_int(self.batch_size, "batch_size")
        number(self.delta, "delta", 0, 1, hint=" (stop at a training fooling rate of 1 - delta)")
        if self.lr is not None:
            number(self.lr, "lr", 0, math.inf, open_lo=True, hint=" (or None for eps / 10)")
        number(self.beta, "beta", 0, math.inf, open_lo=True, hint=" (the clip of the cross-entropy)")
        df = DeepFool(norm="l2", steps=self.deepfool_steps, overshoot=self.overshoot, n_candidates=self.n_candidates)
        df._check_params(target)  # overshoot, deepfool_steps and n_candidates checked before any work
        return norm, eps, df

    def fit(
        self, target: TorchTarget, x_train: Any, *, generator: torch.Generator | None = None, progress: bool = False
    ) -> PerturbationResult:
        """Compute ``v`` on ``x_train`` (labels are not needed: the paper fools the model's own predictions)."""
        spec = target.spec
        norm, eps, df = self._check_params(target)
        target.require(Access.GRADIENTS, type(self).__name__)
        if not isinstance(target, TorchTarget):
            raise ParameterError(f"{type(self).__name__} needs a TorchTarget; got {type(target).__name__}.")
        xt, _ = spec.validate(x_train)
        dev, dt = target.device, target.dtype
        gen = _generator(generator, self.seed, dev)
        x = xt.to(dev, dt)
        lower, upper = spec.bounds_tensors(dev, dt)
        q0, t0, grads = target.counter.used, time.perf_counter(), 0
        k0 = target.query_labels(x)
        v = torch.zeros(1, *spec.shape, device=dev, dtype=dt)
        history: list[float] = []
        best, best_rate = v, -1.0
        bs = int(self.batch_size)
        lr = float(self.lr) if self.lr is not None else eps / 10
        fwd = target.differentiable(type(self).__name__)
        for _ in progress_bar(range(self.max_iter), total=self.max_iter, description=self.name, enabled=progress):
            order = torch.randperm(x.shape[0], generator=gen, device=dev)
            for s in range(0, x.shape[0], bs):
                idx = order[s : s + bs]
                if self.method == "sgd":
                    with target.frozen():
                        v.requires_grad_(True)
                        z = fwd(torch.clamp(x[idx] + v, lower, upper))
                        ce = F.cross_entropy(z, k0[idx], reduction="none").clamp(max=float(self.beta))
                        (g,) = torch.autograd.grad(ce.mean(), v)
                    grads += idx.shape[0]
                    v = project(v.detach() + lr * steepest_direction(g, norm), norm, eps)
                    continue
                xb = torch.clamp(x[idx] + v, lower, upper)
                r = df(target, xb, k0[idx])  # points already fooled come back unchanged
                grads += r.cost.gradients
                dv, found = r.x_adv - xb, r.success & r.clean_correct
                if bs == 1:
                    v = project(v + dv, norm, eps)
                    continue
                for j in range(dv.shape[0]):
                    xj = torch.clamp(x[idx[j : j + 1]] + v, lower, upper)
                    add = found[j] & (target.query_labels(xj)[0] == k0[idx[j]])  # still not fooled by v
                    v = torch.where(add, project(v + dv[j : j + 1], norm, eps), v)
            fooled = target.query_labels(torch.clamp(x + v, lower, upper)) != k0
            history.append(float(fooled.float().mean()))
            if history[-1] > best_rate:
                best, best_rate = v.detach().clone(), history[-1]
            if history[-1] >= 1 - float(self.delta):
                break
        cost = Cost(queries=target.counter.used - q0, gradients=grads, seconds=time.perf_counter() - t0)
        return PerturbationResult(
            attack=self.name, params=self.get_params(), cost=cost, v=best.squeeze(0), norm=norm.value,
            eps=eps, spec=spec, history=history,
        )
