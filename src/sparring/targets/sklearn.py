"""A scikit-learn classifier (or pipeline) as a score-access target."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sparring.errors import InputSpecError, ParameterError
from sparring.targets.base import ScoreKind, Target
from sparring.targets.spec import Access, InputSpec

__all__ = ["SklearnTarget"]


class SklearnTarget(Target):
    """A fitted scikit-learn estimator under test, with scores access.

    Scores come from ``predict_proba`` when the estimator has it (``output="probabilities"``), else from
    ``decision_function`` (``output="logits"``; a binary classifier's single margin ``m`` becomes ``[-m/2, m/2]``
    so the argmax and the softmax match the model). Inputs are flattened to ``(N, n_features)`` before the call.

    Args:
        estimator: a fitted classifier whose classes are ``0..n_classes-1``.
        spec: the input specification.
        method: ``"auto"``, ``"predict_proba"`` or ``"decision_function"``.
        access, batch_size, query_budget, top_k, decimals: see :class:`~sparring.targets.Target`.
    """

    native_access = Access.SCORES

    def __init__(
        self,
        estimator: Any,
        spec: InputSpec,
        *,
        method: str = "auto",
        access: Access | None = None,
        batch_size: int = 4096,
        query_budget: int | None = None,
        top_k: int | None = None,
        decimals: int | None = None,
    ) -> None:
        if method == "auto":
            method = "predict_proba" if hasattr(estimator, "predict_proba") else "decision_function"
        if method not in ("predict_proba", "decision_function") or not hasattr(estimator, method):
            raise ParameterError(
                f"{type(estimator).__name__} has no usable {method!r}; a SklearnTarget needs a fitted classifier "
                "with predict_proba or decision_function."
            )
        output: ScoreKind = "probabilities" if method == "predict_proba" else "logits"
        super().__init__(
            spec, access=access, output=output, batch_size=batch_size, query_budget=query_budget,
            top_k=top_k, decimals=decimals,
        )
        classes = getattr(estimator, "classes_", None)
        if classes is not None:
            expected = np.arange(spec.n_classes)
            if len(classes) != spec.n_classes or not np.array_equal(np.asarray(classes).astype(np.int64), expected):
                raise InputSpecError(
                    f"the estimator's classes_ are {list(classes)[:10]}; sparring needs classes "
                    f"0..{spec.n_classes - 1} matching InputSpec.n_classes. "
                    "Re-fit with encoded labels (sklearn LabelEncoder)."
                )
        self.estimator = estimator
        self.method = method

    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().cpu().reshape(x.shape[0], -1).numpy()
        out = np.asarray(getattr(self.estimator, self.method)(flat), dtype=np.float32)
        if out.ndim == 1:  # binary decision_function: one margin for class 1
            out = np.stack([-out / 2, out / 2], axis=1)
        return torch.from_numpy(out)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["model"] = type(self.estimator).__name__
        d["method"] = self.method
        return d
