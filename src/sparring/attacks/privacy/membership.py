"""Membership inference by loss threshold (Yeom et al. 2018) and by shadow models (Shokri et al. 2017).

Threat model: score access (the attacker sees the target's probabilities or logits for a labelled example) and, for
the shadow attack, data from the same distribution plus the ability to train models like the target. Both are
*evaluations*: they score examples whose membership the auditor knows and return a
:class:`~sparring.attacks.privacy.metrics.MembershipResult` (ROC, AUC, TPR at low FPR).

This module also holds what every shadow-model attack shares (LiRA too): :data:`Trainer`, the functions that build
one (:func:`torch_trainer`, :func:`zoo_trainer`), random half splits, and the per-example statistics read from a
target's output (:func:`true_class_log_prob`, :func:`scaled_logit`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sparring.attacks.privacy.metrics import MembershipResult
from sparring.attacks.result import Cost
from sparring.errors import InputSpecError, LabelError, ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access, InputSpec

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

Trainer = Callable[[torch.Tensor, torch.Tensor, int], Target]
"""Trains a fresh model like the target on ``(x, y)`` with a seed and returns it as a target (a shadow model)."""


def torch_trainer(
    build: Callable[[], nn.Module], spec: InputSpec, *, epochs: int, lr: float = 1e-3, batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> Trainer:
    """A :data:`Trainer` that builds ``build()`` and trains it with cross-entropy and Adam (the zoo's recipe)."""
    from sparring.data.datasets import Dataset
    from sparring.data.zoo import train_torch_classifier
    from sparring.targets.torch import TorchTarget

    def train(x: torch.Tensor, y: torch.Tensor, seed: int) -> Target:
        ds = Dataset("shadow", x.cpu(), y.cpu(), x[:0].cpu(), y[:0].cpu(), spec)
        model = train_torch_classifier(build(), ds, spec, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        return TorchTarget(model.to(device), spec)

    return train


def zoo_trainer(name: str, *, device: str | torch.device = "cpu") -> Trainer:
    """A :data:`Trainer` that repeats zoo model ``name``'s own recipe (architecture, epochs, custom training)."""
    from sparring.data import zoo
    from sparring.data.datasets import Dataset
    from sparring.targets.sklearn import SklearnTarget
    from sparring.targets.torch import TorchTarget

    e = zoo.entry(name)
    spec = e.spec()
    if e.kind == "sklearn":
        def train_sklearn(x: torch.Tensor, y: torch.Tensor, seed: int) -> Target:
            est = e.build().fit(x.reshape(len(x), -1).cpu().numpy(), y.cpu().numpy())
            return SklearnTarget(est, spec)

        return train_sklearn
    if e.train is None:
        return torch_trainer(e.build, spec, epochs=e.epochs, lr=e.lr, device=device)
    recipe = e.train

    def train_recipe(x: torch.Tensor, y: torch.Tensor, seed: int) -> Target:
        model = e.build()
        recipe(model, Dataset("shadow", x.cpu(), y.cpu(), x[:0].cpu(), y[:0].cpu(), spec), spec)
        return TorchTarget(model.to(device).eval(), spec)

    return train_recipe


def random_halves(n_models: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n_models, n)`` booleans: row ``k`` marks a uniformly random half of the ``n`` examples (⌊n/2⌋ of them)."""
    keys = torch.rand(n_models, n, generator=generator)
    ranks = keys.argsort(dim=1).argsort(dim=1)
    return ranks < n // 2


def balanced_halves(n_models: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n_models, n)`` booleans: every example IN for exactly ``⌊n_models/2⌋`` models, chosen at random.

    The assignment of Carlini et al.'s reference LiRA code: column ``j``'s random keys, argsorted over the models,
    are a uniformly random permutation of the model indices, and the example is IN for the models whose position in
    it is below ``n_models // 2``. Unlike :func:`random_halves` (each *model* gets half of the pool, and how many
    models an example is IN for is left to chance: with 4 models 1 in 16 examples has no IN fit and 1 in 16 no OUT
    fit), every example has both an IN and an OUT fit from 2 models on; each model gets about half of the pool.
    """
    keys = torch.rand(n_models, n, generator=generator)
    return keys.argsort(dim=0) < n_models // 2


def log_probs(target: Target, x: torch.Tensor) -> torch.Tensor:
    """Log-probabilities ``(n, classes)`` from the target's output view (logits or probabilities)."""
    out = target.query(x).double()
    if target.view_output == "logits":
        return torch.log_softmax(out, dim=1)
    return torch.log(out.clamp_min(1e-300))


def true_class_log_prob(lp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log p_y``: minus the cross-entropy loss of each example (the statistic of Yeom et al. 2018)."""
    return lp.gather(1, y.to(lp.device).view(-1, 1)).squeeze(1)


def scaled_logit(lp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini et al. (2022, §IV-B) logit scaling ``φ(p) = log(p_y / (1 − p_y))``, computed stably as
    ``log p_y − logsumexp_{j≠y} log p_j`` so confident outputs (p_y → 1) keep their resolution."""
    yy = y.to(lp.device).view(-1, 1)
    own = lp.gather(1, yy).squeeze(1)
    others = lp.scatter(1, yy, float("-inf")).logsumexp(dim=1)
    return own - others.clamp_min(-745.0)


def check_membership_inputs(target: Target, x: Any, y: Any, member: Any) -> tuple[torch.Tensor, torch.Tensor,
                                                                                     torch.Tensor]:
    """Validate an evaluation set: inputs against the spec, labels, and one boolean membership flag per example."""
    xt, yt = target.spec.validate(x, y)
    if yt is None:
        raise LabelError("membership inference needs the true labels y; got None.")
    m = torch.as_tensor(member).detach().cpu().reshape(-1)
    if m.numel() != xt.shape[0]:
        raise LabelError(f"member needs one flag per example: {xt.shape[0]} examples, {m.numel()} flags.")
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise LabelError("member must be booleans or 0/1 (True = in the training set).")
        m = m.bool()
    if bool(m.all()) or not bool(m.any()):
        raise LabelError(f"member must contain both members and non-members to evaluate an attack; got "
                         f"{int(m.sum())} members of {m.numel()}. Add held-out examples (False) or training "
                         "examples (True).")
    return xt, yt, m


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
                   n_shadow: int = 8, seed: int = 0) -> MembershipResult:
    """Run a membership attack by name (one of ``MEMBERSHIP_ATTACKS``); shadow attacks need ``train``."""
    from sparring.attacks.privacy.lira import LiRA

    if attack not in MEMBERSHIP_ATTACKS:
        raise ParameterError(f"unknown membership attack {attack!r}; choose one of {', '.join(MEMBERSHIP_ATTACKS)}.")
    if attack == "loss-threshold":
        return LossThreshold()(target, x, y, member)
    if train is None:
        raise ParameterError(f"{attack} trains shadow models like the target: give train= (a Trainer, e.g. "
                             "zoo_trainer(name) for a zoo model, or torch_trainer(build, spec, epochs=...)).")
    if attack == "shadow":
        return ShadowModelAttack(n_shadow=n_shadow, seed=seed)(target, x, y, member, train=train)
    return LiRA(n_shadow=n_shadow, online=attack == "lira", seed=seed)(target, x, y, member, train=train)
