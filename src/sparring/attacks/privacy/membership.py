"""Membership inference by loss threshold (Yeom et al. 2018) and by shadow models (Shokri et al. 2017).

Threat model: score access (the attacker sees the target's probabilities or logits for a labelled example) and, for
the shadow attack, data from the same distribution plus the ability to train models like the target. Both are
*evaluations*: they score examples whose membership the auditor knows and return a
:class:`~sparring.attacks.privacy.metrics.MembershipResult` (ROC, AUC, TPR at low FPR).

What every shadow-model attack shares (LiRA too) lives in :mod:`sparring.attacks.privacy.shadow` (trainers, random
half splits, per-example statistics); it is re-exported here. :func:`run_membership` runs any of them by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sparring.attacks.privacy.lira import LiRA
from sparring.attacks.privacy.metrics import MembershipResult
from sparring.attacks.privacy.shadow import (
    Trainer,
    balanced_halves,
    check_membership_inputs,
    log_probs,
    random_halves,
    scaled_logit,
    torch_trainer,
    true_class_log_prob,
    zoo_trainer,
)
from sparring.attacks.result import Cost
from sparring.errors import InputSpecError, LabelError, ParameterError
from sparring.executors import Executor
from sparring.targets.base import Target
from sparring.targets.spec import Access

__all__ = [
    "MEMBERSHIP_ATTACKS",
    "LossThreshold",
    "ShadowModelAttack",
    "Trainer",
    "balanced_halves",
    "log_probs",
    "random_halves",
    "run_membership",
    "scaled_logit",
    "torch_trainer",
    "true_class_log_prob",
    "zoo_membership_data",
    "zoo_trainer",
]


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParameterError(f"{name} must be an integer >= {low}; got {value!r}.")


class LossThreshold:
    """Membership by loss threshold (Yeom, Giacomelli, Fredrikson, Jha 2018, "Privacy Risk in Machine Learning",
    Alg. 1 / Thm. 3): an example is called a member when its loss is below a threshold τ, since a model that
    overfits has lower loss on its training data.

    The score is ``log p_y`` (minus the loss), so the ROC covers every τ. Yeom et al. set τ to the average training
    loss (known to the attacker); give it as ``threshold`` to also get that operating point in ``extras``.

    Threat model: score access, one query per example; no shadow models.
    """

    name = "loss-threshold"
    needs = Access.SCORES

    def __init__(self, *, threshold: float | None = None) -> None:
        self.threshold = threshold

    def get_params(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def score(self, target: Target, x: Any, y: Any) -> torch.Tensor:
        """Membership scores (``log p_y``, higher = more likely a member) for labelled examples."""
        target.require(Access.SCORES, self.name)
        xt, yt = target.spec.validate(x, y)
        if yt is None:
            raise LabelError("the loss-threshold attack needs the true labels y; got None.")
        return true_class_log_prob(log_probs(target, xt), yt).cpu()

    def __call__(self, target: Target, x: Any, y: Any, member: Any) -> MembershipResult:
        if self.threshold is not None and (not isinstance(self.threshold, int | float) or self.threshold < 0):
            raise ParameterError(f"threshold is a loss, a number >= 0 (e.g. the mean training loss); got "
                                 f"{self.threshold!r}.")
        t0 = time.perf_counter()
        q0 = target.counter.used
        xt, yt, m = check_membership_inputs(target, x, y, member)
        scores = self.score(target, xt, yt)
        extras: dict[str, Any] = {}
        if self.threshold is not None:
            flagged = -scores < self.threshold
            extras.update(threshold=self.threshold, tpr=float(flagged[m].double().mean()),
                          fpr=float(flagged[~m].double().mean()))
        return MembershipResult(self.name, self.get_params(), Cost(target.counter.used - q0, 0,
                                                                   time.perf_counter() - t0),
                                scores=scores, member=m, extras=extras)


class ShadowModelAttack:
    """Membership inference with shadow models (Shokri, Stronati, Song, Shmatikov 2017, §IV–V).

    ``n_shadow`` models are trained like the target (``train``) on random halves of the attacker's data; each
    shadow's prediction vectors on its own half are labelled *in*, on the other half *out*. One attack classifier
    per class (the paper's per-class attack models; here a one-hidden-layer MLP on log-probabilities, all classes
    trained in one batched loop) learns in vs out, and scores the target's prediction vectors.

    Args:
        n_shadow: shadow models (≥ 1).
        hidden: width of each attack MLP.
        attack_steps: full-batch Adam steps per attack model.
        seed: seeds the splits, the shadow training and the attack models.

    Threat model: score access to the target; data from the target's distribution; the target's training recipe.
    """

    name = "shadow"
    needs = Access.SCORES

    def __init__(self, *, n_shadow: int = 4, hidden: int = 32, attack_steps: int = 200, seed: int = 0) -> None:
        self.n_shadow = n_shadow
        self.hidden = hidden
        self.attack_steps = attack_steps
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {"n_shadow": self.n_shadow, "hidden": self.hidden, "attack_steps": self.attack_steps,
                "seed": self.seed}

    def __call__(self, target: Target, x: Any, y: Any, member: Any, *, train: Trainer,
                 shadow_data: tuple[Any, Any] | None = None) -> MembershipResult:
        """Score ``(x, y)`` (membership known: ``member``). ``shadow_data`` is the attacker's own labelled data
        (default: ``(x, y)`` itself, the candidate pool, as in LiRA's evaluation)."""
        _check_int("n_shadow", self.n_shadow, 1)
        _check_int("hidden", self.hidden, 1)
        _check_int("attack_steps", self.attack_steps, 1)
        target.require(Access.SCORES, self.name)
        t0 = time.perf_counter()
        q0 = target.counter.used
        xt, yt, m = check_membership_inputs(target, x, y, member)
        xs, ys = (xt, yt) if shadow_data is None else target.spec.validate(*shadow_data)
        if ys is None or len(xs) < 4:
            raise InputSpecError(f"shadow_data needs at least 4 labelled examples; got {len(xs)}.")
        gen = torch.Generator().manual_seed(self.seed)
        halves = random_halves(self.n_shadow, len(xs), gen)
        feats, labels, inside = [], [], []
        for k in range(self.n_shadow):
            shadow = train(xs[halves[k]], ys[halves[k]], self.seed * 1000 + k)
            feats.append(_features(log_probs(shadow, xs)))
            labels.append(ys)
            inside.append(halves[k])
        f, lab, ins = torch.cat(feats), torch.cat(labels), torch.cat(inside)
        target_f = _features(log_probs(target, xt))
        score_fn = self._fit(f, lab.cpu(), ins, target.spec.n_classes, gen)
        with torch.no_grad():
            scores = score_fn(target_f, yt.cpu()).double()
        counts_in = torch.bincount(lab.cpu()[ins], minlength=target.spec.n_classes)
        counts_out = torch.bincount(lab.cpu()[~ins], minlength=target.spec.n_classes)
        trained = (counts_in > 0) & (counts_out > 0)
        scores = torch.where(trained[yt.cpu()], scores, torch.zeros_like(scores))  # no attack model: no evidence
        return MembershipResult(self.name, self.get_params(), Cost(target.counter.used - q0, 0,
                                                                   time.perf_counter() - t0),
                                scores=scores, member=m, extras={"n_shadow_examples": len(xs)})

    def _fit(self, f: torch.Tensor, cls: torch.Tensor, inside: torch.Tensor, n_classes: int,
             gen: torch.Generator) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Train the per-class attack MLPs together: each example only touches its class's weights, and Adam is
        per-parameter, so this equals training the ``n_classes`` models separately (one optimisation loop)."""
        d, h = f.shape[1], self.hidden

        def uniform(*shape: int, fan_in: int) -> torch.Tensor:
            bound = float(fan_in) ** -0.5
            t: torch.Tensor = (torch.rand(shape, generator=gen) * 2 - 1) * bound
            return t.requires_grad_(True)

        w1, b1 = uniform(n_classes, d, h, fan_in=d), uniform(n_classes, h, fan_in=d)
        w2, b2 = uniform(n_classes, h, fan_in=h), uniform(n_classes, fan_in=h)

        def forward(feats: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            hidden = torch.relu((feats @ w1.permute(1, 0, 2).reshape(d, -1)).view(-1, n_classes, h) + b1)
            out: torch.Tensor = (hidden * w2).sum(2) + b2  # every class's model, then each example's own class
            return out.gather(1, c.view(-1, 1)).squeeze(1)

        weight = 1.0 / torch.bincount(cls, minlength=n_classes).clamp_min(1).float()[cls]
        opt = torch.optim.Adam([w1, b1, w2, b2], lr=1e-2, weight_decay=1e-4)
        target = inside.float()
        for _ in range(self.attack_steps):
            opt.zero_grad(set_to_none=True)
            per = nn.functional.binary_cross_entropy_with_logits(forward(f, cls), target, reduction="none")
            loss = (per * weight).sum()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        return forward


def _features(lp: torch.Tensor) -> torch.Tensor:
    """Attack-model input: the log-probability vector, clipped so saturated outputs stay finite (float32, CPU)."""
    return lp.clamp_min(-30.0).float().cpu()


MEMBERSHIP_ATTACKS = ("loss-threshold", "shadow", "lira", "lira-offline")


def zoo_membership_data(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An evaluation set for zoo model ``name``: up to ``n`` training examples (members) and ``n`` test examples
    (non-members), with the membership flags."""
    from sparring.data import zoo

    _check_int("n", n, 1)
    ds = zoo.data(name)
    k = min(n, len(ds.x_train), len(ds.x_test))
    x = torch.cat([ds.x_train[:k], ds.x_test[:k]])
    y = torch.cat([ds.y_train[:k], ds.y_test[:k]])
    return x, y, torch.arange(2 * k) < k


def run_membership(attack: str, target: Target, x: Any, y: Any, member: Any, *, train: Trainer | None = None,
                   n_shadow: int = 8, seed: int = 0, executor: Executor | None = None) -> MembershipResult:
    """Run a membership attack by name (one of ``MEMBERSHIP_ATTACKS``); shadow attacks need ``train``. LiRA trains
    its shadow models as one task each on ``executor`` (:mod:`sparring.executors`; default: in this process)."""
    if attack not in MEMBERSHIP_ATTACKS:
        raise ParameterError(f"unknown membership attack {attack!r}; choose one of {', '.join(MEMBERSHIP_ATTACKS)}.")
    if attack == "loss-threshold":
        return LossThreshold()(target, x, y, member)
    if train is None:
        raise ParameterError(f"{attack} trains shadow models like the target: give train= (a Trainer, e.g. "
                             "zoo_trainer(name) for a zoo model, or torch_trainer(build, spec, epochs=...)).")
    if attack == "shadow":
        return ShadowModelAttack(n_shadow=n_shadow, seed=seed)(target, x, y, member, train=train)
    return LiRA(n_shadow=n_shadow, online=attack == "lira", seed=seed)(target, x, y, member, train=train,
                                                                        executor=executor)
