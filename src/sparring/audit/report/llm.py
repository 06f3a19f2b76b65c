"""The LLM application's part of the reports: the HTML section (ASR with 95% intervals per attack family x defence,
the defence comparison with utility, the worst transcripts with the injected text marked) and the block of
``report.json`` (the same tables plus the refusal judge's measured sensitivity and specificity)."""

from __future__ import annotations

from typing import Any

from sparring.audit.llm_results import deployed_defence, rows_by, utility_rows
from sparring.audit.registry import ReportSection, ReportTable, ReportTranscript, StepResult

__all__ = ["llm_report_data", "llm_section", "mark"]

MAX_TRANSCRIPTS = 6
MAX_CHARS = 1500


def _ci(row: dict[str, Any]) -> str:
    lo, hi = row["ci95"]
    return f"{lo:.3f}-{hi:.3f}"


def _judge(results: list[StepResult]) -> dict[str, Any] | None:
    for r in results:
        if r.examples.get("judge"):
            j: dict[str, Any] = r.examples["judge"]
            return j
    return None


def llm_report_data(results: list[StepResult]) -> dict[str, Any]:
    """The LLM block of report.json: rows per family x defence x category and per category x defence, utility per
    defence, the deployed configuration and the judge's held-out sensitivity and specificity."""
    return {
        "deployed_defence": deployed_defence(results),
        "asr_by_attack_defence_category": [{"attack": a, "defence": d, "category": c, **row}
                                           for (a, d, c), row in rows_by(results, "attack", "defence",
                                                                         "category").items()],
        "asr_by_category_defence": [{"category": c, "defence": d, **row}
                                    for (c, d), row in rows_by(results, "category", "defence").items()],
        "asr_by_defence": [{"defence": d, **row} for (d,), row in rows_by(results, "defence").items()],
        "utility_by_defence": utility_rows(results),
        "judge": _judge(results),
    }


def mark(text: str, needle: str | None) -> list[tuple[str, bool]]:
    """``text`` as segments, each occurrence of ``needle`` marked (for ``<mark>``), cut to :data:`MAX_CHARS`
    around the first one."""
    if needle and len(text) > MAX_CHARS:
        at = text.find(needle)
        start = max(0, min(at - 200, len(text) - MAX_CHARS)) if at >= 0 else 0
        text = ("…" if start else "") + text[start:start + MAX_CHARS] + ("…" if start + MAX_CHARS < len(text)
                                                                           else "")
    elif len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + "…"
    if not needle or needle not in text:
        return [(text, False)]
    out: list[tuple[str, bool]] = []
    parts = text.split(needle)
    for i, part in enumerate(parts):
        if part:
            out.append((part, False))
        if i < len(parts) - 1:
            out.append((needle, True))
    return out


def _transcript(w: dict[str, Any]) -> ReportTranscript:
    injected = w.get("injected")
    turns = [(str(m["role"]), mark(str(m["content"]), injected)) for m in w.get("messages") or []]
    turns.append(("assistant (judged)", mark(str(w.get("reply", "")), None)))
    if w.get("model_reply") is not None and w.get("model_reply") != w.get("reply"):
        turns.append(("model before the reply-side defences", mark(str(w["model_reply"]), None)))
    found = injected is not None and any(marked for _, segs in turns for _, marked in segs)
    how = "" if found or injected is None else " (the injected text is transformed by the defence: not marked)"
    return ReportTranscript(f"{w['id']}: {w['category']} via {w['attack']}, defence {w['defence']}, injected into "
                            f"{w.get('where')}{how}", turns)


def llm_section(results: list[StepResult]) -> ReportSection | None:
    """The HTML section of an LLM audit, or None without red-team results."""
    by_family = rows_by(results, "attack", "defence", "category")
    if not by_family:
        return None
    deployed = deployed_defence(results)
    family_rows = [[a, d, c, row["n"], row["successes"], row["errors"], row["asr"], _ci(row)]
                   for (a, d, c), row in by_family.items()]
    cat_rows = []
    for (c, d), row in rows_by(results, "category", "defence").items():
        corr = row.get("corrected")
        cat_rows.append([c, d, row["n"], row["successes"], row["asr"], _ci(row),
                         None if corr is None else f"{corr['asr']} ({corr['ci95'][0]:.3f}-{corr['ci95'][1]:.3f})"])
    utility = utility_rows(results)
    leak = rows_by(results, "defence", "category")
    comparison = []
    for (d,), row in rows_by(results, "defence").items():
        u = utility.get(d)
        s = leak.get((d, "secret-leak"))
        comparison.append([d + (" (deployed)" if d == deployed else ""), row["n"], row["asr"], _ci(row),
                           None if s is None else s["asr"], None if s is None else _ci(s),
                           None if u is None else u["accuracy"], None if u is None else _ci(u),
                           None if u is None else f"{u['blocked']}/{u['n']}"])
    worst = [w for r in sorted(results, key=lambda r: (r.params.get("defence") != deployed, r.step_id))
             if r.check == "llm-redteam" and r.status == "done" for w in r.examples.get("worst", [])]
    order = {"secret-leak": 0, "exfiltration": 1, "goal-hijack": 2, "prompt-leak": 3, "compliance": 4}
    worst.sort(key=lambda w: (w["defence"] != deployed, order.get(w["category"], 9)))
    judge = _judge(results)
    judge_text = "" if judge is None else (
        f" The compliance category is judged by the refusal judge, measured on {judge['heldout']} held-out labelled "
        f"replies: sensitivity {judge['sensitivity']['rate']:.3f} (95% CI {_ci(judge['sensitivity'])}), "
        f"specificity {judge['specificity']['rate']:.3f} (95% CI {_ci(judge['specificity'])}); its ASR is also "
        "given Rogan-Gladen corrected.")
    return ReportSection(
        title="LLM application: prompt injection, leakage and jailbreaks",
        text=("Every attempt is one conversation sent to the application; the deterministic detectors (secret in any "
              "encoding, system-prompt run, marker, exfiltration URL) decide success. ASR = successes / judged "
              "attempts; errors count in neither. Intervals are Wilson 95%; gates use their upper end. Payloads are "
              f"fixed (a non-adaptive attacker). Deployed configuration: {deployed}." + judge_text
              + " Every prompt and reply is in llm/*.jsonl next to this report."),
        tables=[ReportTable("ASR per attack family x defence", ["attack family", "defence", "category", "judged",
                                                                  "successes", "errors", "ASR", "95% CI"],
                            family_rows),
                ReportTable("ASR per category x defence", ["category", "defence", "judged", "successes", "ASR",
                                                           "95% CI", "corrected ASR (judge)"], cat_rows),
                ReportTable("defence comparison: ASR and utility with and without", [
                    "defence", "judged attempts", "ASR (all)", "95% CI", "secret-leak ASR", "95% CI",
                    "utility (benign tasks)", "95% CI", "benign requests refused by the guard"], comparison)],
        transcripts=[_transcript(w) for w in worst[:MAX_TRANSCRIPTS]],
    )
