r"""Detectors on a model's own features and outputs: Mahalanobis distance (Lee et al. 2018), energy (Liu et al.
2020) and maximum softmax probability (Hendrycks & Gimpel 2017).

All three score an input (higher: more suspicious), set a threshold for a false-positive rate on clean inputs with
:meth:`calibrate`, flag with :meth:`detect`, and expose ``differentiable_score`` so that
:func:`~sparring.defenses.detect.evaluate.detector_aware_pgd` can attack them adaptively. None of them is robust to
that attacker (Carlini & Wagner 2017): report :func:`~sparring.defenses.detect.evaluate.evaluate` under it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from sparring.defenses.detect.evaluate import calibrate
from sparring.errors import ParameterError
from sparring.targets.base import Target, _like
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["EnergyDetector", "MahalanobisDetector", "MaxSoftmaxDetector", "default_feature_layers"]

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)
_RIDGE = 1e-6  # relative ridge added to the tied covariance before inversion (features can be rank-deficient)


def _check_fpr_value(fpr: object) -> float:
    if isinstance(fpr, bool) or not isinstance(fpr, int | float) or not 0 < fpr < 1:
        raise ParameterError(f"fpr must be a number in (0, 1), e.g. 0.05 for 5% false positives; got {fpr!r}.")
    return float(fpr)


def _detect(score: torch.Tensor, threshold: float | None, ref: Any) -> Any:
    if threshold is None:
        raise ParameterError("the detector has no threshold yet: call calibrate(x_clean) first, or pass threshold=.")
    return _like(score > threshold, ref)


def _check_threshold(threshold: object) -> float | None:
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)
                                  or not math.isfinite(threshold)):
        raise ParameterError(f"threshold must be a finite number or None (then call calibrate); got {threshold!r}.")
    return None if threshold is None else float(threshold)


def _white_box(target: Target, who: str) -> TorchTarget:
    if not isinstance(target, TorchTarget):
        raise ParameterError(f"{who} needs a TorchTarget (white-box); the detector wraps {type(target).__name__}.")
    return target


# ---------------------------------------------------------------------------------------------------- features
def default_feature_layers(model: nn.Module) -> list[str]:
    """Names of the leaf modules whose output feeds a layer with parameters (a conv or linear layer's input).

    For the zoo ``digits_cnn`` these are the two pooling layers and the last hidden ReLU (the penultimate features);
    ``nn.Flatten`` is skipped for the module before it. Lee et al. (2018) likewise take the end of every block.
    """
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    out: list[str] = []
    for i in range(1, len(leaves)):
        if not any(True for _ in leaves[i][1].parameters(recurse=False)):
            continue
        j = i - 1
        while j >= 0 and isinstance(leaves[j][1], nn.Flatten):
            j -= 1
        if j >= 0 and not any(True for _ in leaves[j][1].parameters(recurse=False)) and leaves[j][0] not in out:
            out.append(leaves[j][0])
    return out


@contextmanager
def _capture(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that store each named layer's output (spatial maps averaged to one value per channel)."""
    mods = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name: str) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def fn(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            store[name] = out.mean(dim=tuple(range(2, out.ndim))) if out.ndim > 2 else out.reshape(out.shape[0], -1)

        return fn

    for name in layers:
        handles.append(mods[name].register_forward_hook(hook(name)))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


class MahalanobisDetector:
    r"""Mahalanobis-distance detector on intermediate features (Lee, Lee, Lee, Shin 2018, "A Simple Unified
    Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS; Alg. 1).

    Threat model: white-box on the defender's side (the detector reads hidden layers of a
    :class:`~sparring.targets.TorchTarget`). :meth:`fit` fits, for every layer :math:`\ell`, class-conditional
    Gaussians with a tied covariance on the training set: class means :math:`\mu_{\ell,c}` and
    :math:`\Sigma_\ell = \frac1N\sum_i (f_\ell(x_i)-\mu_{\ell,y_i})(f_\ell(x_i)-\mu_{\ell,y_i})^\top`. The layer's
    distance is :math:`d_\ell(x) = \min_c (f_\ell(x)-\mu_{\ell,c})^\top\Sigma_\ell^{-1}(f_\ell(x)-\mu_{\ell,c})`
    (the paper's confidence score with the sign flipped, so that higher is more suspicious). Feature maps are
    averaged over space to one value per channel, as in the paper.

    Input pre-processing (paper eq. 4, optional: ``noise > 0``): the layer is scored at
    :math:`\hat x = x - \epsilon\,\mathrm{sign}\,\nabla_x d_\ell(x)`, which lowers the distance of in-distribution
    inputs more than that of others.

    Combining layers: the paper fits a logistic regression on the per-layer scores of a small validation set of
    clean and adversarial examples (:meth:`fit_combiner`); its logit is then the score. Without a fitted combiner
    the score is the single-layer version: the distance at the last layer (the penultimate features by default).

    Args:
        target: the classifier (a :class:`~sparring.targets.TorchTarget`).
        layers: names in ``target.model.named_modules()``; default :func:`default_feature_layers`.
        noise: the pre-processing magnitude :math:`\epsilon` in raw input units (0: none; the paper tunes it on
            validation data, e.g. 0.0014 of the [0, 1] range).
        threshold: a known threshold; otherwise set by :meth:`calibrate`.

    Example:
        >>> from sparring import zoo
        >>> from sparring.defenses.detect.features import MahalanobisDetector
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> det = MahalanobisDetector(target).fit(data.x_train, data.y_train).calibrate(data.x_test[:200])
        >>> float(det.detect(data.x_test[200:400]).float().mean()) < 0.15
        True
    """

    def __init__(
        self, target: Target, layers: Sequence[str] | None = None, *, noise: float = 0.0,
        threshold: float | None = None,
    ) -> None:
        t = _white_box(target, "MahalanobisDetector")
        names = default_feature_layers(t.model) if layers is None else list(layers)
        known = dict(t.model.named_modules())
        bad = [n for n in names if n not in known or not n]
        if not names or bad:
            raise ParameterError(
                f"layers must name modules of the model; got {bad or names!r}; available: "
                f"{', '.join(n for n in known if n)}."
            )
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not math.isfinite(noise) or noise < 0:
            raise ParameterError(f"noise must be a finite number >= 0 (0: no input pre-processing); got {noise!r}.")
        self.target = t
        self.layers = names
        self.noise = float(noise)
        self.threshold = _check_threshold(threshold)
        self.means: list[torch.Tensor] = []
        self.precisions: list[torch.Tensor] = []
        self.combiner: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ features and distances
    def _features(self, x: torch.Tensor, fwd: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        with _capture(self.target.model, self.layers) as store:
            fwd(x)
        return [store[n].double() for n in self.layers]

    def _distances(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """``(N, L)`` minimum class-conditional Mahalanobis distance per layer."""
        cols = []
        for f, mu, prec in zip(feats, self.means, self.precisions, strict=True):
            diff = f[:, None, :] - mu[None]  # (N, K, D)
            # (diff @ prec) * diff summed over D: the quadratic form per (n, k), as two plain kernels (einsum's
            # path search alone cost ~1.5 ms per call, most of a single-request guard check)
            cols.append(((diff @ prec) * diff).sum(dim=2).amin(dim=1))
        return torch.stack(cols, dim=1)

    def _layer_scores(self, x: torch.Tensor, fwd: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``(N, L)`` per-layer distances, after the input pre-processing when ``noise > 0`` (autograd kept)."""
        if self.noise == 0:
            return self._distances(self._features(x, fwd))
        lo, hi = self.target.spec.bounds_tensors(x.device, x.dtype)
        cols = []
        for j in range(len(self.layers)):
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self._distances(self._features(xr, fwd))[:, j].sum(), xr)
            xh = torch.minimum(torch.maximum(x - self.noise * g.sign(), lo), hi)
            cols.append(self._distances(self._features(xh, fwd))[:, j])
        return torch.stack(cols, dim=1)

    def _combine(self, d: torch.Tensor) -> torch.Tensor:
        if self.combiner is None:
            return d[:, -1]
        mean, std, w, b = self.combiner
        return ((d - mean) / std) @ w + b

    def _require_fit(self) -> None:
        if not self.means:
            raise ParameterError("the detector is not fitted: call fit(x_train, y_train) first.")

    def _batched_layer_scores(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        self._require_fit()
        t = self.target
        xt, _ = t.spec.validate(x)
        xt = xt.to(t.device, t.dtype)
        fwd = t._raw_forward()
        passes = 1 if self.noise == 0 else 2 * len(self.layers)  # with pre-processing: a gradient, then a score
        out = []
        with t.frozen(), torch.no_grad():
            for s in range(0, xt.shape[0], t.batch_size):
                t.counter.charge(min(t.batch_size, xt.shape[0] - s) * passes)
                out.append(self._layer_scores(xt[s : s + t.batch_size], fwd))
        return torch.cat(out)

    def score_with_output(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The detection score and the model's own output (what ``target.query`` computes before any output view)
        from **one** forward pass, for a batch already valid in raw input space. A service that answers with the
        model's scores and screens every request (the guard) pays one forward instead of two. Only without input
        pre-processing (``noise == 0``; otherwise the scored input is not the one answered: use :meth:`score`)."""
        self._require_fit()
        if self.noise != 0:
            raise ParameterError("score_with_output needs noise == 0 (with input pre-processing the score comes from "
                                 "a perturbed input); call score() and query the target separately.")
        t = self.target
        xt = x.to(t.device, t.dtype)
        fwd = t._raw_forward()
        scores, outs = [], []
        with t.frozen(), torch.no_grad():
            for s in range(0, xt.shape[0], t.batch_size):
                t.counter.charge(min(t.batch_size, xt.shape[0] - s))
                with _capture(t.model, self.layers) as store:
                    outs.append(fwd(xt[s : s + t.batch_size]))
                scores.append(self._combine(self._distances([store[n].double() for n in self.layers])))
        return torch.cat(scores), torch.cat(outs)

    # ------------------------------------------------------------------ fitting
    def fit(self, x: torch.Tensor | np.ndarray, y: Any) -> MahalanobisDetector:
        """Fit the class means and the tied covariance of every layer on training data ``(x, y)``."""
        t = self.target
        xt, yt = t.spec.validate(x, y)
        assert yt is not None
        k = t.spec.n_classes
        missing = sorted(set(range(k)) - set(yt.tolist()))
        if missing:
            raise ParameterError(f"fit needs examples of every class; classes {missing} have none. Use more data.")
        xt, yt = xt.to(t.device, t.dtype), yt.to(t.device)
        fwd = t._raw_forward()
        feats: list[list[torch.Tensor]] = [[] for _ in self.layers]
        with t.frozen(), torch.no_grad():
            for s in range(0, xt.shape[0], t.batch_size):
                for j, f in enumerate(self._features(xt[s : s + t.batch_size], fwd)):
                    feats[j].append(f)
        self.means, self.precisions = [], []
        onehot = nn.functional.one_hot(yt, k).double()
        for parts in feats:
            f = torch.cat(parts)
            mu = (onehot.T @ f) / onehot.sum(0)[:, None]
            c = f - mu[yt]
            cov = c.T @ c / f.shape[0]
            ridge = _RIDGE * float(cov.diagonal().mean().clamp_min(1e-12))
            self.means.append(mu)
            self.precisions.append(torch.linalg.pinv(cov + ridge * torch.eye(cov.shape[0], device=cov.device,
                                                                             dtype=cov.dtype), hermitian=True))
        self.combiner = None
        return self

    def fit_combiner(
        self, x_clean: torch.Tensor | np.ndarray, x_adv: torch.Tensor | np.ndarray, *, c: float = 1.0
    ) -> MahalanobisDetector:
        """Fit the logistic regression over layers (Lee et al. 2018, sec. 3) on clean (label 0) and adversarial or
        noisy (label 1) validation inputs; per-layer scores are standardised on the clean ones first.

        Use a few hundred examples from an attack that is *not* the one evaluated later (the paper: FGSM for the
        validation set), so the detector is not tuned to its test attack.
        """
        from sklearn.linear_model import LogisticRegression

        if isinstance(c, bool) or not isinstance(c, int | float) or not c > 0:
            raise ParameterError(f"c (inverse regularisation strength) must be a number > 0; got {c!r}.")
        self.combiner = None
        d0, d1 = self._batched_layer_scores(x_clean), self._batched_layer_scores(x_adv)
        mean, std = d0.mean(0), d0.std(0).clamp_min(1e-12) if d0.shape[0] > 1 else torch.ones_like(d0[0])
        z = ((torch.cat([d0, d1]) - mean) / std).cpu().numpy()
        lab = np.r_[np.zeros(len(d0)), np.ones(len(d1))]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(did not converge|lbfgs failed).*")
            lr = LogisticRegression(C=float(c), max_iter=1000).fit(z, lab)
        dev = mean.device
        self.combiner = (mean, std, torch.as_tensor(lr.coef_[0], dtype=torch.float64, device=dev),
                         torch.as_tensor(float(lr.intercept_[0]), dtype=torch.float64, device=dev))
        return self

    # ------------------------------------------------------------------ public API
    def layer_scores(self, x: ArrayT) -> ArrayT:
        """``(N, n_layers)`` per-layer distances (after pre-processing), as the same kind as ``x``."""
        return _like(self._batched_layer_scores(x), x)  # type: ignore[no-any-return]

    def score(self, x: ArrayT) -> ArrayT:
        """The detection score (higher: more suspicious), as the same kind as ``x``."""
        return _like(self._combine(self._batched_layer_scores(x)), x)  # type: ignore[no-any-return]

    def calibrate(self, x_clean: torch.Tensor | np.ndarray, fpr: float = 0.05) -> MahalanobisDetector:
        """Set :attr:`threshold` for a false-positive rate ``fpr`` on clean inputs; returns the detector."""
        calibrate(self, x_clean, _check_fpr_value(fpr))
        return self

    def detect(self, x: ArrayT) -> ArrayT:
        """``True`` where the score exceeds :attr:`threshold`; same kind as ``x``."""
        return _detect(self._combine(self._batched_layer_scores(x)), self.threshold, x)  # type: ignore[no-any-return]

    def differentiable_score(self, x: torch.Tensor) -> torch.Tensor:
        """The score with autograd (a valid batch on the target's device; call inside ``target.frozen()``)."""
        self._require_fit()
        fwd = self.target.differentiable("MahalanobisDetector.differentiable_score")
        return self._combine(self._layer_scores(x, fwd))

    def get_params(self) -> dict[str, Any]:
        """The configuration as given (for reports)."""
        return {"layers": list(self.layers), "noise": self.noise, "threshold": self.threshold,
                "combiner": self.combiner is not None}


class _OutputDetector:
    """Shared body of the detectors that read only the output scores (one forward pass per example)."""

    who = "detector"

    def __init__(self, target: Target, *, threshold: float | None = None) -> None:
        if not isinstance(target, Target):
            raise ParameterError(f"target must be a sparring Target (e.g. TorchTarget); got {type(target).__name__}.")
        target.require(Access.SCORES, self.who)
        self.target = target
        self.threshold = _check_threshold(threshold)

    def _from_scores(self, z: torch.Tensor, kind: str) -> torch.Tensor:
        raise NotImplementedError

    def _score_any(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        t = self.target
        xt, _ = t.spec.validate(x)
        with torch.no_grad():
            return self._from_scores(t.query(xt.to(t.device)).double(), t.view_output)

    def score(self, x: ArrayT) -> ArrayT:
        """The detection score (higher: more suspicious), as the same kind as ``x``."""
        return _like(self._score_any(x), x)  # type: ignore[no-any-return]

    def detect(self, x: ArrayT) -> ArrayT:
        """``True`` where the score exceeds :attr:`threshold`; same kind as ``x``."""
        return _detect(self._score_any(x), self.threshold, x)  # type: ignore[no-any-return]

    def differentiable_score(self, x: torch.Tensor) -> torch.Tensor:
        """The score with autograd (a valid batch on the target's device; call inside ``target.frozen()``)."""
        t = _white_box(self.target, f"{self.who}.differentiable_score")
        return self._from_scores(t.differentiable(f"{self.who}.differentiable_score")(x).double(), t.output)


class EnergyDetector(_OutputDetector):
    r"""Energy score (Liu, Wang, Owens, Li 2020, "Energy-based Out-of-distribution Detection", NeurIPS, eq. 4):

    .. math:: E(x; f) = -T \cdot \log\sum_i e^{f_i(x)/T}

    Higher energy: less like the training distribution. Needs the target's logits (score access with
    ``output="logits"``); the temperature ``T`` is 1 in the paper.

    Example:
        >>> from sparring import zoo
        >>> from sparring.defenses.detect.features import EnergyDetector
        >>> target, data = zoo.load("digits-cnn"), zoo.data("digits-cnn")
        >>> det = EnergyDetector(target).calibrate(data.x_test[:200])
        >>> det.detect(data.x_test[200:208]).shape
        torch.Size([8])
    """

    who = "EnergyDetector"

    def __init__(self, target: Target, *, temperature: float = 1.0, threshold: float | None = None) -> None:
        super().__init__(target, threshold=threshold)
        if target.view_output != "logits":
            raise ParameterError(f"EnergyDetector needs logits; the target gives {target.view_output}. Use "
                                 "MaxSoftmaxDetector for probability outputs.")
        ok = not isinstance(temperature, bool) and isinstance(temperature, int | float)
        if not ok or not math.isfinite(temperature) or temperature <= 0:
            raise ParameterError(f"temperature must be a finite number > 0 (the paper uses 1); got {temperature!r}.")
        self.temperature = float(temperature)

    def _from_scores(self, z: torch.Tensor, kind: str) -> torch.Tensor:
        return -self.temperature * torch.logsumexp(z / self.temperature, dim=1)

    def calibrate(self, x_clean: torch.Tensor | np.ndarray, fpr: float = 0.05) -> EnergyDetector:
        """Set :attr:`threshold` for a false-positive rate ``fpr`` on clean inputs; returns the detector."""
        calibrate(self, x_clean, _check_fpr_value(fpr))
        return self

    def get_params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "threshold": self.threshold}


class MaxSoftmaxDetector(_OutputDetector):
    r"""Maximum softmax probability baseline (Hendrycks & Gimpel 2017, "A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples in Neural Networks", ICLR): the score is :math:`-\max_i \mathrm{softmax}(f(x))_i`,
    so low confidence is suspicious. Works with logits or probabilities."""

    who = "MaxSoftmaxDetector"

    def _from_scores(self, z: torch.Tensor, kind: str) -> torch.Tensor:
        p = z.softmax(dim=1) if kind == "logits" else z
        return -p.amax(dim=1)

    def calibrate(self, x_clean: torch.Tensor | np.ndarray, fpr: float = 0.05) -> MaxSoftmaxDetector:
        """Set :attr:`threshold` for a false-positive rate ``fpr`` on clean inputs; returns the detector."""
        calibrate(self, x_clean, _check_fpr_value(fpr))
        return self

    def get_params(self) -> dict[str, Any]:
        return {"threshold": self.threshold}
