"""The planner picks checks by the attacker's access and says why; new checks plug in through the registry."""

from __future__ import annotations

from typing import Any

import pytest

from sparring.audit import CHECKS, load_system, parse_threat_model, plan_audit
from sparring.audit.registry import PlanContext, RunContext, Skip, Step, StepResult, register_check
from sparring.targets.spec import Access
from tests.audit.conftest import SMALL


def _plan(**over: Any) -> Any:
    tm = parse_threat_model({**SMALL, **over})
    target, attacker, _, _ = load_system(tm)
    return plan_audit(tm, target), attacker


def _checks(plan: Any) -> set[str]:
    return {s.check for s in plan.steps}


def test_white_box_gets_gradient_attacks_and_sanity_checks() -> None:
    plan, attacker = _plan()
    assert {"clean-accuracy", "evasion-gradient", "gradient-masking", "certify-smoothing"} <= _checks(plan)
    assert attacker.access == Access.GRADIENTS
    skipped = {s.check: s.reason for s in plan.skipped}
    assert "white-box" in skipped["evasion-scores"] and "certify-bounds" in skipped
    ids = [s.id for s in plan.steps]
    assert "evasion/pgd/linf/0.05" in ids and "evasion/pgd/linf/0.15" in ids
    assert all(s.reason for s in plan.steps)


def test_black_box_scores_api_gets_square() -> None:
    plan, attacker = _plan(attacker={**SMALL["attacker"], "knowledge": "black-box", "query_budget": 100})
    assert "evasion-scores" in _checks(plan) and "evasion-gradient" not in _checks(plan)
    sq = [s for s in plan.steps if s.check == "evasion-scores"]
    assert sq[0].params["n_queries"] == 100 and "Square" in sq[0].reason
    assert attacker.access == Access.SCORES
    assert "gradient-masking" in {s.check for s in plan.skipped}


def test_labels_only_api_gets_hopskipjump_and_says_why() -> None:
    plan, attacker = _plan(exposure={"output": "labels"})
    assert "evasion-labels" in _checks(plan)
    skipped = {s.check: s.reason for s in plan.skipped}
    assert "labels only" in skipped["evasion-scores"] and "HopSkipJump" in skipped["evasion-scores"]
    assert "gradients" in skipped["evasion-gradient"]
    assert attacker.access == Access.LABELS


def test_top_k_view_reaches_the_attacker_target() -> None:
    _, attacker = _plan(exposure={"output": "top-k", "top_k": 2},
                        attacker={**SMALL["attacker"], "knowledge": "black-box"})
    assert attacker.top_k == 2 and attacker.access == Access.SCORES


def test_a_registered_check_plugs_in_without_editing_the_planner() -> None:
    @register_check
    class Probe:
        name = "test-probe"
        threat = "membership"
        needs = Access.LABELS

        def plan(self, ctx: PlanContext) -> list[Step] | Skip:
            return [Step(id="probe/1", check=self.name, threat="membership", params={}, reason="test")]

        def run(self, step: Step, ctx: RunContext) -> StepResult:
            raise AssertionError("not run here")

    try:
        plan, _ = _plan()
        assert "probe/1" in [s.id for s in plan.steps]
    finally:
        del CHECKS["test-probe"]


@pytest.mark.parametrize("n", [1, 3])
def test_data_size_follows_the_threat_model(n: int) -> None:
    tm = parse_threat_model({**SMALL, "system": {"model": "digits-cnn", "data": {"n": n}}})
    _, _, x, y = load_system(tm)
    assert x.shape[0] == n == y.shape[0]
