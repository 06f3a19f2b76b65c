"""Utility of a defended LLM application: benign tasks with checkable answers (arithmetic, extraction from a
document, formatting, yes/no facts stated in the document), scored deterministically, under every defence
configuration, so a defence's cost is measured next to its ASR (Liu et al. 2024, "Formalizing and Benchmarking
Prompt Injection Attacks and Defenses", report both for every defence; Hines et al. 2024 measure spotlighting's
cost on NLP tasks the same way).

A task's document enters the application as an untrusted document (so spotlighting encodes or marks it), its prompt
is the user turn. A request the input guard refuses scores as wrong and counts as a guard false positive.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from sparring.errors import ParameterError
from sparring.llm.app import Application, Document
from sparring.llm.chat import ChatTarget, Message
from sparring.llm.defenses import REFUSAL, build_stack, defence_configs

__all__ = ["UTILITY_CHECKS", "load_utility_set", "run_utility", "score_task"]

_NUM = re.compile(r"-?\d+(?:[.,]\d+)?")
_YESNO = re.compile(r"\b(yes|no)\b", re.I)


def _number(task: dict[str, Any], reply: str) -> bool:
    asked = set(_NUM.findall(task["prompt"]))
    got = [n for n in _NUM.findall(reply.replace(",", "")) if n not in asked]
    return bool(got) and float(got[0]) == float(task["answer"])


def _json(task: dict[str, Any], reply: str) -> bool:
    m = re.search(r"\{[^{}]*\}", reply)
    if m is None:
        return False
    try:
        return bool(json.loads(m.group(0)) == task["answer"])
    except json.JSONDecodeError:
        return False


def _compact(s: str) -> str:
    return re.sub(r"\s+", "", s)


UTILITY_CHECKS: dict[str, Callable[[dict[str, Any], str], bool]] = {
    "number": _number,
    "contains": lambda t, r: t["answer"].casefold() in r.casefold(),
    "contains-case": lambda t, r: t["answer"] in r,
    "contains-compact": lambda t, r: _compact(t["answer"]) in _compact(r),
    "exact-case": lambda t, r: r.strip().strip(".!\"'`*").strip() == t["answer"],
    "json": _json,
    "yesno": lambda t, r: (m := _YESNO.search(r)) is not None and m.group(1).lower() == t["answer"],
}


def load_utility_set() -> list[dict[str, Any]]:
    """The benign tasks shipped with sparring: ``{"id", "kind", "document" (or None), "prompt", "answer",
    "check"}`` with ``check`` one of :data:`UTILITY_CHECKS`."""
    text = resources.files("sparring.llm").joinpath("data/utility_set.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def score_task(task: dict[str, Any], reply: str) -> bool:
    """Whether ``reply`` answers ``task`` (deterministic: number, substring, exact, JSON or first yes/no)."""
    try:
        check = UTILITY_CHECKS[task["check"]]
    except KeyError:
        raise ParameterError(f"unknown utility check {task.get('check')!r}; checks: {', '.join(UTILITY_CHECKS)}.") \
            from None
    return bool(check(task, reply))


def run_utility(app: Application, target: ChatTarget, *, defences: Sequence[str] | None = None,
                tasks: list[dict[str, Any]] | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Score ``tasks`` (default: the shipped set) on ``app`` under each defence configuration; returns, per
    configuration, ``{"n", "correct", "accuracy", "ci95", "blocked", "by_kind"}``. Identical conversations are sent
    once (configurations that only screen or filter reuse the undefended replies). With ``out``, every record
    is written to ``out/utility.jsonl``."""
    from sparring.llm.run import wilson_interval

    todo = load_utility_set() if tasks is None else tasks
    plain = replace(app, active_defences=None)
    records: list[dict[str, Any]] = []
    cache: dict[str, str] = {}
    summary: dict[str, Any] = {}
    for name, specs in defence_configs(app, defences):
        stack = build_stack(app, name, specs)
        defended = replace(app, active_defences=stack) if specs else plain
        rows: list[dict[str, Any]] = []
        for t in todo:
            docs = (Document("task", t["document"], True),) if t.get("document") else ()
            msgs: list[Message] = defended.messages(user=t["prompt"], documents=docs)
            texts = ([t["prompt"]] if "user" in app.untrusted_inputs else []) + (
                [t["document"]] if docs and "documents" in app.untrusted_inputs else [])
            rows.append({"task": t, "messages": msgs, "blocked": stack.screen(texts)})
        keys = [json.dumps(r["messages"], sort_keys=True) for r in rows]
        send = list(dict.fromkeys(k for k, r in zip(keys, rows, strict=True) if r["blocked"] is None
                                  and k not in cache))
        replies = target.chat([json.loads(k) for k in send]) if send else []
        for k, rep in zip(send, replies, strict=True):
            cache[k] = rep.text if rep.error is None else ""
        for k, r in zip(keys, rows, strict=True):
            raw = REFUSAL if r["blocked"] is not None else cache[k]
            shown, actions = stack.filter_reply(raw)
            t = r["task"]
            records.append({"id": t["id"] if name == "none" else f"{t['id']}@{name}", "defence": name,
                            "kind": t["kind"], "answer": t["answer"], "reply": shown, "model_reply": raw,
                            "blocked": r["blocked"], "actions": actions, "correct": score_task(t, shown)})
        mine = [rec for rec in records if rec["defence"] == name]
        summary[name] = _row(mine, wilson_interval)
        summary[name]["by_kind"] = {kind: _row([x for x in mine if x["kind"] == kind], wilson_interval)
                                    for kind in sorted({x["kind"] for x in mine})}
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "utility.jsonl").write_text("".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n"
                                                      for r in records), encoding="utf-8")
    return summary


def _row(recs: list[dict[str, Any]], wilson: Any) -> dict[str, Any]:
    k, n = sum(r["correct"] for r in recs), len(recs)
    lo, hi = wilson(k, n)
    return {"n": n, "correct": k, "accuracy": round(k / n, 6) if n else None, "ci95": [round(lo, 6), round(hi, 6)],
            "blocked": sum(r["blocked"] is not None for r in recs)}
