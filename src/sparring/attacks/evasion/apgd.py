"""Auto-PGD: APGD-CE, APGD-DLR and APGD-T (Croce & Hein 2020), the gradient attacks of AutoAttack."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from sparring.attacks.base import BatchContext, EvasionAttack
from sparring.attacks.evasion._checks import check_eps, check_positive_int
from sparring.attacks.evasion._fast import fast_layout
from sparring.attacks.losses import cross_entropy, dlr, dlr_targeted
from sparring.attacks.norms import Norm, ball_random, project, steepest_direction
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["APGD", "APGDT", "checkpoints"]

_MOMENTUM = 0.75  # α of the paper's update, fixed there
# Checkpoint fractions in hundredths of the run, so that w_j = ceil(p_j · N) is exact integer arithmetic.
_P1, _P_DECAY, _P_MIN = 22, 3, 6
_MAX_ROWS = 4096  # APGD-T with batch_targets: most (point, target) rows attacked as one batch

# (logits, y, target labels or None) -> per-example objective to increase.
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def checkpoints(steps: int) -> list[int]:
    """The iterations ``W = {w_0 = 0, w_1, ...}`` at which APGD may halve its step size (Croce & Hein 2020, sec. 3).

    ``w_j = ceil(p_j · steps)`` with ``p_0 = 0``, ``p_1 = 0.22`` and ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03,
    0.06)`` while ``p_j ≤ 1``; for 100 steps: ``[0, 22, 41, 57, 70, 80, 87, 93, 99]``. With very few steps two
    fractions can round to the same iteration; the repeat is dropped (an empty interval carries no information).
    """
    check_positive_int(steps, "steps")
    ps = [0, _P1]
    while (nxt := ps[-1] + max(ps[-1] - ps[-2] - _P_DECAY, _P_MIN)) <= 100:
        ps.append(nxt)
    return sorted({-(-p * steps // 100) for p in ps})


@dataclass
class _Run:
    """One APGD run on a subset: per example the point returned, its prediction, success and best objective."""

    x: torch.Tensor  # first point that reached the goal, else the highest-objective point
    pred: torch.Tensor
    broken: torch.Tensor
    loss: torch.Tensor  # best objective seen (at the time the example left, with early stop)
    halvings: int


def _apgd(
    ctx: BatchContext,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor | None,
    *,
    objective: Objective,
    goal_is_target: bool,
    norm: Norm,
    eps: float,
    steps: int,
    rho: float,
    early_stop: bool,
    group: torch.Tensor | None = None,
) -> _Run:
    """Algorithm 1 of Croce & Hein (2020) from one random start, on tensors already on the model's device.

    The goal is reaching ``t`` when ``goal_is_target`` else leaving ``y``. Iterates are ``x^(0) .. x^(steps)``:
    ``steps`` gradients and ``steps + 1`` objective values per example still in play. Rows with the same ``group``
    (one input point under several targets) leave together with ``early_stop``: once one of them is broken, the
    others return their highest-objective point so far.
    """
    target = ctx.target
    assert isinstance(target, TorchTarget)
    fwd = target.differentiable("APGD")
    n = x.shape[0]
    if norm is Norm.LINF:  # ball ∩ bounds is one box: projection is a clamp
        lo, hi = torch.maximum(x - eps, ctx.lower), torch.minimum(x + eps, ctx.upper)
    else:
        lo, hi = ctx.lower.expand_as(x), ctx.upper.expand_as(x)

    def proj(v: torch.Tensor, x0: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        if norm is Norm.L2:  # onto the ball, then the bounds (as the reference; stays inside the ball)
            v = x0 + project(v - x0, norm, eps)
        return torch.clamp(v, lo, hi)

    start = proj(x + ball_random(x, norm, eps, ctx.generator), x, lo, hi)
    out_x, out_pred = start.clone(), torch.empty_like(y)
    out_broken = torch.zeros(n, dtype=torch.bool, device=x.device)
    out_loss = torch.empty(n, dtype=x.dtype, device=x.device)
    # State of the examples still in play, all with the same leading dimension.
    s: dict[str, torch.Tensor] = {
        "idx": torch.arange(n, device=x.device), "x0": x, "lo": lo, "hi": hi, "y": y,
        "xk": start, "xprev": start, "eta": torch.full((n,), 2.0 * eps, dtype=x.dtype, device=x.device),
        "count": torch.zeros(n, dtype=torch.long, device=x.device),
        "reduced": torch.zeros(n, dtype=torch.bool, device=x.device),
    }
    if t is not None:
        s["t"] = t
    if group is not None:
        s["group"] = group
        gone = torch.zeros(int(group.max()) + 1 if n else 0, dtype=torch.bool, device=x.device)
    marks = checkpoints(steps)
    due = dict(zip(marks[1:], marks[:-1], strict=True))  # checkpoint -> previous checkpoint
    halvings = torch.zeros((), dtype=torch.long, device=x.device)
    for k in range(steps + 1):
        xk = s["xk"]
        if k < steps:
            xk = xk.detach().requires_grad_(True)
            logits = fwd(xk)
            f = objective(logits, s["y"], s.get("t"))
            (grad,) = torch.autograd.grad(f.sum(), xk)
            ctx.gradients += xk.shape[0]
            xk, f, logits = xk.detach(), f.detach(), logits.detach()
        else:
            with torch.no_grad():
                logits = fwd(xk)
                f = objective(logits, s["y"], s.get("t"))
            grad = torch.zeros_like(xk)
        s["xk"], s["grad"] = xk, grad
        with torch.no_grad():
            pred = logits.argmax(dim=1)
            hit = (pred == s["t"]) if goal_is_target else (pred != s["y"])
            hit &= ~out_broken[s["idx"]] & (not ctx.randomized)  # randomized: one draw decides nothing
            out_x[s["idx"][hit]], out_pred[s["idx"][hit]] = xk[hit], pred[hit]
            out_broken[s["idx"][hit]] = True
            if k == 0:
                s.update(xmax=xk, fmax=f, gmax=grad, pmax=pred, fprev=f, fcheck=f)
            else:
                s["count"] = s["count"] + (f > s["fprev"]).long()
                better = f > s["fmax"]
                b = better.view(-1, *[1] * (x.ndim - 1))
                s.update(xmax=torch.where(b, xk, s["xmax"]), gmax=torch.where(b, grad, s["gmax"]),
                         fmax=torch.where(better, f, s["fmax"]), pmax=torch.where(better, pred, s["pmax"]), fprev=f)
            if k in due:
                # Condition 1: fewer than rho·(interval) steps increased f. Condition 2: the step size was not
                # reduced at the previous checkpoint and the best objective has not moved since.
                cond1 = s["count"].to(x.dtype) < rho * (k - due[k])
                cond2 = ~s["reduced"] & (s["fmax"] <= s["fcheck"])
                red = cond1 | cond2
                halvings += red.sum()
                r = red.view(-1, *[1] * (x.ndim - 1))
                # Halve and restart from the best point (its gradient and value become the current ones).
                s.update(eta=torch.where(red, s["eta"] / 2, s["eta"]), xk=torch.where(r, s["xmax"], s["xk"]),
                         grad=torch.where(r, s["gmax"], s["grad"]), fprev=torch.where(red, s["fmax"], s["fprev"]),
                         reduced=red, fcheck=s["fmax"], count=torch.zeros_like(s["count"]))
            if early_stop and bool(hit.any()):
                leave = hit
                if group is not None:  # the siblings of a broken row leave with it, with their best point
                    gone[s["group"][hit]] = True
                    leave = gone[s["group"]]
                    sib = leave & ~hit
                    out_x[s["idx"][sib]], out_pred[s["idx"][sib]] = s["xmax"][sib], s["pmax"][sib]
                out_loss[s["idx"][leave]] = s["fmax"][leave]
                s = {key: v[~leave] for key, v in s.items()}
            if k == steps or s["idx"].numel() == 0:
                break
            xk, x0, lo_, hi_ = s["xk"], s["x0"], s["lo"], s["hi"]
            eta = s["eta"].view(-1, *[1] * (x.ndim - 1))
            z = proj(xk + eta * steepest_direction(s["grad"], norm), x0, lo_, hi_)
            if k > 0:  # momentum from the second step on
                z = proj(xk + _MOMENTUM * (z - xk) + (1 - _MOMENTUM) * (xk - s["xprev"]), x0, lo_, hi_)
            s["xprev"], s["xk"] = xk, z
    idx = s["idx"]
    keep = ~out_broken[idx]
    if ctx.randomized:  # the last iterate, not the point one lucky draw scored highest; the base re-scores it
        out_loss[idx] = f
        out_x[idx[keep]], out_pred[idx[keep]] = s["xk"][keep], pred[keep]
    else:  # still unbroken: return the highest-objective point
        out_loss[idx] = s["fmax"]
        out_x[idx[keep]], out_pred[idx[keep]] = s["xmax"][keep], s["pmax"][keep]
    return _Run(x=out_x, pred=out_pred, broken=out_broken, loss=out_loss, halvings=int(halvings))


def _merge(run: _Run, idx: torch.Tensor, x_adv: torch.Tensor, adv_pred: torch.Tensor, done: torch.Tensor,
           best: torch.Tensor) -> None:
    """Fold a run on ``idx`` into the batch: broken points are final; unbroken keep their best-objective point."""
    take = ~done[idx] & (run.broken | (run.loss > best[idx]))
    x_adv[idx[take]], adv_pred[idx[take]] = run.x[take], run.pred[take]
    best[idx[take]] = run.loss[take]
    done[idx[run.broken]] = True


class APGD(EvasionAttack):
    r"""Auto-PGD, L∞ or L2 (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks", sec. 3, Algorithm 1), with the cross-entropy (APGD-CE) or the difference of
    logits ratio loss (APGD-DLR, sec. 4).

    Threat model: white-box (gradients), untargeted or targeted, L∞ or L2 budget ``eps`` in raw input space.

    PGD with momentum (α = 0.75, none on the first step) whose step size needs no tuning: it starts at ``2·eps``
    (one per example) and is halved at the checkpoints of :func:`checkpoints` when fewer than ``rho`` of the
    steps since the last checkpoint increased the loss (condition 1), or when the step size was not halved at the
    last checkpoint and the best loss has not improved since (condition 2); after a halving the search restarts
    from the best point found. Projection: a clamp for L∞; for L2 onto the ball then the input bounds (as the
    reference code). The start is a uniform random point in the ball; ``restarts`` repeats the run from new starts
    for the examples still unbroken. Where the authors' code departs from the paper, this follows the paper: the
    checkpoints are ``ceil(p_j · steps)`` (the code truncates interval lengths, which differs below 100 steps),
    condition 2 applies from the first checkpoint on, and after a restart a step counts as increasing the loss
    only if it beats the best point it started from.

    Targeted when ``target_labels`` are given: ``loss="ce"`` maximises ``−CE(z, t)``, ``loss="dlr"`` the
    targeted DLR ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)``. Untargeted DLR is ``−(z_y − max_{i≠y} z_i) / (z_π1 −
    z_π3)``; both are invariant to shifting and scaling the logits (needs ≥ 3 classes, ≥ 4 targeted).

    The first iterate that reaches the goal is returned; an example never broken returns its highest-loss point
    over all restarts. Each example's run is independent of the others, so ``early_stop`` (broken examples leave
    the batch) changes the cost, not the outcome. On a randomized model (see :meth:`EvasionAttack.__call__`) no
    iterate counts as broken on one draw: every example runs all steps and returns its last iterate (over restarts,
    the one with the highest final objective), which the base judges by the majority over fresh draws.
    ``result.extras["step_size_halvings"]`` counts the halvings.

    Building block: :meth:`attack_tensors` runs on tensors already validated and on the model's device (e.g. the
    still-robust subset in an AutoAttack cascade).

    Args:
        eps: budget (radius of the norm ball), e.g. ``8/255`` for L∞ on 0-1 pixels.
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per restart (gradients per example; the paper uses 100).
        loss: ``"ce"`` or ``"dlr"``.
        restarts: number of random restarts (only still-unbroken examples are restarted).
        rho: fraction of steps that must increase the loss for the step size to be kept (condition 1).
        early_stop: drop examples from the batch as soon as they are broken.
        seed: seed of the default generator (reproducible runs); pass ``generator=`` at call time to override.

    Shape:
        x: ``(N, *spec.shape)``, y: ``(N,)``; ``result.x_adv`` as x.

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.evasion.apgd import APGD
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> result = APGD(eps=0.1, steps=20)(target, data.x_test[:64], data.y_test[:64])
        >>> result.robust_accuracy < result.clean_accuracy
        True
    """

    name: ClassVar[str] = "apgd"
    needs: ClassVar[Access] = Access.GRADIENTS
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        norm: str | Norm = "linf",
        steps: int = 100,
        loss: str = "ce",
        restarts: int = 1,
        rho: float = 0.75,
        early_stop: bool = True,
        seed: int | None = 0,
    ) -> None:
        self.eps = eps
        self.norm = norm
        self.steps = steps
        self.loss = loss
        self.restarts = restarts
        self.rho = rho
        self.early_stop = early_stop
        self.seed = seed

    def _check_params(self, target: Target) -> None:
        check_eps(self.eps, Norm.parse(self.norm), target.spec)
        check_positive_int(self.steps, "steps")
        check_positive_int(self.restarts, "restarts")
        _check_rho(self.rho)
        if self.loss not in ("ce", "dlr"):
            raise ParameterError(f"unknown loss {self.loss!r} for APGD; choose 'ce' or 'dlr'.")
        if self.loss == "dlr" and target.spec.n_classes < 3:
            raise ParameterError(f"the DLR loss needs at least 3 classes; the target has {target.spec.n_classes}. "
                                 "Use loss='ce'.")

    def attack_tensors(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run on tensors already validated and on the model's device; returns ``(x_adv, clean_pred, adv_pred)``.

        For ensembles (AutoAttack) that pass on only the still-robust points: ``ctx`` carries the target, the
        bounds and the generator, and accumulates the gradient count and ``notes``.
        """
        self._check_params(ctx.target)
        return self._run_batch(ctx, x, y, target_labels)

    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with fast_layout(ctx, x):  # the same function, in a faster memory layout where it is exactly that
            return self._run(ctx, x, y, target_labels)

    def _run(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target = ctx.target
        assert isinstance(target, TorchTarget)
        norm, eps = Norm.parse(self.norm), float(self.eps)
        targeted = target_labels is not None
        if targeted and self.loss == "dlr" and target.spec.n_classes < 4:
            raise ParameterError(f"the targeted DLR loss needs at least 4 classes; the target has "
                                 f"{target.spec.n_classes}. Use loss='ce'.")
        objective = _objective(self.loss, targeted)
        with target.frozen():
            with torch.no_grad():
                clean_pred = target.differentiable(type(self).__name__)(x).argmax(dim=1)
            done = clean_pred == target_labels if target_labels is not None else clean_pred != y
            done &= not ctx.randomized  # one clean draw decides nothing either
            x_adv, adv_pred = x.clone(), clean_pred.clone()
            best = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
            for _ in range(self.restarts):
                idx = (~done).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                run = _apgd(ctx, x[idx], y[idx], None if target_labels is None else target_labels[idx],
                            objective=objective, goal_is_target=targeted, norm=norm, eps=eps, steps=self.steps,
                            rho=float(self.rho), early_stop=self.early_stop)
                _merge(run, idx, x_adv, adv_pred, done, best)
                ctx.notes["step_size_halvings"] = ctx.notes.get("step_size_halvings", 0) + run.halvings
        return x_adv, clean_pred, adv_pred


class APGDT(EvasionAttack):
    r"""APGD-T, targeted Auto-PGD on the targeted DLR loss for an untargeted goal (Croce & Hein 2020, "Reliable
    evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks", sec. 4–5).

    Threat model: white-box (gradients), untargeted, L∞ or L2 budget ``eps`` in raw input space.

    For each example, the ``n_target_classes`` highest-scoring classes other than the true one (on the clean
    input, at most ``n_classes − 1``) are tried in turn: APGD (:class:`APGD`, Algorithm 1) maximises the targeted
    DLR ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)`` towards that class, ``restarts`` times, on the examples still
    classified correctly. An example counts as broken as soon as any iterate is misclassified (any wrong class,
    not only the target); an example never broken returns its highest targeted-DLR point over all runs. Needs at
    least 4 classes.

    Building block: :meth:`attack_tensors` runs on tensors already validated and on the model's device.

    Args:
        eps: budget (radius of the norm ball), e.g. ``8/255`` for L∞ on 0-1 pixels.
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per target class and restart (the paper uses 100).
        n_target_classes: how many target classes to try (AutoAttack: 9), capped at ``n_classes − 1``.
        restarts: random restarts per target class.
        rho: fraction of steps that must increase the loss for the step size to be kept (condition 1).
        early_stop: drop examples from the batch as soon as they are broken.
        batch_targets: attack all target classes of all still-robust points as one batch (``n_target_classes``
            rows per point, up to 4096 rows at a time) instead of one pass per target; with ``early_stop`` all rows
            of a point leave as soon as one of them breaks it. Same iterations per (point, target) as the passes,
            far fewer Python-level steps; False runs the passes one target after the other (the reference's
            order).
        seed: seed of the default generator (reproducible runs); pass ``generator=`` at call time to override.

    Shape:
        x: ``(N, *spec.shape)``, y: ``(N,)``; ``result.x_adv`` as x.

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.evasion.apgd import APGDT
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> result = APGDT(eps=0.1, steps=20, n_target_classes=3)(target, data.x_test[:32], data.y_test[:32])
        >>> result.robust_accuracy < result.clean_accuracy
        True
    """

    name: ClassVar[str] = "apgd-t"
    needs: ClassVar[Access] = Access.GRADIENTS
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)
    supports_targeted: ClassVar[bool] = False

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        norm: str | Norm = "linf",
        steps: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        rho: float = 0.75,
        early_stop: bool = True,
        batch_targets: bool = True,
        seed: int | None = 0,
    ) -> None:
        self.eps = eps
        self.norm = norm
        self.steps = steps
        self.n_target_classes = n_target_classes
        self.batch_targets = batch_targets
        self.restarts = restarts
        self.rho = rho
        self.early_stop = early_stop
        self.seed = seed

    def _check_params(self, target: Target) -> None:
        check_eps(self.eps, Norm.parse(self.norm), target.spec)
        check_positive_int(self.steps, "steps")
        check_positive_int(self.n_target_classes, "n_target_classes")
        check_positive_int(self.restarts, "restarts")
        _check_rho(self.rho)
        if target.spec.n_classes < 4:
            raise ParameterError(f"APGD-T's targeted DLR loss needs at least 4 classes; the target has "
                                 f"{target.spec.n_classes}. Use APGD(loss='ce') instead.")

    def attack_tensors(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run on tensors already validated and on the model's device; returns ``(x_adv, clean_pred, adv_pred)``.

        ``target_labels`` must be None (APGD-T picks its own targets); see :meth:`APGD.attack_tensors`.
        """
        if target_labels is not None:
            raise ParameterError("APGDT is untargeted only; drop target_labels.")
        self._check_params(ctx.target)
        return self._run_batch(ctx, x, y, None)

    def _run_batch(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with fast_layout(ctx, x):  # the same function, in a faster memory layout where it is exactly that
            return self._run(ctx, x, y, target_labels)

    def _run(
        self, ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, target_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target = ctx.target
        assert isinstance(target, TorchTarget)
        norm, eps = Norm.parse(self.norm), float(self.eps)
        with target.frozen():
            with torch.no_grad():
                logits = target.differentiable(type(self).__name__)(x)
            clean_pred = logits.argmax(dim=1)
            n_t = min(self.n_target_classes, logits.shape[1] - 1)
            ranked = logits.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)[:, :n_t]
            done, objective = (clean_pred != y) & (not ctx.randomized), _objective("dlr", True)
            x_adv, adv_pred = x.clone(), clean_pred.clone()
            best = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
            kw = {"objective": objective, "goal_is_target": False, "norm": norm, "eps": eps, "steps": self.steps,
                  "rho": float(self.rho), "early_stop": self.early_stop}
            if not self.batch_targets:
                for j in range(n_t):
                    for _ in range(self.restarts):
                        idx = (~done).nonzero().squeeze(1)
                        if idx.numel() == 0:
                            break
                        run = _apgd(ctx, x[idx], y[idx], ranked[idx, j], **kw)  # type: ignore[arg-type]
                        _merge(run, idx, x_adv, adv_pred, done, best)
                        ctx.notes["step_size_halvings"] = ctx.notes.get("step_size_halvings", 0) + run.halvings
                return x_adv, clean_pred, adv_pred
            for _ in range(self.restarts):
                j0 = 0
                while j0 < n_t:
                    idx = (~done).nonzero().squeeze(1)
                    m = idx.numel()
                    if m == 0:
                        break
                    # All targets of all still-robust points as one problem (target-major rows), in chunks of at
                    # most _MAX_ROWS rows (one target at least).
                    js = list(range(j0, min(n_t, j0 + max(1, _MAX_ROWS // m))))
                    j0 = js[-1] + 1
                    rows_t = ranked[idx][:, js].T.reshape(-1)
                    group = torch.arange(m, device=x.device).repeat(len(js))
                    xr = x[idx].repeat(len(js), *[1] * (x.ndim - 1))
                    run = _apgd(ctx, xr, y[idx].repeat(len(js)), rows_t, group=group, **kw)  # type: ignore[arg-type]
                    for k in range(len(js)):  # in target order, as the sequential cascade
                        part = slice(k * m, (k + 1) * m)
                        _merge(_Run(x=run.x[part], pred=run.pred[part], broken=run.broken[part],
                                    loss=run.loss[part], halvings=0), idx, x_adv, adv_pred, done, best)
                    ctx.notes["step_size_halvings"] = ctx.notes.get("step_size_halvings", 0) + run.halvings
        return x_adv, clean_pred, adv_pred


def _check_rho(rho: object) -> None:
    if isinstance(rho, bool) or not isinstance(rho, int | float) or not 0.0 <= float(rho) <= 1.0:
        raise ParameterError(f"rho must be a fraction in [0, 1] (paper: 0.75); got {rho!r}.")


def _objective(loss: str, targeted: bool) -> Objective:
    """The per-example objective APGD increases: (targeted) cross-entropy or (targeted) DLR."""

    def objective(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        if not targeted:
            return dlr(logits, y, False) if loss == "dlr" else cross_entropy(logits, y, False)
        assert t is not None
        return dlr_targeted(logits, y, t) if loss == "dlr" else cross_entropy(logits, t, True)

    return objective
