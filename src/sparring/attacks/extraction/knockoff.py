"""Surrogate training through a prediction API: Knockoff Nets / Copycat, with four query strategies.

* Orekondy, Schiele, Fritz, "Knockoff Nets: Stealing Functionality of Black-Box Models" (CVPR 2019): query the
  victim with *natural* images (possibly from another distribution), train a surrogate on its answers (soft labels:
  the probability vectors; §4).
* Correia-Silva et al., "Copycat CNN" (IJCNN 2018): the same with *hard* labels (the API's top-1 only).
* Pal et al., "ActiveThief" (AAAI 2020): *active* selection: each round queries the pool points where the current
  surrogate is least certain (smallest top-1 minus top-2 margin).
* Papernot et al., "Practical Black-Box Attacks against Machine Learning" (AsiaCCS 2017), Jacobian-based dataset
  augmentation: *synthetic* queries ``x + λ·sign(∇ₓ F̂_{O(x)}(x))`` grown from a small natural seed.
* *random*: uniform noise within the input bounds (the baseline every strategy must beat).

Threat model: black-box; soft labels need scores, hard labels need labels only. Every query goes through
:meth:`Target.query` / :meth:`Target.query_labels`, so the attack runs unchanged against an HttpTarget and respects
its budget: when the target's own query budget is smaller than the attack's, the last round is cut to what is left
and the attack stops there, returning the surrogate trained on the answers it got, with
``extras["budget_exhausted"] = True`` (the fidelity of an attack cut short is a lower bound, not the risk).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sparring._util import reinit_parameters
from sparring.attacks.extraction.metrics import ExtractionResult, agreement
from sparring.attacks.result import Cost
from sparring.errors import InputSpecError, ParameterError, QueryBudgetExceeded
from sparring.targets.base import Target
from sparring.targets.spec import Access, InputSpec
from sparring.targets.torch import TorchTarget

__all__ = ["KnockoffNets", "default_surrogate"]

Strategy = Literal["natural", "random", "active", "jacobian"]
STRATEGIES: tuple[str, ...] = ("natural", "random", "active", "jacobian")


def default_surrogate(spec: InputSpec) -> nn.Module:
    """A small network for the spec: two conv blocks for images (any side), a two-layer MLP for features."""
    n = spec.n_classes
    if spec.layout == "features":
        return nn.Sequential(nn.Flatten(), nn.Linear(spec.n_features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                             nn.Linear(64, n))
    ch = spec.shape[0] if spec.layout == "chw" else spec.shape[-1]
    layers: list[nn.Module] = [] if spec.layout == "chw" else [_ChannelsFirst()]
    return nn.Sequential(
        *layers, nn.Conv2d(ch, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(32 * 49, 128), nn.ReLU(),
        nn.Linear(128, n),
    )


class _ChannelsFirst(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class KnockoffNets:
    """Steal a classifier by training a surrogate on the victim's answers, within a query budget.

    Threat model: black-box. ``labels="soft"`` trains on the returned probabilities (needs scores; logits are
    softmaxed, top-k outputs renormalised), ``labels="hard"`` on the top-1 label only (needs labels).

    The budget is spent in ``rounds`` equal rounds; after each, the surrogate trains ``epochs`` passes over all
    answers so far (warm start). ``natural`` and ``active`` draw from the attacker's ``pool`` (natural data, any
    distribution); ``jacobian`` draws its first round from the pool, then synthesises; ``random`` needs no pool.

    Args:
        budget: victim queries to spend.
        strategy: ``"natural"``, ``"random"``, ``"active"`` or ``"jacobian"`` (see the module docstring).
        labels: ``"soft"`` or ``"hard"``.
        rounds: query rounds (``active`` and ``jacobian`` adapt between rounds).
        epochs: training passes over the collected answers after each round.
        lr, batch_size: Adam learning rate and minibatch size of surrogate training.
        jacobian_step: λ of Jacobian augmentation, in raw input units.
        architecture: builds the surrogate from the spec (default :func:`default_surrogate`).
        seed: seed of the default generator (query order, initialisation, minibatches).

    Example:
        >>> from sparring import zoo
        >>> victim, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> res = KnockoffNets(budget=300, rounds=1, epochs=10)(victim, data.x_train)
        >>> res.queries
        300
    """

    name = "knockoff"
    needs = Access.LABELS  # hard labels; soft labels need scores (checked at call time)

    def __init__(
        self, *, budget: int = 1000, strategy: Strategy = "natural", labels: Literal["soft", "hard"] = "soft",
        rounds: int = 4, epochs: int = 20, lr: float = 1e-3, batch_size: int = 64, jacobian_step: float = 0.1,
        architecture: Callable[[InputSpec], nn.Module] | None = None, seed: int | None = 0,
    ) -> None:
        self.budget = budget
        self.strategy = strategy
        self.labels = labels
        self.rounds = rounds
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.jacobian_step = jacobian_step
        self.architecture = architecture
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "architecture"}

    def _check_params(self, target: Target, pool: torch.Tensor | None) -> None:
        for name in ("budget", "rounds", "epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(f"{name} must be a positive integer; got {v!r}.")
        if self.rounds > self.budget:
            raise ParameterError(f"rounds ({self.rounds}) cannot exceed the budget ({self.budget}); lower rounds.")
        if self.strategy not in STRATEGIES:
            raise ParameterError(f"strategy must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}.")
        if self.labels not in ("soft", "hard"):
            raise ParameterError(f"labels must be 'soft' or 'hard'; got {self.labels!r}.")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not (self.jacobian_step > 0):
            raise ParameterError(f"lr and jacobian_step must be > 0; got {self.lr!r}, {self.jacobian_step!r}.")
        target.require(Access.SCORES if self.labels == "soft" else Access.LABELS, f"knockoff ({self.labels} labels)")
        if self.strategy != "random" and pool is None:
            raise InputSpecError(
                f"strategy {self.strategy!r} draws queries from the attacker's natural data: pass pool=<inputs> "
                "(any images of the victim's input shape), or use strategy='random'."
            )

    def __call__(
        self, target: Target, pool: torch.Tensor | Any = None, *, eval_x: torch.Tensor | Any = None,
        eval_labels: torch.Tensor | Any = None, eval_y: torch.Tensor | Any = None,
        generator: torch.Generator | None = None,
    ) -> ExtractionResult:
        """Run the attack. ``eval_x`` with ``eval_labels`` (the victim's labels on it, computed by the evaluator)
        and/or ``eval_y`` (true labels) add fidelity/accuracy per round to the history; they cost no queries."""
        pool_t = None if pool is None else target.spec.validate(pool)[0].to(target.device)
        self._check_params(target, pool_t)
        if self.strategy == "active" and pool_t is not None and pool_t.shape[0] < self.budget:
            raise ParameterError(f"active sampling needs a pool of at least budget={self.budget} inputs; got "
                                 f"{pool_t.shape[0]}. Lower the budget or give more data.")
        t0, q0 = time.perf_counter(), target.counter.used
        gen = generator or torch.Generator().manual_seed(0 if self.seed is None else self.seed)
        model = (self.architecture or default_surrogate)(target.spec).to(target.device)
        reinit_parameters(model, int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        surrogate = TorchTarget(model, target.spec)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        sizes = [self.budget // self.rounds + (i < self.budget % self.rounds) for i in range(self.rounds)]
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        unused = None if pool_t is None else torch.randperm(pool_t.shape[0], generator=gen).to(target.device)
        history: list[dict[str, float]] = []
        exhausted = False
        for r, size in enumerate(sizes):
            left = target.counter.remaining
            if left is not None and left < size:  # the victim's budget ends inside this round: spend what is left
                size, exhausted = left, True
            if size == 0:
                break
            x_new, unused = self._select(r, size, surrogate, pool_t, unused, xs, ys, gen)
            try:
                answers = self._answers(target, x_new)
            except QueryBudgetExceeded:  # someone else spent the budget meanwhile: stop with what was answered
                exhausted = True
                break
            xs.append(x_new)
            ys.append(answers)
            _train(surrogate, torch.cat(xs), torch.cat(ys), opt, epochs=self.epochs, batch_size=self.batch_size,
                   gen=gen)
            history.append(_evaluate(surrogate, target.counter.used - q0, eval_x, eval_labels, eval_y))
            if exhausted:
                break
        used = target.counter.used - q0
        surrogate.counter.reset()  # the attacker's own model: what it cost is not the victim's
        spec = target.spec
        sent = torch.cat(xs) if xs else torch.empty((0, *spec.shape), device=target.device)
        return ExtractionResult(
            attack=self.name, params=self.get_params(), cost=Cost(queries=used, seconds=time.perf_counter() - t0),
            surrogate=surrogate, queries=used, history=history, label_mode=self.labels,
            extras={"queries_x": sent, "budget_exhausted": exhausted, "rounds_done": len(history)},
        )

    # ------------------------------------------------------------------ query selection
    def _select(
        self, r: int, size: int, surrogate: TorchTarget, pool: torch.Tensor | None, unused: torch.Tensor | None,
        xs: list[torch.Tensor], ys: list[torch.Tensor], gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        spec = surrogate.spec
        if self.strategy == "random":
            lo, hi = spec.bounds_tensors(surrogate.device)
            u = torch.rand((size, *spec.shape), generator=gen).to(surrogate.device)
            return lo + u * (hi - lo), unused
        assert pool is not None and unused is not None
        if self.strategy == "natural" or r == 0:
            if unused.numel() < size:  # pool exhausted: reuse it in a fresh order (repeated queries still cost)
                unused = torch.cat([unused, torch.randperm(pool.shape[0], generator=gen).to(unused.device)])
            return pool[unused[:size]], unused[size:]
        if self.strategy == "active":
            with torch.no_grad():
                probs = surrogate.query(pool[unused]).softmax(dim=1)
            top2 = probs.topk(2, dim=1).values
            order = (top2[:, 0] - top2[:, 1]).argsort()
            return pool[unused[order[:size]]], unused[order[size:]]
        return _jacobian_augment(surrogate, torch.cat(xs), torch.cat(ys), size, self.jacobian_step, r, gen), unused

    def _answers(self, target: Target, x: torch.Tensor) -> torch.Tensor:
        if self.labels == "hard":
            return F.one_hot(target.query_labels(x).long(), target.spec.n_classes).float().to(x.device)
        scores = target.query(x).float().to(x.device)
        if target.view_output == "logits":
            return scores.softmax(dim=1)
        return scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)


def _train(
    surrogate: TorchTarget, x: torch.Tensor, soft: torch.Tensor, opt: torch.optim.Optimizer, *, epochs: int,
    batch_size: int, gen: torch.Generator,
) -> None:
    """Cross-entropy against the victim's probability vectors (one-hot for hard labels)."""
    model = surrogate.model
    forward = surrogate.differentiable("knockoff training")  # the attacker's own model: its counter is reset after
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
        for s in range(0, x.shape[0], batch_size):
            idx = perm[s : s + batch_size]
            opt.zero_grad(set_to_none=True)
            logp = forward(x[idx]).log_softmax(dim=1)
            loss = -(soft[idx] * logp).sum(dim=1).mean()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    surrogate.counter.reset()


def _jacobian_augment(
    surrogate: TorchTarget, x: torch.Tensor, answers: torch.Tensor, size: int, step: float, r: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """Papernot et al. 2017 (Algorithm 1): move parents along the sign of the surrogate's gradient of the victim's
    class; λ alternates sign every round (their periodic step size) so the set does not drift off the data."""
    idx = torch.randperm(x.shape[0], generator=gen)[:size].to(x.device)
    if idx.numel() < size:
        idx = idx[torch.arange(size, device=x.device) % idx.numel()]
    parents = x[idx].clone().requires_grad_(True)
    cls = answers[idx].argmax(dim=1)
    with surrogate.frozen():
        out = surrogate.differentiable("jacobian augmentation")(parents).gather(1, cls[:, None]).sum()
        (grad,) = torch.autograd.grad(out, parents)
    surrogate.counter.reset()
    lo, hi = surrogate.spec.bounds_tensors(x.device)
    lam = step if r % 2 == 1 else -step
    return torch.max(torch.min(parents.detach() + lam * grad.sign(), hi), lo)


def _evaluate(
    surrogate: TorchTarget, queries: int, x: Any, victim_labels: Any, y: Any,
) -> dict[str, float]:
    row: dict[str, float] = {"queries": float(queries)}
    if x is None:
        return row
    xt, _ = surrogate.spec.validate(x)
    with torch.no_grad():
        pred = surrogate.query_labels(xt.to(surrogate.device)).cpu()
    if victim_labels is not None:
        row["fidelity"] = agreement(pred, victim_labels)
    if y is not None:
        row["accuracy"] = agreement(pred, y)
    return row
