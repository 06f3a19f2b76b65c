"""Verified (certified) accuracy under an L∞ budget, from sound bounds on the logit margins.

An example is *verified* when the lower bound of ``z_y - z_j`` over the whole ball is positive for every other class
``j``: no perturbation within ``eps`` (and within the input bounds) can change its prediction, whatever the attack.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from sparring.attacks.evasion._checks import check_eps
from sparring.attacks.norms import Norm
from sparring.defenses.certify.bounds import BoundedModel, Intermediate, margin_spec
from sparring.errors import AccessError, ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["VerifyResult", "verify"]

Method = Literal["best", "ibp", "crown"]


@dataclass
class VerifyResult:
    """Per-example verification of an L∞ ball.

    Attributes:
        verified: (N,) bool, True where the prediction provably cannot change within ``eps``.
        margin_lower: (N, K) lower bounds of ``z_y - z_j`` over the ball; ``+inf`` in the column of the true class.
        y: the true labels.
        clean_correct: (N,) bool, True where the unperturbed input is classified correctly (verified implies it).
        winner: with ``method="best"``, (N, K) int8 codes into :attr:`WINNERS` telling which method gave each
            margin's bound (``"tie"`` where equal, and in the true class's column); None otherwise.
        method, eps, params: what was asked. seconds: wall-clock time.
        model_check: how the network that was bounded was checked against the model before any bound:
            ``probes`` (inputs run through both: random points in the bounds and the first data points) and
            ``max_abs_diff`` (the largest difference of their outputs, within ``bounds.ATOL + bounds.RTOL * max
            |output|`` or nothing would have been verified).

    Arrays have the kind (tensor/numpy) of the inputs given to :func:`verify`.
    """

    WINNERS: ClassVar[tuple[str, str, str]] = ("tie", "ibp", "crown")

    method: str
    eps: float
    verified: Any
    margin_lower: Any
    y: Any
    clean_correct: Any
    winner: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    model_check: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.verified)

    @property
    def verified_accuracy(self) -> float:
        """Fraction of examples verified (a lower bound on the accuracy under any attack within ``eps``)."""
        return float(np.asarray(_np(self.verified)).mean())

    @property
    def clean_accuracy(self) -> float:
        return float(np.asarray(_np(self.clean_correct)).mean())

    def wins(self) -> dict[str, int]:
        """With ``method="best"``: how many margin bounds each method gave strictly tighter (and how many tied),
        counted over the ``N * (K - 1)`` margins of other classes."""
        if self.winner is None:
            return {}
        w, y = _np(self.winner), _np(self.y)
        other = np.ones(w.shape, dtype=bool)
        other[np.arange(len(y)), y] = False
        return {name: int(((w == code) & other).sum()) for code, name in enumerate(self.WINNERS)}

    def summary(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "method": self.method, "eps": self.eps, "n": self.n, "clean_accuracy": self.clean_accuracy,
            "verified_accuracy": self.verified_accuracy, "params": self.params, "seconds": round(self.seconds, 4),
            "model_check": self.model_check,
        }
        if self.winner is not None:
            s["wins"] = self.wins()
        return s


def verify(target: TorchTarget, x: Any, y: Any, eps: float, *, method: Method = "best",
           intermediate: Intermediate = "crown") -> VerifyResult:
    """Verify the predictions of ``target`` on ``x`` against every L∞ perturbation of size ``eps``.

    Threat model: white-box (needs the network's layers), untargeted, L∞ ball in raw input space cut by the spec's
    bounds. The guarantee is sound, not complete: a verified example is robust to *every* attack within ``eps``; an
    unverified one may still be robust. Margin bounds come from IBP (Gowal et al. 2018) with the last layer merged
    into the margin specification, from CROWN (Zhang et al. 2018), or, with ``method="best"``, from the tighter of
    the two for each margin (both are sound, so their maximum is too).

    Args:
        target: a :class:`~sparring.targets.TorchTarget` whose model uses the supported operations (see
            :data:`~sparring.defenses.certify.bounds.SUPPORTED_LAYERS`), however its ``forward`` arranges them.
        x: inputs (N, *spec.shape) within the spec's bounds; y: true labels (N,).
        eps: L∞ budget in raw input space.
        method: ``"best"``, ``"ibp"`` or ``"crown"``.
        intermediate: how CROWN bounds ReLU inputs (``"crown"`` tighter, ``"ibp"`` faster).

    Example:
        >>> from sparring import zoo
        >>> target, data = zoo.load("digits-mlp"), zoo.data("digits-mlp")
        >>> res = verify(target, data.x_test[:32], data.y_test[:32], eps=0.001)
        >>> res.verified_accuracy <= res.clean_accuracy
        True
    """
    t0 = time.perf_counter()
    if method not in ("best", "ibp", "crown"):
        raise ParameterError(f"method must be 'best', 'ibp' or 'crown'; got {method!r}.")
    if intermediate not in ("crown", "ibp"):
        raise ParameterError(f"intermediate must be 'crown' or 'ibp'; got {intermediate!r}.")
    if not isinstance(target, TorchTarget):
        what = type(target).__name__
        err = AccessError if isinstance(target, Target) else ParameterError
        raise err(f"verify needs a TorchTarget (white-box access to the layers); got {what}.")
    target.require(Access.GRADIENTS, "verify")
    e = check_eps(eps, Norm.LINF, target.spec)
    xt, yt = target.spec.validate(x, y)
    assert yt is not None
    bm = BoundedModel(target.model, target.spec, probe=xt[:8])  # refuses a network other than the model
    low, high = target.spec.bounds_tensors(bm.device, bm.dtype)
    k = target.spec.n_classes
    margins, winners, correct = [], [], []
    with torch.no_grad():
        for s in range(0, xt.shape[0], target.batch_size):
            xb = xt[s : s + target.batch_size].to(bm.device, bm.dtype)
            yb = yt[s : s + target.batch_size].to(bm.device)
            lo, hi = torch.maximum(xb - e, low), torch.minimum(xb + e, high)
            c = margin_spec(yb, k).to(bm.dtype)
            ibp = bm.interval(lo, hi, c)[0] if method != "crown" else None
            crown = bm.crown_lower(lo, hi, c, intermediate) if method != "ibp" else None
            if ibp is not None and crown is not None:
                m = torch.maximum(ibp, crown)
                winners.append(torch.where(crown > ibp, 2, torch.where(ibp > crown, 1, 0)).to(torch.int8))
            else:
                one = ibp if ibp is not None else crown
                assert one is not None
                m = one
            own = torch.nn.functional.one_hot(yb, k).bool()
            margins.append(m.masked_fill(own, float("inf")))
            if winners:
                winners[-1] = winners[-1].masked_fill(own, 0)
            correct.append(bm.forward(xb).argmax(1) == yb)
    margin = torch.cat(margins)
    ver = (margin > 0).all(1)
    won = torch.cat(winners) if winners else None
    params = {"eps": e, "norm": "linf", "method": method, "intermediate": intermediate}
    return VerifyResult(
        method=method, eps=e, verified=_like(ver, x), margin_lower=_like(margin, x), y=_like(yt, x),
        clean_correct=_like(torch.cat(correct), x), winner=None if won is None else _like(won, x), params=params,
        seconds=time.perf_counter() - t0, model_check={"probes": bm.n_probes, "max_abs_diff": bm.max_abs_diff},
    )


def _like(t: torch.Tensor, ref: Any) -> Any:
    if isinstance(ref, np.ndarray):
        return t.detach().cpu().numpy()
    return t.to(ref.device) if isinstance(ref, torch.Tensor) else t.cpu()


def _np(v: Any) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
