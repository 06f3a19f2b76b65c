"""Per-feature two-sample tests with a multiple-testing correction: Kolmogorov–Smirnov, Cramér–von Mises, χ²."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from sparring.defenses.detect.drift.result import (
    DriftResult,
    FeatureDrift,
    check_alpha,
    check_pair,
    check_positive_int,
    correct,
)
from sparring.errors import InputSpecError, ParameterError

__all__ = ["univariate_test"]


def univariate_test(
    reference: Any, current: Any, *, test: Literal["ks", "cvm"] = "ks", categorical: Sequence[int] = (),
    correction: Literal["bonferroni", "fdr"] = "bonferroni", alpha: float = 0.05, n_permutations: int = 2000,
    seed: int = 0,
) -> DriftResult:
    """Test every feature of ``current`` against the same feature of ``reference``, then correct for the number of
    features.

    * continuous features: the two-sample Kolmogorov–Smirnov test (scipy: exact for small samples, asymptotic
      beyond; Massey 1951; conservative under ties) or the two-sample Cramér–von Mises test (Anderson 1962,
      ``T = nm/N² Σ_k (F_n(z_k) − G_m(z_k))²`` over the pooled points, tied points sharing one ECDF value) with a
      permutation p-value from ``n_permutations`` relabellings shared by all features. The closed-form CvM null
      distribution assumes no ties, and pixels, counts and rounded values are full of them (scipy reports
      p ≈ 1e-10 for two halves of one shuffled digits set). The smallest permutation p-value is
      ``1 / (1 + n_permutations)``: keep ``n_permutations`` above ``n_features / alpha`` for Bonferroni;
    * features listed in ``categorical`` (column indices; values are category codes): Pearson's χ² test of
      homogeneity on the category counts of the two samples (categories unseen in both are left out).

    The per-feature p-values are adjusted by Bonferroni (family-wise error ≤ alpha) or by Benjamini and Hochberg
    (1995, ``"fdr"``: false discovery rate ≤ alpha for independent or positively dependent tests). The result's
    ``p_value`` is the smallest adjusted p-value, so ``drift`` (p < alpha) is exactly "the procedure rejects at
    least one feature"; ``statistic`` is that feature's statistic. A feature that is one and the same constant in
    both samples has nothing to test: statistic 0, p-value 1.
    """
    alpha = check_alpha(alpha)
    if test not in ("ks", "cvm"):
        raise ParameterError(f"test must be 'ks' or 'cvm'; got {test!r}.")
    a, b = check_pair(reference, current, min_reference=1, min_current=1)
    d = a.shape[1]
    cat = _categorical(categorical, d)
    if test == "cvm" and min(a.shape[0], b.shape[0]) < 2:
        raise InputSpecError(f"the Cramér–von Mises test needs at least 2 examples per sample; got "
                             f"{a.shape[0]} and {b.shape[0]}.")
    check_positive_int(n_permutations, "n_permutations")
    an, bn = a.cpu().numpy(), b.cpu().numpy()
    stats, pvals, names = np.zeros(d), np.ones(d), []
    labels = _relabellings(an.shape[0], bn.shape[0], n_permutations, seed) if test == "cvm" else None
    for j in range(d):
        if j in cat:
            stats[j], pvals[j] = _chi2(an[:, j], bn[:, j], j)
            names.append("chi2")
        else:
            stats[j], pvals[j] = _ks(an[:, j], bn[:, j]) if labels is None else _cvm(an[:, j], bn[:, j], labels)
            names.append(test)
    adj = correct(pvals, correction)
    best = int(np.argmin(adj))
    feats = tuple(FeatureDrift(j, names[j], float(stats[j]), float(pvals[j]), float(adj[j]), bool(adj[j] < alpha))
                  for j in range(d))
    method = test if not cat else ("chi2" if len(cat) == d else f"{test}+chi2")
    return DriftResult(f"univariate-{method}", float(stats[best]), float(adj[best]), alpha, None, a.shape[0],
                       b.shape[0], feats, {"correction": correction, "n_features": d,
                                           "n_drifted": int((adj < alpha).sum())})


def _categorical(categorical: Sequence[int], d: int) -> set[int]:
    cat = set()
    for c in categorical:
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= int(c) < d:
            raise ParameterError(f"categorical must list column indices in 0..{d - 1}; got {c!r}.")
        cat.add(int(c))
    return cat


def _ks(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import ks_2samp

    if x.min() == x.max() == y.min() == y.max():
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
        r = ks_2samp(x, y)  # scipy falls back to the asymptotic p-value itself when the exact one fails
    return float(r.statistic), float(min(1.0, max(0.0, r.pvalue)))


def _relabellings(n: int, m: int, n_perm: int, seed: int) -> np.ndarray:
    """``(1 + n_perm, n + m)`` weights ``1/n`` (reference) and ``-1/m`` (current); row 0 is the observed split."""
    rng = np.random.default_rng(seed)
    base = np.r_[np.full(n, 1.0 / n), np.full(m, -1.0 / m)]
    return np.stack([base] + [rng.permutation(base) for _ in range(n_perm)])


def _cvm(x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Cramér–von Mises statistic with ties and its permutation p-value (rows of ``labels``: splits)."""
    z = np.r_[x, y]
    n, m, total = len(x), len(y), len(x) + len(y)
    if z.min() == z.max():
        return 0.0, 1.0  # one value in both samples: identical distributions (scipy reports p ≈ 0.01 here)
    order = np.argsort(z, kind="stable")
    zs = z[order]
    ends = np.r_[zs[1:] != zs[:-1], True]  # last pooled point of each group of tied values
    sizes = np.diff(np.r_[-1, np.flatnonzero(ends)])
    diff = np.cumsum(labels[:, order], axis=1)[:, ends]  # F_n - G_m at each distinct value, every split
    t = (n * m / total**2) * (diff**2 * sizes).sum(1)
    p = (1 + int((t[1:] >= t[0] - 1e-12 * abs(t[0])).sum())) / len(t)
    return float(t[0]), p


def _chi2(x: np.ndarray, y: np.ndarray, j: int) -> tuple[float, float]:
    from scipy.stats import chi2_contingency

    if not (np.all(x == np.round(x)) and np.all(y == np.round(y))):
        raise InputSpecError(f"categorical feature {j} has non-integer values (e.g. {_first_fraction(x, y)}); "
                             "encode categories as integer codes or leave the column out of categorical.")
    cats, inv = np.unique(np.r_[x, y], return_inverse=True)
    if len(cats) < 2:
        return 0.0, 1.0  # one category in both samples: identical distributions
    table = np.stack([np.bincount(inv[: len(x)], minlength=len(cats)), np.bincount(inv[len(x):],
                                                                                   minlength=len(cats))])
    r = chi2_contingency(table, correction=False)
    return float(r.statistic), float(r.pvalue)


def _first_fraction(x: np.ndarray, y: np.ndarray) -> float:
    v = np.r_[x, y]
    return float(v[v != np.round(v)][0])
