"""Black-box shift detection on a model's outputs (Rabanser, Günnemann, Lipton 2019) and label-shift detection
with black-box shift estimation (Lipton, Wang, Smola 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from sparring.defenses.detect.drift.mmd import mmd_test
from sparring.defenses.detect.drift.result import DriftResult, check_alpha
from sparring.defenses.detect.drift.univariate import univariate_test
from sparring.errors import InputSpecError, LabelError, ParameterError
from sparring.targets.base import Target

__all__ = ["bbsd_test", "label_shift_test", "softmax_outputs"]


def softmax_outputs(model: Target | Callable[[Any], Any], x: Any) -> torch.Tensor:
    """Class probabilities of a sparring :class:`~sparring.targets.Target` for ``x`` (softmax of logits; a
    probability view as it is), or ``model(x)`` for any other callable (e.g. an embedding function)."""
    if isinstance(model, Target):
        s = torch.as_tensor(model.scores(x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))))
        return s.double().softmax(1) if model.view_output == "logits" else s.double()
    if callable(model):
        return torch.as_tensor(model(x)).detach().double()
    raise ParameterError(f"model must be a sparring Target or a callable returning features; got "
                         f"{type(model).__name__}.")


def bbsd_test(
    model: Target | Callable[[Any], Any], reference: Any, current: Any, *,
    test: Literal["ks", "cvm", "mmd"] = "ks", correction: Literal["bonferroni", "fdr"] = "bonferroni",
    alpha: float = 0.05, seed: int = 0, **mmd_kwargs: Any,
) -> DriftResult:
    """BBSD: test the model's softmax outputs (or any representation ``model`` returns) instead of raw inputs.

    Rabanser et al. (2019, "Failing Loudly") found the univariate KS test on the softmax vector with a Bonferroni
    correction (``test="ks"``, the default) the strongest of their detectors on image shifts; ``test="mmd"`` runs
    :func:`~sparring.defenses.detect.drift.mmd_test` on the outputs. Dimension reduction to the number of classes
    is what makes the tests powerful on high-dimensional inputs. Needs scores (``Access.SCORES``).
    """
    alpha = check_alpha(alpha)
    fa, fb = softmax_outputs(model, reference), softmax_outputs(model, current)
    if test == "mmd":
        r = mmd_test(fa, fb, alpha=alpha, seed=seed, **mmd_kwargs)
    elif test in ("ks", "cvm"):
        r = univariate_test(fa, fb, test=test, correction=correction, alpha=alpha)
    else:
        raise ParameterError(f"test must be 'ks', 'cvm' or 'mmd'; got {test!r}.")
    return DriftResult(f"bbsd-{test}", r.statistic, r.p_value, r.alpha, r.threshold, r.n_reference, r.n_current,
                       r.features, {**r.details, "outputs": "softmax" if isinstance(model, Target) else "features"})


def label_shift_test(
    model: Target, reference: Any, y_reference: Any, current: Any, *, alpha: float = 0.05,
) -> DriftResult:
    """Label shift (``p(y)`` changes, ``p(x | y)`` does not): a χ² test on the model's predicted-label counts, and
    the BBSE estimate of the new label distribution (Lipton et al. 2018).

    Under label shift with an invertible confusion matrix, the predicted-label distribution changes iff ``p(y)``
    does, so the χ² homogeneity test on hard predictions (reference vs current; Rabanser et al. 2019's BBSDh) is a
    label-shift test. BBSE solves ``Ĉ w = μ̂``, with ``Ĉ_ij = P(ŷ = i, y = j)`` on the labelled reference and
    ``μ̂_i = P(ŷ = i)`` on current: ``w`` are the importance weights ``q(y)/p(y)`` (``details["weights"]``) and
    ``details["q_estimate"]`` the estimated current label distribution (clipped at 0, renormalised).
    """
    if not isinstance(model, Target):
        raise ParameterError(f"label_shift_test needs a sparring Target (it reads predicted labels); got "
                             f"{type(model).__name__}.")
    alpha = check_alpha(alpha)
    k = model.spec.n_classes
    pa = softmax_outputs(model, reference).argmax(1).cpu().numpy()
    pb = softmax_outputs(model, current).argmax(1).cpu().numpy()
    y = np.asarray(torch.as_tensor(y_reference).cpu()).reshape(-1)
    if y.shape[0] != pa.shape[0]:
        raise LabelError(f"got {y.shape[0]} labels for {pa.shape[0]} reference examples; give one per example.")
    if y.size and (y.min() < 0 or y.max() >= k or not np.all(y == np.round(y))):
        raise LabelError(f"reference labels must be class indices in 0..{k - 1}; got values in "
                         f"{y.min()}..{y.max()}.")
    if pb.shape[0] < 1:
        raise InputSpecError("current has 0 examples; expected at least one.")
    r = univariate_test(pa[:, None], pb[:, None], categorical=[0], alpha=alpha)
    y = y.astype(np.int64)
    conf = np.zeros((k, k))
    np.add.at(conf, (pa, y), 1.0)
    conf /= len(y)
    mu = np.bincount(pb, minlength=k) / len(pb)
    w, *_ = np.linalg.lstsq(conf, mu, rcond=None)
    p_ref = np.bincount(y, minlength=k) / len(y)
    q = np.clip(w * p_ref, 0, None)
    q = q / q.sum() if q.sum() > 0 else p_ref
    return DriftResult("label-shift", r.statistic, r.p_value, alpha, None, len(pa), len(pb), r.features,
                       {"weights": w.tolist(), "q_estimate": q.tolist(), "p_reference": p_ref.tolist(),
                        "confusion_condition": float(np.linalg.cond(conf))})
