"""A family's check speaks in the report through ``findings`` and ``section``, without editing the report code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparring.audit import CHECKS, parse_threat_model, run_audit
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
from sparring.audit.report import plots, write_reports
from sparring.targets.spec import Access
from tests.audit.conftest import SMALL


def test_check_findings_and_section_reach_the_reports(tmp_path: Path) -> None:
    seen: list[list[str]] = []

    @register_check
    class Leak:
        name = "test-leak"
        threat = "membership"
        needs = Access.LABELS

        def plan(self, ctx: PlanContext) -> list[Step] | Skip:
            return [Step(id="leak/1", check=self.name, threat="membership", params={}, reason="test")]

        def run(self, step: Step, ctx: RunContext) -> StepResult:
            return StepResult(step_id=step.id, check=self.name, threat="membership", params={},
                              measurements=[Measurement("membership_auc", 0.73)])

        def findings(self, tm: Any, results: list[StepResult]) -> list[Finding]:
            seen.append([r.step_id for r in results])
            return [Finding(id="leak:auc", title="Training data leaks", severity="high", threat="membership",
                            evidence={"auc": results[0].value("membership_auc")}, recommendation="train with DP")]

        def section(self, results: list[StepResult]) -> ReportSection:
            fig = plots.figure(2, 2)
            fig.add_subplot().plot([0, 1], [0, 1])
            return ReportSection(title="Membership leakage (probe)", text="AUC of the probe attack.",
                                 tables=[ReportTable("probe", ["metric", "value"],
                                                     [["auc", results[0].value("membership_auc")]])],
                                 figures=[ReportFigure("roc probe", plots.png(fig))])

    tm = parse_threat_model({**SMALL, "certification": {}, "attacker": {"knowledge": "white-box"}})
    try:
        audit = run_audit(tm, tmp_path / "out")
        paths = write_reports(audit, tmp_path / "out", ("html", "json"))
    finally:
        del CHECKS["test-leak"]
    assert seen == [["leak/1"]]  # only its own results
    assert any(f.id == "leak:auc" for f in audit.findings)
    html = paths["html"].read_text(encoding="utf-8")
    assert "Membership leakage (probe)" in html and "0.730" in html and 'alt="roc probe"' in html
    assert '"leak:auc"' in paths["json"].read_text(encoding="utf-8")
