"""How membership-inference attacks are measured: ROC on log axes, AUC, and the TPR at a low FPR.

Carlini et al. (2022, "Membership Inference Attacks From First Principles", §III) argue that balanced accuracy
and AUC hide what matters for privacy: whether an attack can identify *some* members with *high confidence*. So every
attack here returns a :class:`MembershipResult` whose headline numbers are the true-positive rate at 0.1 % and 1 %
false-positive rate, read off a ROC curve drawn on log-log axes (:func:`plot_roc`). The membership advantage
``max(TPR − FPR)`` of Yeom et al. (2018) is reported too.

A low-FPR figure is reported only where the evaluation can resolve it: with ``n⁻`` non-members, a TPR at FPR ``f``
needs ``n⁻ ≥ 10 / f`` (at least 10 false positives allowed). Below that the threshold sits at one of the few largest
non-member scores and the reading is the TPR at a larger, random FPR (with 200 non-members, "0.1 %" allows no false
positive at all: on Gaussian scores whose true TPR at 0.1 % is 0.018 it reads 0.051 on average). Such figures are
``None`` with a sentence ("not measurable at 200 non-members ...") instead; measurable ones come with an interval
(Clopper–Pearson on the members, widened for the uncertainty of the non-members' threshold), and every result also
gives the TPR at the lowest FPR it can measure, ``10 / n⁻``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from sparring.attacks.result import AttackResult
from sparring.errors import LabelError, ParameterError

__all__ = ["MIN_FALSE_POSITIVES", "MembershipResult", "fpr_measurable", "membership_advantage", "not_measurable",
           "plot_roc", "roc_curve"]

REPORTED_FPRS = (0.001, 0.01)
MIN_FALSE_POSITIVES = 10  # a TPR at FPR f is reported only with n⁻ ≥ MIN_FALSE_POSITIVES / f non-members


def fpr_measurable(fpr: float, n_nonmembers: int) -> bool:
    """Whether ``n_nonmembers`` resolve a false-positive rate of ``fpr`` (``n⁻ · fpr ≥ 10``)."""
    return n_nonmembers * fpr >= MIN_FALSE_POSITIVES * (1 - 1e-9)


def not_measurable(fpr: float, n_nonmembers: int) -> str:
    """The sentence a report prints instead of an unmeasurable TPR at ``fpr``."""
    need = math.ceil(MIN_FALSE_POSITIVES / fpr * (1 - 1e-9))
    return (f"TPR at {fpr:.1%} FPR is not measurable at {n_nonmembers:,} non-members (it needs at least {need:,}, "
            f"10 / FPR); the lowest measurable FPR here is {min(1.0, MIN_FALSE_POSITIVES / n_nonmembers):.1%}.")


def _scores_and_labels(scores: Any, member: Any) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.as_tensor(scores).detach().to("cpu", torch.float64).reshape(-1)
    m = torch.as_tensor(member).detach().to("cpu").reshape(-1)
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise LabelError(f"member must hold booleans (or 0/1); got values {sorted(set(m.tolist()))[:5]}.")
        m = m.bool()
    if s.shape != m.shape:
        raise LabelError(f"scores and member must have one entry per example; got {s.numel()} and {m.numel()}.")
    if not bool(m.any()) or bool(m.all()):
        raise LabelError(
            f"member must contain both members and non-members to measure an attack; got {int(m.sum())} members "
            f"of {m.numel()}. Give examples from the training set (True) and from held-out data (False)."
        )
    if not bool(torch.isfinite(s).all()):
        raise ParameterError("membership scores contain NaN or inf; check the target's outputs.")
    return s, m


def roc_curve(scores: Any, member: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ROC of a membership score (higher = more likely a member): ``(fpr, tpr, thresholds)``.

    One point per distinct score, from the strictest threshold (nothing flagged, point (0, 0)) to the loosest;
    a point at threshold ``t`` flags every example scoring ``>= t``. float64 tensors on the CPU.
    """
    s, m = _scores_and_labels(scores, member)
    order = torch.argsort(s, descending=True, stable=True)
    s_sorted, m_sorted = s[order], m[order].double()
    tp = torch.cumsum(m_sorted, 0)
    fp = torch.cumsum(1.0 - m_sorted, 0)
    last_of_value = torch.ones_like(s_sorted, dtype=torch.bool)
    last_of_value[:-1] = s_sorted[1:] != s_sorted[:-1]
    zero = torch.zeros(1, dtype=torch.float64)
    fpr = torch.cat([zero, fp[last_of_value] / fp[-1]])
    tpr = torch.cat([zero, tp[last_of_value] / tp[-1]])
    thr = torch.cat([torch.full((1,), float("inf"), dtype=torch.float64), s_sorted[last_of_value]])
    return fpr, tpr, thr


def membership_advantage(scores: Any, member: Any) -> float:
    """Yeom et al. (2018) membership advantage of the best threshold: ``max(TPR − FPR)`` over the ROC."""
    fpr, tpr, _ = roc_curve(scores, member)
    return float((tpr - fpr).max())


@dataclass
class MembershipResult(AttackResult):
    """The outcome of a membership-inference attack on examples whose membership is known (an evaluation).

    Attributes:
        scores: per example, the attack's membership score (higher = more likely in the training set), float64.
        member: per example, the ground truth (True = in the target's training set).
        extras: attack-specific data (e.g. LiRA's per-example Gaussian parameters, Yeom's threshold).
    """

    scores: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    member: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.member.numel())

    def roc(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(fpr, tpr, thresholds)``, see :func:`roc_curve`."""
        return roc_curve(self.scores, self.member)

    @property
    def auc(self) -> float:
        """Area under the ROC curve (ties counted half)."""
        from sparring.defenses.detect.metrics import roc_auc

        return roc_auc(self.scores[~self.member], self.scores[self.member])

    @property
    def n_nonmembers(self) -> int:
        return int((~self.member).sum())

    @property
    def lowest_measurable_fpr(self) -> float:
        """``10 / n⁻``: the lowest false-positive rate this evaluation resolves (capped at 1)."""
        return min(1.0, MIN_FALSE_POSITIVES / self.n_nonmembers)

    def raw_tpr_at(self, fpr: float) -> float:
        """The TPR at a false-positive rate of at most ``fpr`` (members scoring strictly above the threshold), read
        off the ROC whether or not there are enough non-members to resolve ``fpr`` (compare attacks with it; do not
        report it below :attr:`lowest_measurable_fpr`)."""
        from sparring.defenses.detect.metrics import tpr_at_fpr

        return tpr_at_fpr(self.scores[~self.member], self.scores[self.member], fpr)[0]

    def tpr_at(self, fpr: float) -> float | None:
        """The TPR at FPR ``fpr``, or ``None`` when it is not measurable (fewer than ``10 / fpr`` non-members)."""
        return self.raw_tpr_at(fpr) if fpr_measurable(fpr, self.n_nonmembers) else None

    def tpr_interval(self, fpr: float, confidence: float = 0.95) -> tuple[float, float] | None:
        """A ``confidence`` interval on the true TPR at FPR ``fpr``; ``None`` when ``fpr`` is not measurable.

        Both sides of the ROC are samples: the threshold the non-members fix is uncertain too. So the number of
        false positives the true FPR-``fpr`` threshold lets through is bracketed by binomial quantiles
        ``q_lo, q_hi`` of ``Bin(n⁻, fpr)``, and the interval runs from the Clopper–Pearson lower bound of the TPR at
        the stricter threshold (``q_lo`` false positives) to the upper bound at the looser one (``q_hi``); each of
        the four one-sided pieces at ``(1 − confidence) / 4`` (union bound).
        """
        from scipy.stats import beta, binom

        if self.tpr_at(fpr) is None:
            return None
        n_pos, n_neg, a = int(self.member.sum()), self.n_nonmembers, (1 - confidence) / 4
        q_lo, q_hi = (int(binom.ppf(q, n_neg, fpr)) for q in (a, 1 - a))
        k_lo = round(self.raw_tpr_at(q_lo / n_neg) * n_pos)
        k_hi = round(self.raw_tpr_at(min(q_hi, n_neg - 1) / n_neg) * n_pos)
        lo = 0.0 if k_lo == 0 else float(beta.ppf(a, k_lo, n_pos - k_lo + 1))
        hi = 1.0 if k_hi == n_pos else float(beta.ppf(1 - a, k_hi + 1, n_pos - k_hi))
        return lo, hi

    def describe_tpr_at(self, fpr: float) -> str:
        """The figure as a report prints it: ``0.052 [0.031, 0.081]``, or the not-measurable sentence."""
        tpr, ci = self.tpr_at(fpr), self.tpr_interval(fpr)
        if tpr is None or ci is None:
            return not_measurable(fpr, self.n_nonmembers)
        return f"{tpr:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    @property
    def advantage(self) -> float:
        return membership_advantage(self.scores, self.member)

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        s.update(n=self.n, members=int(self.member.sum()), nonmembers=self.n_nonmembers, auc=self.auc,
                 advantage=self.advantage)
        notes = []
        for f in REPORTED_FPRS:
            ci = self.tpr_interval(f)
            s[f"tpr_at_{f:g}_fpr"] = self.tpr_at(f)
            s[f"tpr_at_{f:g}_fpr_ci"] = None if ci is None else list(ci)
            if ci is None:
                notes.append(not_measurable(f, self.n_nonmembers))
        low = self.lowest_measurable_fpr
        s.update(lowest_measurable_fpr=low, tpr_at_lowest_measurable_fpr=self.raw_tpr_at(low) if low < 1 else 1.0,
                 notes=notes)
        return s


def plot_roc(results: Mapping[str, MembershipResult], *, title: str = "Membership inference ROC") -> Any:
    """ROC curves of several attacks on log-log axes (Carlini et al. 2022, Fig. 1 style) as a matplotlib Figure.

    The dashed diagonal is chance. The x axis starts at ``1 / (number of non-members)``, the smallest non-zero FPR
    the evaluation can resolve. Uses the object API (no pyplot state): save with ``fig.savefig(path)``.
    """
    from matplotlib.figure import Figure

    if not results:
        raise ParameterError("plot_roc needs at least one result, e.g. {'LiRA': lira_result}.")
    fig = Figure(figsize=(4.6, 4.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    lo = 1.0
    for name, res in results.items():
        fpr, tpr, _ = res.roc()
        n_out = int((~res.member).sum())
        lo = min(lo, 1.0 / n_out)
        ax.plot(fpr.clamp_min(0.5 / n_out).numpy(), tpr.clamp_min(0.5 / n_out).numpy(),
                label=f"{name} (AUC {res.auc:.3f}, {_low_fpr_label(res)})", lw=1.6)
    ax.plot([lo, 1.0], [lo, 1.0], ls="--", color="grey", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(lo, 1.0)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _low_fpr_label(res: MembershipResult) -> str:
    tpr = res.tpr_at(0.01)
    if tpr is not None:
        return f"TPR@1% {tpr:.3f}"
    low = res.lowest_measurable_fpr
    return f"TPR@{low:.1%} {res.raw_tpr_at(low) if low < 1 else 1.0:.3f}"
