"""The membership finding reads the TPR at an FPR the audit's non-members resolve (issue 22 item 7): at 1 % FPR with
>= 1,000 non-members, else at the lowest measurable FPR (10 / n), with the same 10x / 3x lift over the FPR."""

from __future__ import annotations

from sparring.audit.checks.privacy import MembershipCheck
from sparring.audit.registry import Measurement, StepResult


def _step(tpr_1pct: float | None, low_tpr: float, low_fpr: float, advantage: float = 0.02) -> StepResult:
    meas = [Measurement("membership_auc", 0.6), Measurement("membership_advantage", advantage)]
    if tpr_1pct is not None:
        meas.append(Measurement("membership_tpr_at_0.01_fpr", tpr_1pct))
    meas.append(Measurement("membership_tpr_at_lowest_measurable_fpr", low_tpr, {"fpr": low_fpr}))
    return StepResult(step_id="membership/loss", check="membership", threat="membership",
                      params={"attack": "loss-threshold", "n_shadow": 0}, measurements=meas)


def test_unmeasurable_one_percent_is_judged_at_the_lowest_measurable_fpr() -> None:
    check = MembershipCheck()
    # 200 non-members: 1 % FPR is not measurable; 60 % TPR at 5 % FPR is 12x the FPR -> high
    (f,) = check.findings(None, [_step(None, 0.6, 0.05)])
    assert f.severity == "high" and f.evidence["at_fpr"] == 0.05 and f.evidence["tpr_at_1pct_fpr"] is None
    # 20 % at 5 % is 4x -> medium; 10 % at 5 % (2x, advantage 0.02) -> no finding. The old rule read the
    # unmeasurable 1 % figure as 0 and could only ever say medium through the advantage.
    (f,) = check.findings(None, [_step(None, 0.2, 0.05)])
    assert f.severity == "medium"
    assert check.findings(None, [_step(None, 0.1, 0.05)]) == []


def test_measurable_one_percent_keeps_the_ten_and_three_percent_thresholds() -> None:
    check = MembershipCheck()
    (f,) = check.findings(None, [_step(0.12, 0.12, 0.01)])
    assert f.severity == "high" and f.evidence["at_fpr"] == 0.01
    (f,) = check.findings(None, [_step(0.04, 0.04, 0.01)])
    assert f.severity == "medium"
    assert check.findings(None, [_step(0.02, 0.02, 0.01)]) == []
    (f,) = check.findings(None, [_step(0.02, 0.02, 0.01, advantage=0.15)])
    assert f.severity == "medium"
