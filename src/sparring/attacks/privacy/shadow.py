"""What every shadow-model membership attack shares (the shadow-model attack of Shokri et al. 2017 and LiRA of
Carlini et al. 2022): the :data:`Trainer` that builds a model like the target (:func:`torch_trainer`,
:func:`zoo_trainer`), random half splits of the attacker's pool (:func:`random_halves`, :func:`balanced_halves`),
the per-example statistics read from a target's output (:func:`log_probs`, :func:`true_class_log_prob`,
:func:`scaled_logit`) and the validation of an evaluation set (:func:`check_membership_inputs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparring.errors import LabelError
from sparring.targets.base import Target
from sparring.targets.spec import InputSpec

__all__ = [
    "Trainer",
    "balanced_halves",
    "check_membership_inputs",
    "log_probs",
    "random_halves",
    "scaled_logit",
    "torch_trainer",
    "true_class_log_prob",
    "zoo_trainer",
]

Trainer = Callable[[torch.Tensor, torch.Tensor, int], Target]
"""Trains a fresh model like the target on ``(x, y)`` with a seed and returns it as a target (a shadow model)."""


def torch_trainer(
    build: Callable[[], nn.Module], spec: InputSpec, *, epochs: int, lr: float = 1e-3, batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> Trainer:
    """A :data:`Trainer` that builds ``build()`` and trains it with cross-entropy and Adam (the zoo's recipe).

    The trainer pickles when ``build`` does (a module-level function or class), so shadow models can be trained on
    worker processes (:mod:`sparring.executors`)."""
    return _TorchTrainer(build, spec, epochs, lr, batch_size, str(device))


@dataclass(frozen=True)
class _TorchTrainer:
    build: Callable[[], nn.Module]
    spec: InputSpec
    epochs: int
    lr: float
    batch_size: int
    device: str

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> Target:
        from sparring.data.datasets import Dataset
        from sparring.data.zoo import train_torch_classifier
        from sparring.targets.torch import TorchTarget

        ds = Dataset("shadow", x.cpu(), y.cpu(), x[:0].cpu(), y[:0].cpu(), self.spec)
        model = train_torch_classifier(self.build(), ds, self.spec, epochs=self.epochs, lr=self.lr,
                                       batch_size=self.batch_size, seed=seed)
        return TorchTarget(model.to(self.device), self.spec)


def zoo_trainer(name: str, *, device: str | torch.device = "cpu") -> Trainer:
    """A :data:`Trainer` that repeats zoo model ``name``'s own recipe (architecture, epochs, custom training).

    It pickles (it holds the zoo name only), so shadow models can be trained on worker processes."""
    from sparring.data import zoo

    e = zoo.entry(name)
    if e.kind != "sklearn" and e.train is None:
        return torch_trainer(e.build, e.spec(), epochs=e.epochs, lr=e.lr, device=device)
    return _ZooTrainer(name, str(device))


@dataclass(frozen=True)
class _ZooTrainer:
    name: str
    device: str

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> Target:
        from sparring.data import zoo
        from sparring.data.datasets import Dataset
        from sparring.targets.sklearn import SklearnTarget
        from sparring.targets.torch import TorchTarget

        e = zoo.entry(self.name)
        spec = e.spec()
        if e.kind == "sklearn":
            est = e.build().fit(x.reshape(len(x), -1).cpu().numpy(), y.cpu().numpy())
            return SklearnTarget(est, spec)
        assert e.train is not None
        model = e.build()
        e.train(model, Dataset("shadow", x.cpu(), y.cpu(), x[:0].cpu(), y[:0].cpu(), spec), spec)
        return TorchTarget(model.to(self.device).eval(), spec)


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
