"""The model zoo: small real models on bundled data, trained deterministically on first use and cached.

>>> from sparring import zoo
>>> zoo.names()
['breast-cancer-logreg', 'breast-cancer-mlp', 'digits-cnn', 'digits-cnn-pgdat', 'digits-cnn-trades', 'digits-mlp']
>>> target = zoo.load("digits-cnn")   # trains in seconds on first use, then loads from the cache
>>> data = zoo.data("digits-cnn")

Torch models are cached as checksummed state dicts in :func:`~sparring.data.cache.cache_dir` (``$SPARRING_CACHE_DIR``
overrides it); a corrupted cache file is detected, reported and rebuilt. The scikit-learn model trains in
milliseconds and is never cached (so no pickle is ever loaded).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import nn

from sparring._util import reinit_parameters
from sparring.data import models
from sparring.data.cache import cache_dir, load_state, save_state
from sparring.data.datasets import Dataset, load_breast_cancer, load_digits
from sparring.errors import ParameterError
from sparring.targets.base import Target
from sparring.targets.sklearn import SklearnTarget
from sparring.targets.spec import InputSpec
from sparring.targets.torch import TorchTarget

__all__ = ["ZooEntry", "data", "entry", "load", "names", "train_torch_classifier"]


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: its dataset, architecture and training recipe."""

    name: str
    description: str
    dataset: Callable[[], Dataset]
    kind: str  # "torch" or "sklearn"
    build: Callable[[], Any]
    epochs: int = 0
    lr: float = 1e-3
    normalise: Callable[[], tuple[tuple[float, ...], tuple[float, ...]]] | None = None  # (mean, std) inside
    version: int = 1
    train: Callable[[nn.Module, Dataset, InputSpec], object] | None = None
    """A training recipe run on the freshly built model instead of :func:`train_torch_classifier` (e.g. adversarial
    training); it must train the model in place, deterministically, without touching the global RNG state."""

    def spec(self) -> InputSpec:
        base = self.dataset().spec
        if self.normalise is None:
            return base
        mean, std = self.normalise()
        d = base.to_dict()
        d["mean"], d["std"] = list(mean), list(std)
        return InputSpec.from_dict(d)


@cache
def _digits28() -> Dataset:
    return load_digits(28)


@cache
def _breast_cancer() -> Dataset:
    return load_breast_cancer()


@cache
def _signs() -> Dataset:
    from sparring.data.signs import load_signs

    return load_signs()


def _bc_stats() -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = _breast_cancer().x_train
    return tuple(x.mean(0).tolist()), tuple(x.std(0).tolist())


def _sk_logreg() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


_ENTRIES: dict[str, ZooEntry] = {}


def _register(e: ZooEntry) -> None:
    _ENTRIES[e.name] = e


_register(ZooEntry("digits-cnn", "small CNN on UCI digits upsampled to 1×28×28 (≈98% test accuracy)",
                   _digits28, "torch", models.digits_cnn, epochs=12, normalise=lambda: ((0.2,), (0.3,))))
_register(ZooEntry("digits-mlp", "MLP on UCI digits upsampled to 1×28×28 (≈97% test accuracy)",
                   _digits28, "torch", models.digits_mlp, epochs=20))
_register(ZooEntry("breast-cancer-mlp", "MLP on the 30 Wisconsin breast-cancer features, standardised inside",
                   _breast_cancer, "torch", models.tabular_mlp, epochs=60, normalise=_bc_stats))
# Adversarially trained digits CNNs: same architecture, data and normalisation as digits-cnn, L∞ eps 0.1.
# Few inner steps, Adam with a one-cycle learning rate, 6 epochs: ≈ 45 s of training on a 2-core CPU.
_AT_EPS, _AT_STEPS, _AT_EPOCHS, _AT_LR, _AT_BATCH = 0.1, 5, 6, 3e-3, 32


def _adversarial_recipe(method: str) -> Callable[[nn.Module, Dataset, InputSpec], object]:
    def recipe(model: nn.Module, ds: Dataset, spec: InputSpec) -> object:
        from sparring.defenses.training.adversarial import adversarial_train  # defences import data: defer

        return adversarial_train(TorchTarget(model, spec), ds, method=method, eps=_AT_EPS, steps=_AT_STEPS,
                                 epochs=_AT_EPOCHS, lr=_AT_LR, schedule="cyclic", batch_size=_AT_BATCH, seed=0)

    return recipe


_register(ZooEntry("digits-cnn-pgdat", "digits-cnn trained with PGD adversarial training (Madry et al. 2018), "
                   "L∞ eps 0.1", _digits28, "torch", models.digits_cnn, epochs=_AT_EPOCHS, lr=_AT_LR,
                   normalise=lambda: ((0.2,), (0.3,)), train=_adversarial_recipe("pgd")))
_register(ZooEntry("digits-cnn-trades", "digits-cnn trained with TRADES (Zhang et al. 2019, beta 6), L∞ eps 0.1",
                   _digits28, "torch", models.digits_cnn, epochs=_AT_EPOCHS, lr=_AT_LR,
                   normalise=lambda: ((0.2,), (0.3,)), train=_adversarial_recipe("trades")))
_register(ZooEntry("breast-cancer-logreg", "scikit-learn StandardScaler + LogisticRegression on breast cancer",
                   _breast_cancer, "sklearn", _sk_logreg))
_register(ZooEntry("signs-cnn", "all-conv CNN (global average pooling) on synthetic 3×32×32 traffic signs, 8 classes "
                   "(≈87% test accuracy; sparring.data.signs)", _signs, "torch", models.signs_cnn, epochs=12, lr=2e-3))


# --- tabular models (issue 9) ---
@cache
def _transactions() -> Dataset:
    from sparring.data.transactions import load_transactions

    return load_transactions()


def _tx_stats() -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = _transactions().x_train
    return tuple(x.mean(0).tolist()), tuple(x.std(0).clamp_min(1e-6).tolist())


def _sk_fraud_gbm() -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=0)


_register(ZooEntry("fraud-gbm", "scikit-learn GradientBoosting (60 trees, depth 3) on synthetic transactions "
                   "(fraud = class 1)", _transactions, "sklearn", _sk_fraud_gbm))
_register(ZooEntry("fraud-mlp", "MLP on the 17 synthetic transaction features, standardised inside (fraud = class 1)",
                   _transactions, "torch", lambda: models.tabular_mlp(n_features=17), epochs=15, lr=3e-3,
                   normalise=_tx_stats))
# --- end tabular models ---


# --- text models (issue 8) ---
# Text models take strings, not tensors: they are listed here, built by sparring.data.text.load_text_model.
def _text_only(name: str) -> Callable[[], Any]:
    def refuse() -> Any:
        raise ParameterError(
            f"{name!r} is a text model (strings in, not tensors): load it with "
            f"sparring.data.text.load_text_model({name!r}) and its data with sparring.data.text.load_sms_spam(), "
            "or run `sparring attack-text`."
        )

    return refuse


for _name, _desc in (
    ("spam-tfidf-logreg", "text: TF-IDF word 1-2-grams + char 2-5-grams, logistic regression, SMS spam (≈99%)"),
    ("spam-minilm", "text: all-MiniLM-L6-v2 embeddings + linear head, SMS spam (≈99%; needs sparring[text])"),
):
    _register(ZooEntry(_name, _desc, _text_only(_name), "text", _text_only(_name)))
# --- end text models ---


def names() -> list[str]:
    """Names of the zoo models."""
    return sorted(_ENTRIES)


def entry(name: str) -> ZooEntry:
    try:
        return _ENTRIES[name]
    except KeyError:
        raise ParameterError(f"unknown zoo model {name!r}; available: {', '.join(names())}.") from None


def data(name: str) -> Dataset:
    """The dataset a zoo model was trained on (with its fixed train/test split)."""
    return entry(name).dataset()


def load(name: str, *, device: str | torch.device = "cpu", retrain: bool = False, **target_kwargs: Any) -> Target:
    """A ready target for zoo model ``name``: trained on first use (seconds on a CPU), then read from the cache.

    Args:
        name: one of :func:`names`.
        device: where to put a torch model.
        retrain: ignore the cache and train again.
        **target_kwargs: passed to the target (e.g. ``query_budget=1000``, ``access=Access.SCORES``).
    """
    e = entry(name)
    spec = e.spec()
    if e.kind == "sklearn":
        ds = e.dataset()
        est = e.build().fit(ds.x_train.reshape(len(ds.x_train), -1).numpy(), ds.y_train.numpy())
        return SklearnTarget(est, spec, **target_kwargs)
    model: nn.Module = e.build()
    path = cache_dir() / "zoo" / f"{name}-v{e.version}-torch{torch.__version__.split('+')[0]}.pt"
    state = None if retrain else load_state(path)
    if state is not None:
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            warnings.warn(f"cached model {path} does not fit {name} ({exc}); rebuilding.", RuntimeWarning,
                          stacklevel=2)
            state = None
    if state is None:
        if e.train is not None:
            e.train(model, e.dataset(), spec)
        else:
            train_torch_classifier(model, e.dataset(), spec, epochs=e.epochs, lr=e.lr, seed=0)
        save_state(path, model.state_dict())
    return TorchTarget(model.to(device).eval(), spec, **target_kwargs)


def train_torch_classifier(
    model: nn.Module, ds: Dataset, spec: InputSpec, *, epochs: int, lr: float = 1e-3, batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """Plain cross-entropy training with Adam, deterministic for a seed (global RNG state is left untouched)."""
    norm = spec.norm_tensors()
    gen = torch.Generator().manual_seed(seed)
    reinit_parameters(model, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = ds.x_train, ds.y_train
    if norm is not None:
        x = (x - norm[0]) / norm[1]
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch_size):
            idx = perm[s : s + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()
