"""Least-squares density difference two-sample test (Bu, Ramamohanarao, Leckie, Guo 2016)."""

from __future__ import annotations

from typing import Any

import torch

from sparring.defenses.detect.drift.mmd import median_bandwidth, rbf
from sparring.defenses.detect.drift.result import (
    DriftResult,
    check_alpha,
    check_pair,
    check_positive_int,
    permutation_p,
)
from sparring.errors import ParameterError

__all__ = ["LSDDModel", "lsdd_test"]


class LSDDModel:
    """The pieces of an LSDD estimate that do not depend on which points are reference and which current.

    Features are standardised with a mean and standard deviation (a constant feature keeps its scale): the pooled
    sample's offline, so the permutation test stays exact, the reference's online. The density difference
    ``p - q`` is fitted as ``Σ θ_l k(x, c_l)`` with Gaussian kernels of bandwidth ``sigma`` at ``centres``; with
    ``H_lk = exp(-||c_l - c_k||² / (4 sigma²))`` (the integral of two kernels, up to a constant absorbed in
    ``lam``) and ``h = mean_ref φ - mean_cur φ``, the regularised least-squares fit is ``θ = (H + lam·I)⁻¹ h``
    and LSDD = ``2θᵀh - θᵀHθ = hᵀ Q h`` with ``Q = 2M - MHM``, ``M = (H + lam·I)⁻¹`` (Sugiyama et al. 2013,
    Eq. 5; Bu et al. 2016).
    """

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, centres: torch.Tensor, sigma: float,
                 lam: float) -> None:
        self.mean, self.scale, self.centres, self.sigma, self.lam = mean, scale, centres, sigma, lam
        h = rbf(centres, centres, sigma * 2**0.5)
        m = torch.linalg.inv(h + lam * torch.eye(h.shape[0], dtype=h.dtype, device=h.device))
        self.q = 2 * m - m @ h @ m

    @classmethod
    def fit(cls, standardise: torch.Tensor, pool: torch.Tensor, n_centres: int, sigma: float | None, lam: float,
            gen: torch.Generator) -> LSDDModel:
        """Standardise by the mean and standard deviation of ``standardise``; draw ``n_centres`` centres (and the
        median-heuristic bandwidth) from ``pool`` with ``gen``."""
        mean = standardise.mean(0)
        scale = standardise.std(0) if standardise.shape[0] > 1 else torch.ones_like(mean)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zs = (pool - mean) / scale
        if sigma is None:
            sigma = median_bandwidth(zs, gen)
        pick = torch.randperm(pool.shape[0], generator=gen)[: min(n_centres, pool.shape[0])].to(pool.device)
        return cls(mean, scale, zs[pick], float(sigma), lam)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel features ``φ(x) = k(x, centres)``, ``(n, n_centres)``."""
        return rbf((x - self.mean) / self.scale, self.centres, self.sigma)

    def statistic(self, h: torch.Tensor) -> torch.Tensor:
        """LSDD ``hᵀQh`` for each row of ``h`` (differences of mean features)."""
        out: torch.Tensor = ((h @ self.q) * h).sum(-1)
        return out


def _check_lam(lam: float) -> float:
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not lam > 0:
        raise ParameterError(f"lam must be a positive number (ridge regularisation); got {lam!r}.")
    return float(lam)


def lsdd_test(
    reference: Any, current: Any, *, n_permutations: int = 200, n_centres: int = 100, sigma: float | None = None,
    lam: float = 1e-2, alpha: float = 0.05, seed: int = 0, device: torch.device | str | None = None,
) -> DriftResult:
    """Two-sample test on the least-squares density difference (LSDD, Bu et al. 2016) with a permutation test.

    Standardisation, the bandwidth and the ``n_centres`` kernel centres all come from the pooled sample (so they
    do not depend on the labelling, and the permutation test is exact); the p-value counts the observed
    statistic, ``(1 + #{perm >= obs}) / (1 + P)``.
    Time O((n + m)·n_centres·d + P·n_centres²), memory O((n + m)·n_centres).
    """
    alpha = check_alpha(alpha)
    check_positive_int(n_permutations, "n_permutations")
    check_positive_int(n_centres, "n_centres")
    lam = _check_lam(lam)
    if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma > 0):
        raise ParameterError(f"sigma must be a positive number (kernel bandwidth); got {sigma!r}.")
    a, b = check_pair(reference, current, device=device)
    n, m = a.shape[0], b.shape[0]
    gen = torch.Generator().manual_seed(seed)
    z = torch.cat([a, b])
    model = LSDDModel.fit(z, z, n_centres, sigma, lam, gen)
    phi = model.features(z)
    order = torch.stack([torch.arange(n + m)] + [torch.randperm(n + m, generator=gen)
                                                 for _ in range(n_permutations)]).to(z.device)
    w = torch.full((n_permutations + 1, n + m), -1.0 / m, dtype=z.dtype, device=z.device)
    w.scatter_(1, order[:, :n], 1.0 / n)
    stats = model.statistic(w @ phi)
    p, threshold = permutation_p(float(stats[0]), stats[1:], alpha)
    return DriftResult("lsdd", float(stats[0]), p, alpha, threshold, n, m, (),
                       {"sigma": model.sigma, "n_centres": int(model.centres.shape[0]), "lam": lam,
                        "n_permutations": n_permutations})
