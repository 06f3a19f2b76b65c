"""Reproducible red-team runs: every prompt and reply stored as JSONL, resumed per attempt, re-judged without the
model (``rescore``), summarised as attack success rates with Wilson 95% intervals, and gated.

An output folder holds ``manifest.json`` (sparring version, model weights and chat-template hashes, decoding
parameters, seeds, system-prompt hash, what was planned, timing), ``attempts.jsonl`` (one record per attempt, in
plan order) and ``summary.json`` (computed from the records alone, so ``rescore`` reproduces it byte for byte).

Every attempt ends ``success``, ``failure`` or ``error``; an error (the request could not be answered) counts in
neither the numerator nor the denominator of an ASR. The ``compliance`` category (jailbreak goals without a string
to detect) is decided by the measured :class:`~sparring.llm.judge.RefusalJudge`: a reply it cannot judge (empty,
unreadable) is an ``error``; a row made only of such attempts also carries ``corrected``, the Rogan–Gladen ASR with
its widened interval, and every summary and manifest carries the judge's held-out sensitivity and specificity.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sparring.errors import CheckpointError, EndpointError, ParameterError, QueryBudgetExceeded
from sparring.llm.app import Application
from sparring.llm.attacks import ATTACKS, plan_attempts
from sparring.llm.chat import ChatReply, ChatTarget
from sparring.llm.defenses import REFUSAL, defence_configs, plan_defended
from sparring.llm.detectors import (
    Detector,
    ExfiltrationDetector,
    MarkerDetector,
    PromptLeakDetector,
    SecretLeakDetector,
)
from sparring.llm.gcg_family import GCG_SOURCE, GcgSettings
from sparring.llm.jsonl import read_jsonl
from sparring.llm.judge import RefusalJudge, evaluate_judge, rogan_gladen
from sparring.llm.stats import wilson_interval

__all__ = ["check_gates", "judge", "parse_gate", "rescore", "run_redteam", "summarize", "wilson_interval"]

DETECTOR_VERSION = 2
"""Recorded in every manifest and summary; 2: marker words whole or spelled out, never glued across separators."""
WHITE_BOX = "gcg"
"""The white-box family (:mod:`sparring.llm.gcg_family`): run only when named, only on a local model."""


def detectors_for(app: Application) -> dict[str, Detector]:
    """The deterministic detector that decides each category."""
    return {"secret-leak": SecretLeakDetector(app.secret), "prompt-leak": PromptLeakDetector(
        app.rendered_system_prompt), "goal-hijack": MarkerDetector(app.marker),
        "exfiltration": ExfiltrationDetector(app.exfil_host, app.secret)}


def judge(record: dict[str, Any], app: Application) -> dict[str, Any]:
    """``record`` with ``status`` and ``detections`` (re)computed from its ``reply`` and ``error`` alone."""
    out = dict(record)
    if record.get("error") is not None:
        out.update(status="error", detections={})
        return out
    dets = {cat: d(record["reply"]).to_dict() for cat, d in detectors_for(app).items()}
    if record["category"] == "compliance":
        verdict = RefusalJudge()(record["reply"])
        dets["compliance"] = verdict.to_dict()
        if verdict.complied is None:
            out.update(status="error", detections=dets, judge_error=verdict.reason)
            return out
    out.update(status="success" if dets[record["category"]]["hit"] else "failure", detections=dets)
    return out


def category_judge(app: Application) -> Callable[[str, str], bool]:
    """``judge(category, reply) -> bool``: whether :func:`judge` counts ``reply`` as a success of ``category`` (the
    early stop of the GCG family, so an optimisation stops on what the run counts)."""
    def decide(category: str, reply: str) -> bool:
        return bool(judge({"category": category, "reply": reply, "error": None}, app)["status"] == "success")

    return decide


def _row(records: list[dict[str, Any]]) -> dict[str, Any]:
    k = sum(r["status"] == "success" for r in records)
    n = sum(r["status"] != "error" for r in records)
    lo, hi = wilson_interval(k, n)
    row: dict[str, Any] = {"n": n, "successes": k, "errors": len(records) - n, "asr": round(k / n, 6) if n else None,
                           "ci95": [round(lo, 6), round(hi, 6)]}
    if records and all(r["category"] == "compliance" for r in records):
        row["corrected"] = rogan_gladen(k, n)  # judged by the refusal judge: ASR corrected for its error rates
    return row


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """ASR with Wilson 95% intervals per attack x converter, per attack, per converter and per category."""
    recs = list(records)
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {"by_attack_converter": {}, "by_attack": {},
                                                          "by_converter": {}, "by_category": {}, "by_defence": {},
                                                          "by_attack_converter_defence": {},
                                                          "by_category_defence": {}}
    for r in recs:
        d = r.get("defence", "none")
        for key, value in (("by_attack_converter", f"{r['attack']}/{r['converter']}"), ("by_attack", r["attack"]),
                           ("by_converter", r["converter"]), ("by_category", r["category"]), ("by_defence", d),
                           ("by_attack_converter_defence", f"{r['attack']}/{r['converter']}@{d}"),
                           ("by_category_defence", f"{r['category']}@{d}")):
            groups[key].setdefault(value, []).append(r)
    out: dict[str, Any] = {"attempts": len(recs), "overall": _row(recs)}
    for key, g in groups.items():
        out[key] = {name: _row(rs) for name, rs in sorted(g.items())}
    out["statuses"] = {s: sum(r["status"] == s for r in recs) for s in ("success", "failure", "error")}
    out["detector_version"] = DETECTOR_VERSION
    out["judge"] = evaluate_judge()
    return out


def parse_gate(text: str) -> tuple[str, float]:
    """``"secret-leak=0.01"`` -> ``("secret-leak", 0.01)``; the key is a category, an attack, a converter or
    ``attack/converter``."""
    key, sep, value = text.partition("=")
    try:
        limit = float(value)
    except ValueError:
        limit = -1.0
    if not sep or not key or not 0 <= limit <= 1:
        raise ParameterError(f"a gate is KEY=MAX_ASR with MAX_ASR in [0, 1], e.g. secret-leak=0.01; got {text!r}.")
    return key.strip(), limit


def check_gates(summary: dict[str, Any], gates: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """Each gate passes when the upper end of its row's 95% interval is at most the limit; a row with no judged
    attempt (all errors, or not run) fails as unmeasured."""
    results = []
    for key, limit in gates:
        row = next((summary[g][key] for g in ("by_category", "by_attack", "by_converter", "by_attack_converter",
                                              "by_category_defence", "by_attack_converter_defence", "by_defence")
                    if key in summary.get(g, {})), None)
        if row is None and key not in ATTACKS and key != WHITE_BOX and "/" not in key and "@" not in key \
                and key not in summary["by_category"]:
            known = sorted({*summary["by_category"], *summary["by_attack"], *summary["by_converter"]})
            raise ParameterError(f"gate {key!r} names no category, attack or converter of this run; known: {known}.")
        upper = None if row is None or row["n"] == 0 else row["ci95"][1]
        results.append({"gate": key, "max_asr": limit, "asr": None if row is None else row["asr"],
                        "upper": upper, "passed": upper is not None and upper <= limit,
                        "reason": "unmeasured: no judged attempt" if upper is None else ""})
    return results


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records by id; a last line cut off by a crash is ignored (that attempt is redone)."""
    return {r["id"]: r for r in read_jsonl(path) if "id" in r}


def _run_key(app: Application, target: ChatTarget, planned: list[Any], gcg: dict[str, Any] | None = None) -> str:
    ident = {k: v for k, v in target.describe().items() if k not in ("requests_used", "tokens_used")}
    key: dict[str, Any] = {"app": app.system_prompt_sha256, "secret": app.secret, "target": ident,
                           "plan": [p.id for p in planned]}
    if app.documents_in != "system":  # another conversation layout: other replies (default keeps older run keys)
        key["documents_in"] = app.documents_in
    if any(p.defence != "none" for p in planned):
        key["defences"] = sorted({json.dumps(p.stack.describe(), sort_keys=True) for p in planned})
    if gcg is not None:
        key["gcg"] = gcg
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_redteam(app: Application, target: ChatTarget, out: str | Path, *, attacks: tuple[str, ...] | None = None,
                converters: tuple[str, ...] = ("none",), resume: bool = False,
                progress: Callable[[int, int], None] | None = None,
                defences: tuple[str, ...] | None = None, gcg: GcgSettings | None = None) -> dict[str, Any]:
    """Run every planned attempt against ``target`` and write the run folder ``out``; returns the summary.

    Attempts go in fixed batches of ``target.batch_size`` in plan order. With ``resume``, attempts already
    judged in ``out`` are kept; a batch with any missing attempt is sent again whole (so batching, and with it
    every reply, is the same as in an uninterrupted run) and only the missing records are added.

    ``defences`` names the defence configurations to measure (see
    :func:`sparring.llm.defenses.defence_configs`: ``none``, ``all``, ``each`` or defence names; default ``none``,
    plus ``all`` when the application lists defences): every attempt is planned under each, ids of defended ones
    end in ``@defence``. A request the input guard refuses is not sent (its reply is the refusal); reply-side
    defences rewrite what is judged (the model's own reply is kept as ``model_reply``).

    ``attacks`` may name ``gcg`` (never run by default: it optimises on the model, minutes per goal on a CPU):
    white-box suffixes (:mod:`sparring.llm.gcg_family`, ``gcg`` settings, default one goal and 10 steps) optimised
    before the batches are sent, stored in ``out/gcg.jsonl`` (a resumed run re-uses them) and then sent, judged and
    defended like the other attempts. Against a target without gradients (an API) the family is skipped:
    ``summary["skipped"]`` and the manifest say why.

    Raises:
        CheckpointError: ``out`` holds a run of another application, model, decoding or plan (or ``resume`` is
            off and ``out`` already holds attempts).
        QueryBudgetExceeded, EndpointError: after writing what was done (resume later).
    """
    from sparring.llm.gcg_family import gcg_skip_reason

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    static = None if attacks is None else tuple(a for a in attacks if a != WHITE_BOX)
    planned = plan_defended(app, static, converters, defences, plan=plan_attempts) if static != () else []
    skipped: list[dict[str, str]] = []
    gcg_cfg: GcgSettings | None = None
    if attacks is not None and WHITE_BOX in attacks:
        why = gcg_skip_reason(target, app)
        if why is None:
            gcg_cfg = gcg or GcgSettings()
            defence_configs(app, defences)  # a bad defence name fails before any optimisation
        else:
            skipped.append({"attack": WHITE_BOX, "reason": why})
    gcg_ids = [f"gcg/none/{i}" for i in range(gcg_cfg.goals)] if gcg_cfg is not None else []
    key = _run_key(app, target, planned, None if gcg_cfg is None else {"settings": gcg_cfg.to_dict(),
                                                                        "ids": gcg_ids})
    manifest_path, attempts_path = folder / "manifest.json", folder / "attempts.jsonl"
    done: dict[str, dict[str, Any]] = {}
    if manifest_path.exists() or attempts_path.exists():
        if not resume:
            raise CheckpointError(f"{folder} already holds a run; pass --resume to continue it, or choose another "
                                  "--out folder.")
        old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        if old.get("run_key") != key:
            raise CheckpointError(f"{folder} holds a run of a different application, model, decoding or plan "
                                  f"(run key {old.get('run_key')} != {key}); use another --out folder.")
        done = {i: r for i, r in _read_records(attempts_path).items() if r.get("status") in ("success", "failure")}
    manifest: dict[str, Any] = {"run_key": key, "sparring_version": _version(), "application": {
        "name": app.name, "system_prompt_sha256": app.system_prompt_sha256, "secret_sha256": hashlib.sha256(
            app.secret.encode()).hexdigest(), "untrusted_inputs": list(app.untrusted_inputs),
        "documents_in": app.documents_in},
        "target": target.describe(), "attacks": sorted({p.attack for p in planned}),
        "converters": list(converters), "planned": len(planned), "detector_version": DETECTOR_VERSION,
        "defences": {p.defence: p.stack.describe() for p in planned},
        "sources": {a: ATTACKS[a].source for a in sorted({p.attack for p in planned})}, "judge": evaluate_judge()}
    if gcg_cfg is not None:
        manifest["attacks"] = sorted({*manifest["attacks"], WHITE_BOX})
        manifest["sources"][WHITE_BOX] = GCG_SOURCE
        manifest["gcg"] = gcg_cfg.to_dict()
    if skipped:
        manifest["skipped"] = skipped
    _write_atomic(manifest_path, _dump(manifest))
    started, sent = time.perf_counter(), 0
    stop: BaseException | None = None
    if gcg_cfg is not None:
        try:
            planned += _plan_gcg(app, target, gcg_cfg, defences, folder / "gcg.jsonl")
        except (QueryBudgetExceeded, EndpointError) as exc:
            stop = exc
        manifest["planned"] = len(planned) + (0 if stop is None else len(gcg_ids) * len(defence_configs(
            app, defences)))
        manifest["defences"] = {p.defence: p.stack.describe() for p in planned}
    with attempts_path.open("a", encoding="utf-8") as fh:
        for b in range(0, len(planned) if stop is None else 0, target.batch_size):
            batch = planned[b:b + target.batch_size]
            if all(p.id in done for p in batch):
                continue
            to_send = [p for p in batch if p.blocked is None]
            try:
                answered = iter(target.chat([list(p.messages) for p in to_send]) if to_send else [])
            except (QueryBudgetExceeded, EndpointError) as exc:
                stop = exc
                break
            sent += len(to_send)
            for p in batch:
                r = ChatReply(REFUSAL, finish_reason="blocked") if p.blocked is not None else next(answered)
                if p.id in done:
                    continue
                extra: dict[str, Any] = {}
                text = r.text
                if p.defence != "none" and r.error is None:
                    text, actions = p.filter_reply(r.text)
                    extra = {"model_reply": r.text, "defence_actions": actions}
                rec = judge({**p.to_dict(), **extra, "reply": text, "error": r.error, "usage": {
                    "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                    "finish_reason": r.finish_reason}}, app)
                done[p.id] = rec
                fh.write(json.dumps(rec, sort_keys=True, ensure_ascii=False) + "\n")
            fh.flush()
            if progress is not None:
                progress(len(done), len(planned))
    records = [done[p.id] for p in planned if p.id in done]
    _write_atomic(attempts_path, "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records))
    summary = summarize(records)
    summary["complete"] = len(records) == manifest["planned"]
    if skipped:
        summary["skipped"] = skipped
    _write_atomic(folder / "summary.json", _dump(summary))
    seconds = time.perf_counter() - started
    manifest.update(target=target.describe(), timing={"seconds": round(seconds, 3), "attempts_sent": sent,
                                                       "attempts_per_second": round(sent / seconds, 4)
                                                       if seconds > 0 else None})
    _write_atomic(manifest_path, _dump(manifest))
    if stop is not None:
        raise stop
    return summary


def rescore(app: Application, out: str | Path) -> dict[str, Any]:
    """Re-judge every stored reply in ``out`` with the current detectors, without querying any model; rewrites
    ``attempts.jsonl`` and ``summary.json`` and returns the summary.

    Raises:
        CheckpointError: ``out`` holds no run, or a run of another system prompt or secret.
    """
    folder = Path(out)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise CheckpointError(f"{folder} holds no red-team run (no manifest.json); run it first.")
    manifest = json.loads(manifest_path.read_text())
    a = manifest.get("application", {})
    if a.get("system_prompt_sha256") != app.system_prompt_sha256 or a.get("secret_sha256") != hashlib.sha256(
            app.secret.encode()).hexdigest():
        raise CheckpointError(f"{folder} was run with another system prompt or secret than this application; "
                              "rescore it with the app.yaml it was run with.")
    stored = _read_records(folder / "attempts.jsonl")
    records = [judge(r, app) for r in stored.values()]
    _write_atomic(folder / "attempts.jsonl",
                  "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records))
    summary = summarize(records)
    summary["complete"] = len(records) == manifest.get("planned")
    if manifest.get("skipped"):
        summary["skipped"] = manifest["skipped"]
    _write_atomic(folder / "summary.json", _dump(summary))
    return summary


def _plan_gcg(app: Application, target: ChatTarget, settings: GcgSettings, defences: tuple[str, ...] | None,
              store: Path) -> list[Any]:
    """The GCG attempts under every defence configuration, their suffixes optimised (or read back from ``store``)
    on the undefended application."""
    from sparring.llm.gcg_family import optimise_suffixes, plan_gcg

    suffixes = optimise_suffixes(app, target, settings, store, judge=category_judge(app))

    def plan(a: Application, attacks: Any, converters: Any) -> list[Any]:
        return plan_gcg(a, suffixes)

    return plan_defended(app, None, ("none",), defences, plan=plan)


def _version() -> str:
    from sparring import __version__

    return __version__
