r"""Randomized smoothing: certified L2 robustness from Gaussian noise (Cohen, Rosenfeld, Kolter 2019).

Cohen, Rosenfeld & Kolter (2019), "Certified Adversarial Robustness via Randomized Smoothing", ICML. The smoothed
classifier of a base classifier ``f`` is

.. math:: g(x) = \arg\max_c \; P(f(x + \varepsilon) = c), \qquad \varepsilon \sim N(0, \sigma^2 I).

If the top class ``c_A`` has probability at least ``p_A > 1/2`` under the noise, ``g`` predicts ``c_A`` everywhere
in the L2 ball of radius ``σ Φ⁻¹(p_A)`` around ``x`` (Theorem 1 with ``p_B = 1 - p_A``). :meth:`SmoothedClassifier.
certify` is the paper's CERTIFY (Algorithm 1, "certify"): ``n0`` selection samples choose ``ĉ_A``, ``n`` separate
estimation samples give a one-sided Clopper–Pearson lower bound on ``p_A``; :meth:`SmoothedClassifier.predict` is
PREDICT (a two-sided binomial test between the top two classes). Both abstain (label ``-1``) rather than guess.

Threat model: any attacker, white-box included, moving ``x`` within an L2 ball in raw input space; the guarantee is
about the *smoothed* classifier ``g`` and holds with probability ``1 - α`` over the sampling noise. Only the base
classifier's labels are used, so any :class:`~sparring.targets.Target` can be smoothed (white-box or behind an API);
every noisy sample is one query and counts against the target's budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import torch
from scipy import stats

from sparring._progress import progress_bar
from sparring.attacks.result import Cost
from sparring.errors import ParameterError, QueryBudgetExceeded
from sparring.executors import Executor
from sparring.targets.base import Target

__all__ = [
    "ABSTAIN",
    "CertifyResult",
    "SmoothedClassifier",
    "binomial_p_value",
    "certified_accuracy_curve",
    "certified_radius",
    "lower_confidence_bound",
]

ABSTAIN = -1
"""The label returned where the smoothed classifier abstains."""

_GATHER_ABOVE = 16  # a batch spanning more inputs than this adds them with one gather instead of a loop of slices


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ParameterError(f"{name} must be a positive integer (a number of noise samples); got {value!r}.")
    return int(value)


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ParameterError(f"alpha (the failure probability) must be a number in (0, 1), e.g. 0.001; got {alpha!r}.")
    return float(alpha)


@overload
def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float: ...
@overload
def lower_confidence_bound(n_a: np.ndarray, n: int, alpha: float) -> np.ndarray: ...
def lower_confidence_bound(n_a: int | np.ndarray, n: int, alpha: float) -> float | np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper–Pearson lower bound on a binomial proportion from ``n_a`` of ``n``.

    ``Beta(alpha; n_a, n - n_a + 1)``, and 0 where ``n_a = 0``. With ``n_a = n`` it is exactly ``alpha ** (1/n)``.
    """
    n = _check_count(n, "n")
    a = _check_alpha(alpha)
    counts = np.asarray(n_a, dtype=np.int64)
    if np.any(counts < 0) or np.any(counts > n):
        raise ParameterError(f"n_a must lie in 0..n={n}; got values in [{counts.min()}, {counts.max()}].")
    safe = np.maximum(counts, 1)  # Beta(·; 0, ·) is undefined; the bound is 0 there
    bound = np.where(counts > 0, stats.beta.ppf(a, safe, n - counts + 1), 0.0)
    return float(bound) if np.ndim(n_a) == 0 else bound


@overload
def certified_radius(n_a: int, n: int, sigma: float, alpha: float) -> float: ...
@overload
def certified_radius(n_a: np.ndarray, n: int, sigma: float, alpha: float) -> np.ndarray: ...
def certified_radius(n_a: int | np.ndarray, n: int, sigma: float, alpha: float) -> float | np.ndarray:
    """The L2 radius CERTIFY reports when ``n_a`` of ``n`` estimation samples hit the selected class.

    ``σ Φ⁻¹(p_A)`` with ``p_A`` the :func:`lower_confidence_bound`; 0 where ``p_A <= 1/2`` (CERTIFY abstains).
    The largest radius ``n`` samples can certify is ``σ Φ⁻¹(alpha ** (1/n))`` (3.811σ for n = 100 000, α = 0.001).
    """
    s = _check_sigma(sigma)
    p = lower_confidence_bound(np.asarray(n_a), n, alpha)
    radius = np.where(p > 0.5, s * stats.norm.ppf(np.clip(p, 0.5, 1.0)), 0.0)
    return float(radius) if np.ndim(n_a) == 0 else radius


def _check_sigma(sigma: object) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not math.isfinite(sigma) or sigma <= 0:
        raise ParameterError(
            f"sigma (the noise standard deviation) must be a finite number > 0 in raw input units, e.g. 0.25 for "
            f"0-1 pixels; got {sigma!r}."
        )
    return float(sigma)


def _like(v: torch.Tensor, ref: Any) -> Any:
    return v.detach().cpu().numpy() if isinstance(ref, np.ndarray) else v.detach().to(ref.device)


def _np(v: Any) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


@dataclass
class CertifyResult:
    """The outcome of :meth:`SmoothedClassifier.certify` on a batch. Arrays are numpy if the inputs were numpy,
    else tensors on the inputs' device.

    Attributes:
        labels: ``ĉ_A`` where certified, ``-1`` (:data:`ABSTAIN`) where CERTIFY abstained.
        radii: certified L2 radius in raw input units (0 where abstained).
        p_lower: the one-sided ``(1 - α)`` lower confidence bound on ``p_A``.
        top_class: ``ĉ_A``, the class chosen by the selection samples (also where CERTIFY abstained).
        counts: ``(N, n_classes)`` base-classifier votes among the ``n`` estimation samples.
        counts_selection: ``(N, n_classes)`` votes among the ``n0`` selection samples.
        y: the true labels, if given.
        correct: ``labels == y`` (an abstention is never correct), if ``y`` was given.
        params: sigma, n0, n, alpha, batch_size and whether a generator was passed.
        cost: ``queries`` = noise samples evaluated, ``seconds`` = wall-clock time.
    """

    labels: Any
    radii: Any
    p_lower: Any
    top_class: Any
    counts: Any
    counts_selection: Any
    y: Any = None
    correct: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def abstain_rate(self) -> float:
        return float(np.mean(_np(self.labels) == ABSTAIN))

    @property
    def max_radius(self) -> float:
        """The largest radius these parameters can certify (every estimation sample on ``ĉ_A``)."""
        p = self.params
        return certified_radius(int(p["n"]), int(p["n"]), float(p["sigma"]), float(p["alpha"]))

    def _correct(self) -> np.ndarray:
        if self.correct is None:
            raise ParameterError("certified accuracy needs the true labels; pass y to certify(x, y).")
        return _np(self.correct).astype(bool)

    @property
    def smoothed_accuracy(self) -> float:
        """The accuracy of the smoothed classifier as Cohen et al. (2019, §4) report it: the certified accuracy at
        radius 0, the share of inputs on which CERTIFY returns the true label. An abstention is never correct."""
        return self.certified_accuracy(0.0)

    @property
    def clean_accuracy(self) -> float:
        """Share of inputs whose *selected* class ``ĉ_A`` is the true label, abstentions included (the class
        CERTIFY would have returned had it not abstained). Not a certified figure: it is at least
        :attr:`smoothed_accuracy`, and the two differ by the correct guesses among the abstentions."""
        self._correct()
        return float(np.mean(_np(self.top_class) == _np(self.y)))

    def certified_accuracy(self, radius: float) -> float:
        """Share of inputs classified correctly *and* certified with radius ``>= radius`` (Cohen et al. §4)."""
        r = float(radius)
        if not math.isfinite(r) or r < 0:
            raise ParameterError(f"radius must be a finite number >= 0; got {radius!r}.")
        return float(np.mean(self._correct() & (_np(self.radii) >= r)))

    def curve(self, radii: Sequence[float]) -> list[tuple[float, float]]:
        """``[(r, certified accuracy at r), ...]`` for each radius (non-increasing in r)."""
        return [(float(r), self.certified_accuracy(r)) for r in radii]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest for reports."""
        radii = _np(self.radii)
        kept = _np(self.labels) != ABSTAIN
        out: dict[str, Any] = {
            "defense": "randomized-smoothing",
            "params": dict(self.params),
            "cost": self.cost.to_dict(),
            "n": self.n,
            "abstain_rate": self.abstain_rate,
            "max_radius": self.max_radius,
            "mean_radius": float(radii[kept].mean()) if kept.any() else 0.0,
            "median_radius": float(np.median(radii)),
        }
        if self.correct is not None:
            out["smoothed_accuracy"] = self.smoothed_accuracy
            out["clean_accuracy"] = self.clean_accuracy
            sigma = float(self.params["sigma"])
            out["certified_accuracy"] = {f"{r:g}": a for r, a in self.curve([0.0, sigma / 2, sigma, 2 * sigma])}
        return out


def certified_accuracy_curve(
    results_by_sigma: Mapping[float, CertifyResult], radii: Sequence[float]
) -> dict[float, list[tuple[float, float]]]:
    """Certified accuracy against radius for several noise levels: ``{sigma: [(r, accuracy), ...]}``.

    Cohen et al. (2019, Fig. 4) compare σ this way: small σ certifies more points at small radii, large σ reaches
    larger radii. The upper envelope over σ is ``max`` per radius.
    """
    return {float(s): res.curve(radii) for s, res in results_by_sigma.items()}


class SmoothedClassifier:
    """The Gaussian-smoothed version ``g`` of a base classifier, with Cohen et al.'s PREDICT and CERTIFY.

    Args:
        target: the base classifier ``f``; only its labels are used (any access level). Ideally trained with
            Gaussian noise of the same ``sigma`` (:func:`sparring.defenses.training.noise.train_with_noise`).
        sigma: noise standard deviation in raw input units (the units of ``spec.bounds``); noisy inputs are not
            clipped, and normalisation happens inside the target, after the noise.
        batch_size: noise samples per model call; ``None`` uses the target's ``batch_size`` (a larger value is
            split again by the target). Samples of several inputs share a batch when ``n`` is small.
        seed: seed of the default generator (used when no ``generator`` is passed at call time).

    Example:
        >>> from sparring.defenses.training.noise import noisy_digits_target
        >>> target = noisy_digits_target(0.25, size=8, epochs=5)
        >>> from sparring.data.datasets import load_digits
        >>> data = load_digits(8)
        >>> smoothed = SmoothedClassifier(target, sigma=0.25)
        >>> result = smoothed.certify(data.x_test[:20], data.y_test[:20], n=1000)
        >>> result.certified_accuracy(0.25) <= result.certified_accuracy(0.0)
        True
    """

    def __init__(self, target: Target, sigma: float, *, batch_size: int | None = None, seed: int | None = 0) -> None:
        if not isinstance(target, Target):
            raise ParameterError(f"target must be a sparring Target; got {type(target).__name__}.")
        self.target = target
        self.sigma = _check_sigma(sigma)
        if batch_size is not None:
            _check_count(batch_size, "batch_size")
        self.batch_size = batch_size
        self.seed = seed

    def __repr__(self) -> str:
        return f"SmoothedClassifier({type(self.target).__name__}, sigma={self.sigma:g}, batch_size={self.batch_size})"

    # ------------------------------------------------------------------ the paper's two procedures
    def predict(
        self, x: Any, *, n: int = 100, alpha: float = 0.001, generator: torch.Generator | None = None
    ) -> Any:
        """PREDICT (Cohen et al. 2019, Algorithm 1): the smoothed label of each input, or ``-1`` to abstain.

        ``n`` noise samples per input vote; the top two classes' counts ``n_A``, ``n_B`` go through a two-sided
        binomial test against ``p = 1/2``; if its p-value exceeds ``alpha`` the prediction abstains. The probability
        of returning a class other than ``g(x)`` is at most ``alpha`` (Theorem 2).

        Returns the labels as the same kind as ``x`` (numpy for numpy, a tensor on x's device for a tensor).
        """
        n = _check_count(n, "n")
        a = _check_alpha(alpha)
        xt, _ = self.target.spec.validate(x)
        gen = self._generator(generator)
        self._check_budget(xt.shape[0] * n)
        counts = self.sample_counts(xt, n, generator=gen)
        top2 = counts.topk(2, dim=1)
        n_a, n_b = _np(top2.values[:, 0]), _np(top2.values[:, 1])
        pval = binomial_p_value(n_a, n_a + n_b)
        labels = torch.where(torch.from_numpy(pval > a).to(counts.device), ABSTAIN, top2.indices[:, 0])
        return _like(labels, x if isinstance(x, np.ndarray | torch.Tensor) else xt)

    def certify(
        self,
        x: Any,
        y: Any = None,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        generator: torch.Generator | None = None,
        progress: bool = False,
        executor: Executor | None = None,
        shard_size: int | None = None,
    ) -> CertifyResult:
        """CERTIFY (Cohen et al. 2019, Algorithm 1): a label and a certified L2 radius for each input, or abstain.

        Guarantee: with probability at least 1 − α over the noise, the smoothed classifier g's prediction at x is ĉA
        for every x' with ||x' − x||₂ < radius. (Where CERTIFY abstains nothing is claimed.)

        ``n0`` selection samples choose ``ĉ_A`` (the most frequent base prediction); ``n`` *separate* estimation
        samples count ``n_A`` votes for it; ``p_A`` is the one-sided ``(1 - α)`` Clopper–Pearson lower bound, and
        the radius is ``σ Φ⁻¹(p_A)`` if ``p_A > 1/2``, else CERTIFY abstains (label ``-1``, radius 0).

        Args:
            x: inputs ``(N, *spec.shape)`` within the spec's bounds (tensor or numpy).
            y: optional true labels, for :meth:`CertifyResult.certified_accuracy`.
            n0: selection samples per input (100 in the paper).
            n: estimation samples per input (100 000 in the paper); the largest certifiable radius grows with n.
            alpha: failure probability of the guarantee.
            generator: source of the noise; default a fresh generator seeded with ``seed``.
            progress: draw a progress bar over model calls.
            executor, shard_size: certify the inputs in shards of ``shard_size`` points (default 64 with an
                executor) as tasks of ``executor`` (:mod:`sparring.executors`; default local); shard ``i`` draws its
                noise from a generator seeded from the job's seed (``seed``, or one number drawn from
                ``generator``) and ``i`` (:mod:`sparring.defenses.certify.sharded`), so the certificates depend on
                the shard size, never on the executor or its number of workers.

        Raises:
            QueryBudgetExceeded: before any sample is drawn, if the target's budget cannot pay ``N * (n0 + n)``.
        """
        n0, n = _check_count(n0, "n0"), _check_count(n, "n")
        a = _check_alpha(alpha)
        xt, yt = self.target.spec.validate(x, y)
        ref = x if isinstance(x, np.ndarray | torch.Tensor) else xt
        gen = self._generator(generator)
        self._check_budget(xt.shape[0] * (n0 + n))
        if executor is not None or shard_size is not None:
            seed = (0 if self.seed is None else int(self.seed)) if generator is None else int(
                torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device))
            return self._certify_sharded(xt, yt, ref, n0, n, a, seed, executor, shard_size)
        t0, q0 = time.perf_counter(), self.target.counter.used
        counts0 = self.sample_counts(xt, n0, generator=gen, progress=progress)
        top = counts0.argmax(dim=1)
        counts = self.sample_counts(xt, n, generator=gen, progress=progress)
        n_a = counts.gather(1, top[:, None]).squeeze(1)
        p_lower = lower_confidence_bound(_np(n_a), n, a)
        radii = certified_radius(_np(n_a), n, self.sigma, a)  # 0 exactly where p_lower <= 1/2
        labels = torch.where(torch.from_numpy(p_lower > 0.5).to(top.device), top, ABSTAIN)
        cost = Cost(queries=self.target.counter.used - q0, seconds=time.perf_counter() - t0)
        params = {"sigma": self.sigma, "n0": n0, "n": n, "alpha": a, "batch_size": self._batch(),
                  "seed": self.seed if generator is None else "generator"}
        correct = None if yt is None else _like(labels == yt.to(labels.device), ref)
        return CertifyResult(
            labels=_like(labels, ref), radii=_like(torch.from_numpy(radii), ref),
            p_lower=_like(torch.from_numpy(p_lower), ref), top_class=_like(top, ref), counts=_like(counts, ref),
            counts_selection=_like(counts0, ref), y=None if yt is None else _like(yt, ref), correct=correct,
            params=params, cost=cost,
        )

    def _certify_sharded(self, xt: torch.Tensor, yt: torch.Tensor | None, ref: Any, n0: int, n: int, alpha: float,
                         seed: int, executor: Executor | None, shard_size: int | None) -> CertifyResult:
        from sparring.defenses.certify.sharded import run_shards

        t0 = time.perf_counter()
        m, size = run_shards(_certify_shard, self.target, (self.sigma, self.batch_size, n0, n, alpha), xt, yt,
                             seed=seed, executor=executor, shard_size=shard_size)

        def back(k: str) -> Any:
            return _like(torch.from_numpy(m[k]), ref) if k in m else None

        params = {"sigma": self.sigma, "n0": n0, "n": n, "alpha": alpha, "batch_size": self._batch(), "seed": seed,
                  "shard_size": size}
        return CertifyResult(labels=back("labels"), radii=back("radii"), p_lower=back("p_lower"),
                             top_class=back("top_class"), counts=back("counts"),
                             counts_selection=back("counts_selection"), y=back("y"), correct=back("correct"),
                             params=params, cost=Cost(queries=int(m["queries"]), seconds=time.perf_counter() - t0))

    # ------------------------------------------------------------------ Monte Carlo sampling
    def sample_counts(
        self, x: torch.Tensor, n: int, *, generator: torch.Generator | None = None, progress: bool = False
    ) -> torch.Tensor:
        """Votes of the base classifier on ``n`` noisy copies of each input: ``(N, n_classes)`` int64 counts.

        ``x`` must already be a valid float tensor (see ``spec.validate``). The ``N * n`` samples form one stream cut
        into batches of ``batch_size``, so a batch may hold samples of several inputs; noise is drawn on the model's
        device and votes are counted there with ``torch.bincount``; nothing goes back to the host in the loop.
        """
        n = _check_count(n, "n")
        t = self.target
        dev = t.device
        dtype: torch.dtype = getattr(t, "dtype", torch.float32)
        gen = self._generator(generator)
        xs = x.to(dev, dtype)
        m, c, bs = xs.shape[0], t.spec.n_classes, self._batch()
        total = m * n
        counts = torch.zeros(m * c, dtype=torch.int64, device=dev)
        buf = torch.empty((min(bs, total), *xs.shape[1:]), device=dev, dtype=dtype)
        starts = range(0, total, bs)
        for start in progress_bar(starts, total=len(starts), description="smoothing", enabled=progress):
            stop = min(start + bs, total)
            first, last = start // n, (stop - 1) // n
            noisy = buf[: stop - start].normal_(0.0, self.sigma, generator=gen)  # one buffer, refilled in place
            if first == last:  # all samples belong to one input (n >= batch size): broadcast, no gather
                noisy.add_(xs[first])
                keys = t.query_labels(noisy).to(dev)
            else:  # samples of several inputs share the batch: key = (input - first) * n_classes + vote
                owner = torch.arange(start, stop, device=dev).div_(n, rounding_mode="floor")
                if last - first < _GATHER_ABOVE:  # a few long runs: broadcast each input over its run
                    for i in range(first, last + 1):
                        noisy[max(i * n, start) - start : min((i + 1) * n, stop) - start].add_(xs[i])
                else:  # many short runs (small n): one gather
                    noisy.add_(xs.index_select(0, owner))
                keys = (owner - first) * c + t.query_labels(noisy).to(dev)
            counts[first * c : (last + 1) * c] += torch.bincount(keys, minlength=(last - first + 1) * c)
        return counts.reshape(m, c)

    def _batch(self) -> int:
        return self.batch_size if self.batch_size is not None else self.target.batch_size

    def _generator(self, gen: torch.Generator | None) -> torch.Generator:
        dev = self.target.device
        if gen is not None:
            if not isinstance(gen, torch.Generator):
                raise ParameterError(f"generator must be a torch.Generator; got {type(gen).__name__}.")
            if gen.device.type != dev.type:
                raise ParameterError(
                    f"the generator lives on {gen.device} but the model on {dev}; create it with "
                    f"torch.Generator(device='{dev}')."
                )
            return gen
        return torch.Generator(device=dev).manual_seed(0 if self.seed is None else int(self.seed))

    def _check_budget(self, needed: int) -> None:
        counter = self.target.counter
        left = counter.remaining
        if left is not None and needed > left:
            raise QueryBudgetExceeded(
                f"smoothing needs {needed} noise samples but the target's query budget has {left} left "
                f"({counter.used} of {counter.budget} used). Lower n/n0, certify fewer inputs, or raise the budget.",
                used=counter.used, budget=counter.budget or 0, requested=needed,
            )


def _certify_shard(shared: tuple[Any, float, int | None, int, int, float],
                   task: tuple[Any, Any, int]) -> dict[str, Any]:
    """One shard of a sharded CERTIFY as an executor task: its points with the shard's own generator; numpy out."""
    shipped, sigma, batch_size, n0, n, alpha = shared
    smoothed = SmoothedClassifier(shipped.get(), sigma, batch_size=batch_size)
    x, y, seed = task
    r = smoothed.certify(x, y, n0=n0, n=n, alpha=alpha,
                         generator=torch.Generator(device=smoothed.target.device).manual_seed(seed))
    out: dict[str, Any] = {k: None if getattr(r, k) is None else np.asarray(getattr(r, k))
                           for k in ("labels", "radii", "p_lower", "top_class", "counts", "counts_selection", "y",
                                     "correct")}
    out["queries"] = r.cost.queries
    return out


def binomial_p_value(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Two-sided binomial test of ``k`` successes in ``n`` trials against ``p = 1/2``, vectorised.

    Equal to ``scipy.stats.binomtest(k, n, 0.5).pvalue``: the distribution is symmetric, so the p-value is
    ``min(1, 2 P(X <= min(k, n - k)))``.
    """
    k, n = np.asarray(k, dtype=np.int64), np.asarray(n, dtype=np.int64)
    return np.asarray(np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(k, n - k), n, 0.5)), dtype=np.float64)
