"""Classifier two-sample test (Lopez-Paz and Oquab 2017) with an exact conditional p-value."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sparring.defenses.detect.drift.result import DriftResult, check_alpha, check_pair
from sparring.errors import InputSpecError, ParameterError

__all__ = ["classifier_test"]


def classifier_test(
    reference: Any, current: Any, *, classifier: Any = None, train_fraction: float = 0.5, alpha: float = 0.05,
    seed: int = 0,
) -> DriftResult:
    """Can a classifier tell ``current`` from ``reference``? (C2ST, Lopez-Paz and Oquab 2017.)

    The pooled sample is split at random: ``classifier`` (any scikit-learn estimator with ``fit``/``predict``,
    cloned; default a standardised logistic regression) learns "which sample?" on ``train_fraction`` of it and is
    scored on the rest. The statistic is the held-out accuracy. Under no drift the held-out sample labels are a
    uniformly random assignment given the fitted classifier, so the number of held-out ``current`` examples
    predicted ``current`` is hypergeometric: the p-value is exact for every sample size, with no normal
    approximation and no chance-rate guess. ``threshold`` is the accuracy the test needs to flag drift.
    """
    from scipy.stats import hypergeom
    from sklearn.base import clone

    alpha = check_alpha(alpha)
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, int | float) or not 0 < train_fraction < 1:
        raise ParameterError(f"train_fraction must be in (0, 1), e.g. 0.5; got {train_fraction!r}.")
    a, b = check_pair(reference, current)
    n, m = a.shape[0], b.shape[0]
    z = torch.cat([a, b]).cpu().numpy()
    lab = np.r_[np.zeros(n, dtype=np.int64), np.ones(m, dtype=np.int64)]
    order = np.random.default_rng(seed).permutation(n + m)
    cut = round((n + m) * train_fraction)
    tr, te = order[:cut], order[cut:]
    if len(te) < 1 or len(np.unique(lab[tr])) < 2:
        raise InputSpecError(f"the classifier test needs both samples in its training split and a held-out split; "
                             f"got {n} reference and {m} current examples. Give at least ~10 of each.")
    clf = clone(classifier) if classifier is not None else _default(seed)
    clf.fit(z[tr], lab[tr])
    pred = np.asarray(clf.predict(z[te])).astype(np.int64).reshape(-1)
    total, n1, k1 = len(te), int(lab[te].sum()), int(pred.sum())
    hits = int(((pred == 1) & (lab[te] == 1)).sum())
    acc = float((pred == lab[te]).mean())
    p = float(hypergeom.sf(hits - 1, total, n1, k1))
    # accuracy = (2·hits + total − k1 − n1) / total; the smallest hits with sf(hits − 1) < alpha flags drift
    support = np.arange(max(0, k1 + n1 - total), min(k1, n1) + 1)
    ok = support[hypergeom.sf(support - 1, total, n1, k1) < alpha]
    threshold = (2 * (int(ok[0]) - 1) + total - k1 - n1) / total if len(ok) else math.inf
    return DriftResult("classifier", acc, min(1.0, p), alpha, threshold, n, m, (),
                       {"classifier": type(clf).__name__, "n_train": int(cut), "n_test": total,
                        "held_out_current": n1, "predicted_current": k1})


def _default(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
