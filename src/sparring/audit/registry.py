"""The check registry: what an audit can run, what each check needs, and the metrics gates may refer to
(:mod:`sparring.audit.metrics`, re-exported here).

A *check* is a small object with a name, the threat it tests, the access it needs, a ``plan`` method that turns a
threat model into zero or more *steps* (or explains why it does not apply), and a ``run`` method that executes one
step. Attack families register their checks with :func:`register_check`; the planner only walks the registry, so a
new family plugs in without editing the planner.

Two optional methods let a family speak in the report without editing it; both receive only the check's own step
results and must be pure functions of them (a resumed audit then reports what an uninterrupted one would):

* ``findings(threat_model, results) -> list[Finding]`` (:class:`sparring.audit.findings.Finding`);
* ``section(results) -> ReportSection | None``: a titled block of text, tables and figures in the HTML report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from sparring.audit.metrics import METRICS, MetricDef
from sparring.targets.spec import Access

if TYPE_CHECKING:
    import torch

    from sparring.audit.threat import ThreatModel
    from sparring.targets.base import Target

__all__ = [
    "CHECKS",
    "METRICS",
    "Check",
    "Measurement",
    "MetricDef",
    "PlanContext",
    "ReportFigure",
    "ReportSection",
    "ReportTable",
    "ReportTranscript",
    "RunContext",
    "Skip",
    "Step",
    "StepResult",
    "Threat",
    "register_check",
]

Threat = Literal["evasion", "poisoning", "extraction", "inversion", "membership", "certification", "baseline", "text",
                 "tabular", "drift", "llm"]


@dataclass(frozen=True)
class Step:
    """One unit of audit work (checkpointed on its own)."""

    id: str
    check: str
    threat: Threat
    params: dict[str, Any]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Skip:
    """A check the planner did not choose, and why."""

    check: str
    threat: Threat
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Measurement:
    metric: str
    value: float
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepResult:
    """What a step produced. Everything is JSON-ready (lists, numbers, strings): it is the checkpoint format.

    ``per_point`` holds per-example evidence (e.g. ``robust``: bools, finished and still correct; ``unknown``: bools,
    the query budget ran out first; ``adv_pred``: ints) that gates combine across steps; ``examples`` holds a few
    inputs for the report (lists of floats); ``cost`` has queries, gradients, seconds.

    A step that raised has ``status="error"``, ``error`` (``"Type: message"``), ``error_type``, ``fault`` (True when
    the model or endpoint failed: unreachable, cannot load, refuses access) and, only when the audit runs with
    ``debug=True``, ``traceback``. Errored steps are never checkpointed: a resumed audit runs them again.
    """

    step_id: str
    check: str
    threat: Threat
    params: dict[str, Any]
    status: Literal["done", "error"] = "done"
    measurements: list[Measurement] = field(default_factory=list)
    per_point: dict[str, list[Any]] = field(default_factory=dict)
    examples: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    fault: bool = False
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepResult:
        d = dict(d)
        d["measurements"] = [Measurement(**m) for m in d.get("measurements", [])]
        return cls(**d)

    def value(self, metric: str) -> float | None:
        for m in self.measurements:
            if m.metric == metric:
                return m.value
        return None


@dataclass
class ReportTable:
    """A table in a report section: a caption, column names, and rows of plain values (str, int, float, None)."""

    caption: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class ReportFigure:
    """A figure in a report section: a caption and a PNG data URI (``sparring.audit.report.plots.png(fig)``)."""

    caption: str
    png: str


@dataclass
class ReportTranscript:
    """A conversation in a report section: a caption and its turns as ``(role, segments)``, each segment
    ``(text, marked)``; the HTML escapes every segment and wraps marked ones (e.g. the injected text) in
    ``<mark>``."""

    caption: str
    turns: list[tuple[str, list[tuple[str, bool]]]]


@dataclass
class ReportSection:
    """A family's block in the HTML report (poisoning scans, extraction, privacy, ...)."""

    title: str
    text: str = ""
    tables: list[ReportTable] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    transcripts: list[ReportTranscript] = field(default_factory=list)


@dataclass
class PlanContext:
    """What the planner knows: the threat model and the loaded target."""

    threat_model: ThreatModel
    target: Target

    @property
    def access(self) -> Access:
        """The access an attacker of this threat model has: the target's, capped by knowledge and API output."""
        tm = self.threat_model
        cap = {"white-box": Access.GRADIENTS, "grey-box": Access.SCORES, "black-box": Access.SCORES}[
            tm.attacker.knowledge]
        if tm.exposure.output == "labels":
            cap = min(cap, Access.LABELS)
        return min(self.target.access, cap)


@dataclass
class RunContext:
    """What a step runs with: the target as the attacker sees it, the audit data, and a per-step generator."""

    threat_model: ThreatModel
    target: Target
    attacker_target: Target
    x: torch.Tensor
    y: torch.Tensor
    generator_seed: int
    progress: bool = False
    out_dir: Path | None = None
    """The audit's output folder: a check that keeps files beside the report (the LLM transcripts) writes there."""
    resume: bool = False
    """Whether the audit resumes: a check with its own per-item progress (LLM attempts) keeps it only then."""


class Check(Protocol):
    name: str
    threat: Threat
    needs: Access

    def plan(self, ctx: PlanContext) -> list[Step] | Skip: ...

    def run(self, step: Step, ctx: RunContext) -> StepResult: ...


CHECKS: dict[str, Check] = {}

C = TypeVar("C", bound=type)


def register_check(cls: C) -> C:
    """Class decorator: instantiate the check and add it to :data:`CHECKS` (in registration order)."""
    obj: Check = cls()
    CHECKS[obj.name] = obj
    return cls
