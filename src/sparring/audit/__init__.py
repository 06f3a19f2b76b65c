"""Audits: a declarative threat model drives a plan of checks, a resumable run, findings, gates and reports.

    from sparring.audit import load_threat_model, run_audit, write_reports
    audit = run_audit(load_threat_model("threat.yaml"), "report/")
    write_reports(audit, "report/")          # report.html, report.json, summary.md, junit.xml
"""

from sparring.audit.findings import Finding, GateResult
from sparring.audit.registry import CHECKS, METRICS, Step, StepResult, register_check
from sparring.audit.runner import Audit, Plan, load_system, plan_audit, run_audit
from sparring.audit.threat import ThreatModel, load_threat_model, parse_threat_model

__all__ = [
    "CHECKS",
    "METRICS",
    "Audit",
    "Finding",
    "GateResult",
    "Plan",
    "Step",
    "StepResult",
    "ThreatModel",
    "load_system",
    "load_threat_model",
    "parse_threat_model",
    "plan_audit",
    "register_check",
    "run_audit",
]
