"""The baseline every audit starts from: accuracy on the unperturbed audit data."""

from __future__ import annotations

import time

from sparring.audit.registry import Measurement, PlanContext, RunContext, Skip, Step, StepResult, register_check
from sparring.targets.spec import Access

__all__ = ["CleanAccuracy"]


@register_check
class CleanAccuracy:
    name = "clean-accuracy"
    threat = "baseline"
    needs = Access.LABELS
    inputs = ("tensor", "text")

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        return [Step(id="baseline/clean", check=self.name, threat="baseline", params={},
                     reason="every audit measures the model on unperturbed data first")]

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        t0 = time.perf_counter()
        q0 = ctx.target.counter.used
        labels = getattr(ctx.target, "query_labels", None)  # text targets: the argmax of their scores
        pred = (labels(ctx.x) if labels is not None else ctx.target.query(ctx.x).argmax(dim=1)).cpu()
        correct = pred == ctx.y.cpu()
        return StepResult(
            step_id=step.id, check=self.name, threat="baseline", params={},
            measurements=[Measurement("clean_accuracy", float(correct.float().mean()))],
            per_point={"pred": pred.tolist(), "correct": correct.tolist(), "y": ctx.y.cpu().tolist()},
            cost={"queries": ctx.target.counter.used - q0, "gradients": 0,
                  "seconds": round(time.perf_counter() - t0, 6)},
        )

