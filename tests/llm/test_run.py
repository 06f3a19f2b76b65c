"""Reproducible runs: JSONL records, resume to the identical file, rescore to the identical summary, gates,
errors counted in neither numerator nor denominator, and the redteam command."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from sparring.cli import build_cli
from sparring.errors import CheckpointError, EndpointError, QueryBudgetExceeded
from sparring.llm.app import Application
from sparring.llm.chat import LocalChatModel
from sparring.llm.openai_api import OpenAIChatClient
from sparring.llm.run import check_gates, parse_gate, rescore, run_redteam, summarize, wilson_interval

from .conftest import SECRET, SYSTEM, needs_model

APP_YAML = f"""name: test-bot
system_prompt: "{SYSTEM}"
secret: {SECRET}
untrusted_inputs: [user]
"""


def _app(tmp_path: Path) -> tuple[Application, Path]:
    from sparring.llm.app import load_application

    path = tmp_path / "app.yaml"
    path.write_text(APP_YAML)
    return load_application(path), path


def _echo_api(fail_after: int | None = None) -> httpx.MockTransport:
    """An OpenAI-compatible API that repeats the user turn (so secret-extraction payloads never leak) and, with
    ``fail_after``, goes down after that many requests."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if fail_after is not None and calls["n"] > fail_after:
            raise httpx.ConnectError("connection refused")
        user = json.loads(request.content)["messages"][-1]["content"]
        leak = "password" in user and "base64" not in user  # 5 of the 8 secret-extraction payloads
        text = "The secret password is PLUTO-7731" if leak else f"You said: {user}"
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": text}}]})

    return httpx.MockTransport(handler)


def test_wilson_interval_matches_the_closed_form() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(5, 10)
    assert abs(lo - 0.236593) < 1e-5 and abs(hi - 0.763407) < 1e-5
    assert abs(wilson_interval(0, 8)[1] - 0.324408) < 1e-5  # z^2/(n+z^2) for k = 0


def test_errors_count_in_neither_numerator_nor_denominator() -> None:
    recs = [{"attack": "a", "converter": "none", "category": "secret-leak", "status": s}
            for s in ("success", "failure", "error", "error")]
    row = summarize(recs)["by_category"]["secret-leak"]
    assert (row["n"], row["successes"], row["errors"], row["asr"]) == (2, 1, 2, 0.5)
    gates = check_gates(summarize(recs), [parse_gate("secret-leak=0.9"), parse_gate("a/none=1")])
    assert [g["passed"] for g in gates] == [False, True]  # upper bound 0.905 > 0.9
    only_errors = summarize([{**recs[2]}])
    assert check_gates(only_errors, [("secret-leak", 1.0)])[0]["reason"].startswith("unmeasured")


def test_endpoint_down_mid_run_keeps_the_partial_run_and_resume_completes_it(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    down = OpenAIChatClient("http://api.test", transport=_echo_api(fail_after=3), retries=0)
    with pytest.raises(EndpointError):
        run_redteam(app, down, tmp_path / "run", attacks=("secret-extraction",))
    partial = (tmp_path / "run" / "attempts.jsonl").read_text().splitlines()
    assert len(partial) == 3 and not json.loads((tmp_path / "run" / "summary.json").read_text())["complete"]
    with pytest.raises(CheckpointError, match="--resume"):
        run_redteam(app, down, tmp_path / "run", attacks=("secret-extraction",))
    back = OpenAIChatClient("http://api.test", transport=_echo_api(), retries=0)
    summary = run_redteam(app, back, tmp_path / "run", attacks=("secret-extraction",), resume=True)
    assert back.counter.used == 5 and summary["complete"] and summary["attempts"] == 8
    fresh = OpenAIChatClient("http://api.test", transport=_echo_api(), retries=0)
    run_redteam(app, fresh, tmp_path / "fresh", attacks=("secret-extraction",))
    assert (tmp_path / "run" / "attempts.jsonl").read_bytes() == (tmp_path / "fresh" / "attempts.jsonl").read_bytes()
    # 'Encode ... in base64' is echoed: its reply holds the payload, not the secret -> a failure
    assert summary["by_category"]["secret-leak"]["successes"] == 5
    other = Application(system_prompt="Keep {secret}.", secret="OTHER-SECRET-1")
    with pytest.raises(CheckpointError, match="different application"):
        run_redteam(other, back, tmp_path / "run", attacks=("secret-extraction",), resume=True)


def test_redteam_command_rescore_gate_and_typo(tmp_path: Path) -> None:
    app, path = _app(tmp_path)
    run_redteam(app, OpenAIChatClient("http://api.test", transport=_echo_api()), tmp_path / "run",
                attacks=("secret-extraction", "prompt-leak"))
    stored = (tmp_path / "run" / "summary.json").read_bytes()
    runner = CliRunner()
    ok = runner.invoke(build_cli(), ["redteam", str(path), "--out", str(tmp_path / "run"), "--rescore", "--json",
                                     "--max-asr", "prompt-leak=1"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["by_category"]["secret-leak"]["successes"] == 5
    assert (tmp_path / "run" / "summary.json").read_bytes() == stored
    gate = runner.invoke(build_cli(), ["redteam", str(path), "--out", str(tmp_path / "run"), "--rescore",
                                       "--max-asr", "secret-leak=0.01"])
    assert gate.exit_code == 6 and "FAIL" in gate.output
    path.write_text(APP_YAML.replace("secret:", "secert:"))
    typo = runner.invoke(build_cli(), ["redteam", str(path), "--out", str(tmp_path / "x"), "--rescore"])
    assert typo.exit_code == 3 and "did you mean 'secret'" in typo.output


def test_rescore_rejudges_stored_replies_without_a_model(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    summary = run_redteam(app, OpenAIChatClient("http://api.test", transport=_echo_api()), tmp_path / "run",
                          attacks=("secret-extraction",))
    attempts = tmp_path / "run" / "attempts.jsonl"
    original = attempts.read_bytes()
    tampered = [json.loads(line) | {"status": "failure"} for line in original.decode().splitlines()]
    attempts.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in tampered))
    assert rescore(app, tmp_path / "run") == json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary == rescore(app, tmp_path / "run") and attempts.read_bytes() == original


@needs_model
@pytest.mark.usefixtures("one_thread")
def test_real_model_run_interrupted_by_its_budget_resumes_to_the_identical_jsonl(
        smollm: LocalChatModel, tmp_path: Path) -> None:
    app, _ = _app(tmp_path)

    def target(budget: int | None) -> LocalChatModel:
        return LocalChatModel(smollm.model, smollm.tokenizer, name=smollm.name, source=smollm.source,
                              max_new_tokens=8, batch_size=4, request_budget=budget)

    with pytest.raises(QueryBudgetExceeded):
        run_redteam(app, target(4), tmp_path / "cut", attacks=("secret-extraction",))
    assert len((tmp_path / "cut" / "attempts.jsonl").read_text().splitlines()) == 4
    resumed = run_redteam(app, target(None), tmp_path / "cut", attacks=("secret-extraction",), resume=True)
    whole = run_redteam(app, target(None), tmp_path / "whole", attacks=("secret-extraction",))
    assert resumed == whole
    assert (tmp_path / "cut" / "attempts.jsonl").read_bytes() == (tmp_path / "whole" / "attempts.jsonl").read_bytes()
    manifest = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert manifest["target"]["weights_sha256"] == smollm.source["weights_sha256"]
    assert manifest["target"]["decoding"]["max_new_tokens"] == 8
    assert len(manifest["target"]["chat_template_sha256"]) == 64
    assert manifest["application"]["system_prompt_sha256"] == app.system_prompt_sha256
    assert whole["by_attack"]["secret-extraction"]["successes"] >= 1  # the real victim leaks
