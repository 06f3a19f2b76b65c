"""Training-data privacy: membership inference against the audited model.

Planned when the threat model protects ``assets.training_data_privacy`` and the system is a zoo model (its training
data, hence the ground truth of membership, is known). Steps: the loss-threshold attack (Yeom et al. 2018) always;
at effort ``standard``/``thorough`` also offline LiRA (Carlini et al. 2022) with 4/8 shadow models trained with the
zoo model's own recipe. Members are the first ``system.data.n`` training examples, non-members as many test examples.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from sparring.audit.findings import Finding
from sparring.audit.registry import (
    Measurement,
    PlanContext,
    ReportFigure,
    ReportSection,
    ReportTable,
    RunContext,
    Skip,
    Step,
    StepResult,
    register_check,
)
from sparring.targets.spec import Access

__all__ = ["MembershipCheck"]

_SHADOWS = {"quick": 0, "standard": 4, "thorough": 8}
# high: TPR >= 10 x FPR, medium: >= 3 x FPR (10 % / 3 % at 1 % FPR) or an advantage >= 0.1; read at 1 % FPR where
# the non-members resolve it (>= 1,000), else at the lowest FPR they resolve (10 / n)
_HIGH_LIFT, _MEDIUM_LIFT, _MEDIUM_ADV = 10.0, 3.0, 0.1
RECOMMEND_PRIVACY = (
    "Train with differential privacy (DP-SGD: sparring.defenses.training.dp.train_dp) and check the attacks respect "
    "the guarantee (check_dp_bound); regularise and stop earlier to reduce overfitting; serve labels only or coarse "
    "scores (exposure.output) to weaken score-based attacks."
)


def _result(step_result: StepResult) -> Any:
    from sparring.attacks.privacy.metrics import MembershipResult
    from sparring.attacks.result import Cost

    pp = step_result.per_point
    return MembershipResult(step_result.params["attack"], step_result.params, Cost(),
                            scores=torch.tensor(pp["score"], dtype=torch.float64),
                            member=torch.tensor(pp["member"], dtype=torch.bool))


@register_check
class MembershipCheck:
    name = "membership"
    threat = "membership"
    needs = Access.SCORES

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        from sparring.data import zoo

        tm = ctx.threat_model
        if not tm.assets.training_data_privacy:
            return Skip(self.name, "membership", "assets.training_data_privacy is false")
        if tm.system.model not in zoo.names():
            return Skip(self.name, "membership", f"the training data of {tm.system.model!r} is unknown (membership "
                        "ground truth is needed); audit a zoo model or run sparring membership with --members/"
                        "--nonmembers")
        if ctx.access < Access.SCORES:
            return Skip(self.name, "membership", "membership attacks here need scores; the API returns labels only")
        n = tm.system.data.n
        steps = [Step(id="privacy/membership/loss-threshold", check=self.name, threat="membership",
                      params={"attack": "loss-threshold", "n": n, "n_shadow": 0},
                      reason="loss-threshold membership inference (Yeom et al. 2018)")]
        k = _SHADOWS[tm.effort]
        if k:
            steps.append(Step(id=f"privacy/membership/lira-offline/{k}", check=self.name, threat="membership",
                              params={"attack": "lira-offline", "n": n, "n_shadow": k},
                              reason=f"offline LiRA with {k} shadow models (Carlini et al. 2022)"))
        return steps

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.attacks.privacy.membership import run_membership, zoo_membership_data, zoo_trainer

        p = step.params
        name = ctx.threat_model.system.model
        x, y, member = zoo_membership_data(name, p["n"])
        train = zoo_trainer(name) if p["n_shadow"] else None
        res = run_membership(p["attack"], ctx.attacker_target, x, y, member, train=train,
                             n_shadow=max(p["n_shadow"], 1), seed=ctx.generator_seed)
        s = res.summary()  # a TPR at a low FPR is None (no measurement) below 10 / FPR non-members
        meas = [Measurement(f"membership_{k}", float(s[k]), {"attack": p["attack"]})
                for k in ("auc", "advantage", "tpr_at_0.001_fpr", "tpr_at_0.01_fpr", "tpr_at_lowest_measurable_fpr")
                if s[k] is not None]
        meas[-1].params["fpr"] = s["lowest_measurable_fpr"]
        return StepResult(step_id=step.id, check=self.name, threat="membership", params=dict(p), measurements=meas,
                          per_point={"score": [round(float(v), 6) for v in res.scores],
                                     "member": res.member.tolist()},
                          cost=res.cost.to_dict())

    def findings(self, tm: Any, results: list[StepResult]) -> list[Finding]:
        done = [r for r in results if r.status == "done"]
        if not done:
            return []
        worst = max(done, key=lambda r: (_lift(r), r.value("membership_advantage") or 0.0))
        tpr, fpr = _operating_point(worst)
        adv = max(r.value("membership_advantage") or 0.0 for r in done)
        severity: Literal["high", "medium"]
        if tpr >= _HIGH_LIFT * fpr:
            severity = "high"
        elif tpr >= _MEDIUM_LIFT * fpr or adv >= _MEDIUM_ADV:
            severity = "medium"
        else:
            return []
        return [Finding(id="membership:leak", title="The model leaks which examples were in its training set",
                        severity=severity, threat="membership",
                        evidence={"attack": worst.params["attack"], "tpr": tpr, "at_fpr": fpr,
                                  "tpr_at_1pct_fpr": worst.value("membership_tpr_at_0.01_fpr"),
                                  "tpr_at_0.1pct_fpr": worst.value("membership_tpr_at_0.001_fpr"),
                                  "auc": worst.value("membership_auc"), "max_advantage": adv},
                        recommendation=RECOMMEND_PRIVACY, steps=[r.step_id for r in done])]

    def section(self, results: list[StepResult]) -> ReportSection | None:
        from sparring.attacks.privacy.metrics import plot_roc
        from sparring.audit.report import plots

        done = [r for r in results if r.status == "done"]
        if not done:
            return None
        def low(r: StepResult, metric: str) -> Any:
            v = r.value(metric)
            return "not measurable" if v is None else v

        n_out = min(len(r.per_point["member"]) - sum(r.per_point["member"]) for r in done)
        rows = [[r.params["attack"], r.params["n_shadow"], r.value("membership_auc"),
                 r.value("membership_advantage"), low(r, "membership_tpr_at_0.001_fpr"),
                 low(r, "membership_tpr_at_0.01_fpr"), "{:.3f} at {:.1%}".format(*_operating_point(r))]
                for r in done]
        fig = plot_roc({r.params["attack"]: _result(r) for r in done}, title="Membership inference ROC (log axes)")
        return ReportSection(
            title="Training-data privacy (membership inference)",
            text="Can an attacker tell the model's training examples from others? Members are training examples, "
                 "non-members held-out test examples. What matters is the true-positive rate at a low false-positive "
                 "rate (Carlini et al. 2022): a value well above the FPR means some members are identified with "
                 "confidence. The dashed diagonal is chance. A TPR at FPR f is measurable only with at least 10 / f "
                 f"non-members; this audit has {n_out:,}, so figures below {min(1.0, 10 / max(n_out, 1)):.1%} FPR "
                 "read \"not measurable\" (raise system.data.n).",
            tables=[ReportTable("membership attacks", ["attack", "shadow models", "AUC", "advantage",
                                                       "TPR @ 0.1% FPR", "TPR @ 1% FPR",
                                                       "TPR judged (at FPR)"], rows)],
            figures=[ReportFigure("membership ROC", plots.png(fig))])


def _operating_point(r: StepResult) -> tuple[float, float]:
    """``(TPR, FPR)`` at 1 % FPR when measurable, else at the lowest FPR the step's non-members resolve."""
    at_1 = r.value("membership_tpr_at_0.01_fpr")
    if at_1 is not None:
        return at_1, 0.01
    low = next((m for m in r.measurements if m.metric == "membership_tpr_at_lowest_measurable_fpr"), None)
    return (0.0, 1.0) if low is None else (low.value, float(low.params["fpr"]))


def _lift(r: StepResult) -> float:
    tpr, fpr = _operating_point(r)
    return tpr / fpr
