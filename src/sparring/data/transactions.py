"""A seeded synthetic card-transactions dataset with a fraud label, and the constraints of its feature space.

Each row is one card transaction seen with its 24-hour context: the amount, the number of items, the hour, the
distance from the cardholder's home, whether it is online, how many transactions the card made in 24 hours, the
prior 24-hour total and the derived total (``total_24h = prior_total_24h + amount``), the account's age, recent
failed logins, the credit limit, and the merchant category (one-hot). The fraud label comes from a hidden logistic
risk rule (large amounts, risky categories, night hours, distance, online, young accounts, failed logins, high
utilisation) plus logistic noise, so no model can reach 100 %.

What a fraudster can change is declared in :func:`transactions_constraints`: amount, items, hour, distance,
channel and merchant category are mutable; the 24-hour count can only increase (splitting adds transactions);
history, account age, failed logins and credit limit are immutable; the 24-hour total follows the amount and may not
exceed the credit limit (a linear inequality).

Example:
    >>> ds = load_transactions(n=400)
    >>> ds.x_train.shape[1] == len(TRANSACTION_FEATURES)
    True
    >>> c = transactions_constraints()
    >>> bool(c.check(ds.x_test, ds.x_test).ok.all())
    True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sparring.data.datasets import Dataset, _split
from sparring.errors import ParameterError
from sparring.targets.constraints import FeatureConstraints
from sparring.targets.spec import InputSpec

__all__ = ["MERCHANT_CATEGORIES", "TRANSACTION_FEATURES", "breast_cancer_constraints", "generate_transactions",
           "load_transactions", "transactions_constraints"]

MERCHANT_CATEGORIES = ("grocery", "restaurant", "fuel", "electronics", "travel", "gambling")
TRANSACTION_FEATURES = (
    "amount", "n_items", "hour", "distance_km", "online", "n_tx_24h", "prior_total_24h", "total_24h",
    "account_age_days", "failed_logins_7d", "credit_limit", *(f"merchant_{m}" for m in MERCHANT_CATEGORIES),
)
_CAT_P = np.array([0.30, 0.20, 0.15, 0.15, 0.10, 0.10])
_CAT_MEAN_AMOUNT = np.array([60.0, 40.0, 50.0, 300.0, 500.0, 100.0])
_CAT_RISK = np.array([0.0, 0.0, 0.0, 1.3, 0.7, 1.5])


def transactions_constraints() -> FeatureConstraints:
    """What an attacker controls in a card transaction (see the module docstring), with per-unit costs."""
    cats = [f"merchant_{m}" for m in MERCHANT_CATEGORIES]
    return FeatureConstraints.from_dict({
        "features": [
            {"name": "amount", "low": 1.0, "high": 5000.0, "cost": 1 / 1000},   # $1000 less costs 1
            {"name": "n_items", "low": 1, "high": 30, "type": "integer", "cost": 0.02},
            {"name": "hour", "low": 0, "high": 23, "type": "integer", "cost": 0.02},
            {"name": "distance_km", "low": 0.0, "high": 3000.0, "cost": 1 / 100},   # 100 km costs 1
            {"name": "online", "type": "binary", "cost": 0.5},
            {"name": "n_tx_24h", "low": 1, "high": 60, "type": "integer", "direction": "increase", "cost": 0.1},
            {"name": "prior_total_24h", "low": 0.0, "high": 20000.0, "mutable": False},
            {"name": "total_24h", "low": 1.0, "high": 25000.0},
            {"name": "account_age_days", "low": 0, "high": 3650, "type": "integer", "mutable": False},
            {"name": "failed_logins_7d", "low": 0, "high": 20, "type": "integer", "mutable": False},
            {"name": "credit_limit", "low": 500.0, "high": 20000.0, "mutable": False},
            *({"name": n, "type": "binary"} for n in cats),
        ],
        "one_hot": [{"name": "merchant", "features": cats, "cost": 0.5}],
        "derived": [{"feature": "total_24h", "terms": {"prior_total_24h": 1.0, "amount": 1.0}}],
        "inequalities": [{"name": "within_credit_limit", "terms": {"total_24h": 1.0, "credit_limit": -1.0},
                          "rhs": 0.0}],
    })


def breast_cancer_constraints() -> FeatureConstraints:
    """The shipped example spec for :func:`~sparring.data.load_breast_cancer` as a stand-in risk model.

    ``data/bundled/breast_cancer_constraints.json``: the 10 ``*_error`` features (standard errors computed by the
    imaging system) are immutable, the ``mean_*`` and ``worst_*`` measurements may be altered within the observed
    range, and each ``worst_*`` value stays at least its ``mean_*`` (10 linear inequalities).
    """
    return FeatureConstraints.load(Path(__file__).parent / "bundled" / "breast_cancer_constraints.json")


def generate_transactions(n: int, *, seed: int = 0, fraud_rate: float = 0.12) -> tuple[np.ndarray, np.ndarray]:
    """``n`` transactions ``(n, 17)`` float32 and labels (1 = fraud), deterministic for a seed.

    Args:
        n: number of rows (>= 50).
        seed: seed of the generator.
        fraud_rate: approximate share of fraud; the risk rule's intercept is set to reach it.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 50:
        raise ParameterError(f"n must be an integer >= 50; got {n!r}.")
    if not 0.01 <= fraud_rate <= 0.5:
        raise ParameterError(f"fraud_rate must be in [0.01, 0.5]; got {fraud_rate!r}.")
    rng = np.random.default_rng(seed)
    cat = rng.choice(len(MERCHANT_CATEGORIES), size=n, p=_CAT_P)
    age = np.clip(rng.exponential(900.0, n), 0, 3650).round()
    limit = np.clip(rng.lognormal(np.log(4000.0), 0.6, n), 500.0, 20000.0).round(0)
    amount = np.clip(rng.lognormal(np.log(_CAT_MEAN_AMOUNT[cat]), 0.9), 1.0, np.minimum(5000.0, 0.9 * limit))
    amount = amount.round(2)
    n_prior = rng.poisson(2.0, n)
    prior = np.clip(np.array([rng.lognormal(np.log(80.0), 0.8, k).sum() for k in n_prior]), 0.0,
                    np.minimum(20000.0, limit - amount)).round(2)
    hour = np.mod(np.round(rng.normal(14.0, 4.5, n)), 24)
    distance = np.clip(rng.exponential(15.0, n) * rng.choice([1.0, 20.0], size=n, p=[0.9, 0.1]), 0, 3000).round(1)
    online = (rng.random(n) < 0.3).astype(np.float64)
    items = np.clip(1 + rng.poisson(2.0, n), 1, 30)
    failed = np.clip(rng.poisson(0.25, n), 0, 20)
    n_tx = np.clip(n_prior + 1, 1, 60)
    risk = (1.3 * np.log1p(amount / 100.0) + _CAT_RISK[cat] + 1.2 * (hour <= 5) + 0.8 * np.log1p(distance / 50.0)
            + 0.8 * online + 0.4 * failed - 0.45 * np.log1p(age / 30.0) + 2.0 * (prior + amount) / limit
            + 0.12 * n_tx + rng.logistic(0.0, 0.3, n))
    y = (risk > np.quantile(risk, 1.0 - fraud_rate)).astype(np.int64)
    x = np.column_stack([amount, items, hour, distance, online, n_tx, prior, prior + amount, age, failed, limit,
                         np.eye(len(MERCHANT_CATEGORIES))[cat]]).astype(np.float32)
    x[:, 7] = x[:, 6] + x[:, 0]  # the derived total, exact in float32
    return x, y


def load_transactions(n: int = 6000, *, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """The synthetic transactions as a :class:`Dataset` (stratified split; spec bounds = the constraints' bounds).

    Class 0 is ``"legit"``, class 1 ``"fraud"``; the constraints are :func:`transactions_constraints`.
    """
    x, y = generate_transactions(n, seed=seed)
    c = transactions_constraints()
    train, test = _split(len(y), y, test_fraction, seed)
    spec = InputSpec(shape=(x.shape[1],), n_classes=2, layout="features", class_names=("legit", "fraud"),
                     bounds=(c.vector("low").tolist(), c.vector("high").tolist()))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return Dataset("transactions", xt[train], yt[train], xt[test], yt[test], spec)
