"""The metrics an audit gate may test (``gates: - metric: ...``): what each means, the gate keys it needs, and an
example gate.

Its own module, below both :mod:`sparring.audit.threat` (which validates gates against it) and
:mod:`sparring.audit.registry` (which re-exports it), so neither imports the other at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LLM_METRICS", "METRICS", "MetricDef"]


@dataclass(frozen=True)
class MetricDef:
    """A metric a gate may test: its meaning, the gate keys it needs, and an example gate."""

    description: str
    params: tuple[str, ...]
    example: str


METRICS: dict[str, MetricDef] = {
    "clean_accuracy": MetricDef("accuracy on the unperturbed audit data", (), "metric: clean_accuracy, min: 0.9"),
    "robust_accuracy": MetricDef(
        "accuracy under every attack run at the budget (per-point worst case over white-box, black-box and retry "
        "steps; a point an attack left unfinished for lack of queries is unknown and makes the gate unmeasured)",
        ("norm", "eps"), "metric: robust_accuracy, norm: linf, eps: 0.1, min: 0.6",
    ),
    "certified_accuracy": MetricDef(
        "fraction of points certified correct: L∞ bound propagation at eps (norm: linf) or randomized smoothing at "
        "an L2 radius (norm: l2)",
        ("norm",), "metric: certified_accuracy, norm: l2, radius: 0.25, min: 0.5",
    ),
    "text_evasion_rate": MetricDef(
        "text models: share of attacked messages at least one text attack gets through (per-message union over the "
        "attacks) with at most max_chars edited characters; method: none (the model as it is, default) or "
        "normalize (behind Unicode normalisation)",
        ("max_chars",), "metric: text_evasion_rate, max_chars: 3, max: 0.1",
    ),
    "drift_p_value": MetricDef(
        "monitoring data (threat model monitoring:): the smallest p-value of the drift tests of current vs "
        "reference, Bonferroni-corrected over the tests; method: one test's own p-value (mmd, ks, ...)",
        (), "metric: drift_p_value, min: 0.01",
    ),
    "drift_detected": MetricDef(
        "monitoring data: 1 when the drift tests (Bonferroni over the tests) detect drift at monitoring.alpha, "
        "else 0; method: one test only", (), "metric: drift_detected, max: 0",
    ),
    **{f"{cat.replace('-', '_')}_asr_upper": MetricDef(
        f"LLM applications: upper end of the Wilson 95% interval of the {cat} attack success rate over every attack "
        "family's attempts in that category" + (" (the refusal judge's verdicts, Rogan-Gladen corrected for its "
                                                "measured sensitivity and specificity)" if cat == "compliance" else "")
        + "; method: the defence configuration (none, all, a defence name; default: the application as deployed, "
        "i.e. all when it lists defences, else none)",
        (), f"metric: {cat.replace('-', '_')}_asr_upper, max: 0.01") for cat in (
            "secret-leak", "prompt-leak", "goal-hijack", "exfiltration", "tool-misuse", "compliance")},
    "llm_asr_upper": MetricDef(
        "LLM applications: upper end of the Wilson 95% interval of the attack success rate over every attempt of "
        "the detector-judged categories (all but compliance); method: the defence configuration",
        (), "metric: llm_asr_upper, max: 0.05"),
    "llm_utility": MetricDef(
        "LLM applications: share of the shipped benign tasks answered correctly (deterministic checks); method: "
        "the defence configuration (a defence that refuses benign requests loses utility)",
        (), "metric: llm_utility, method: all, min: 0.3"),
}

LLM_CATEGORIES: dict[str, str | None] = {
    "secret_leak_asr_upper": "secret-leak", "prompt_leak_asr_upper": "prompt-leak",
    "goal_hijack_asr_upper": "goal-hijack", "exfiltration_asr_upper": "exfiltration",
    "tool_misuse_asr_upper": "tool-misuse",
    "compliance_asr_upper": "compliance", "llm_asr_upper": None}
"""The ASR gate metrics and the attack category each watches (None: every detector-judged category)."""

LLM_METRICS: tuple[str, ...] = (*LLM_CATEGORIES, "llm_utility")
"""The metrics measured on an LLM application (and the only ones it can be gated on)."""
