"""An exhausted query budget under ``--json``: the summary is still the one JSON object on stdout, and it carries
the error keys every ``--json`` failure has (``error``, ``type``, ``exit_code``), with exit code 5."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sparring.cli import EXIT_BUDGET, build_cli


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def test_attack_square_out_of_budget_json_is_the_summary_with_the_json_error() -> None:
    code, out, err = _run("attack", "square", "--n", "16", "--query-budget", "30", "--json")
    assert code == EXIT_BUDGET, err
    d = json.loads(out)  # one object: the summary and the error together
    assert d["type"] == "QueryBudgetExceeded" and d["exit_code"] == EXIT_BUDGET
    assert "query budget (30) ran out" in d["error"] and "--query-budget" in d["error"]
    assert d["budget_exhausted"] and d["n_unknown"] > 0 and d["attack"] == "square"
    assert "error (QueryBudgetExceeded)" in err


def test_attack_within_budget_json_has_no_error_keys() -> None:
    code, out, err = _run("attack", "square", "--n", "4", "--n-queries", "20", "--query-budget", "1000", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert not d["budget_exhausted"] and "error" not in d and "exit_code" not in d


def test_attack_text_out_of_budget_json_carries_the_json_error() -> None:
    code, out, err = _run("attack-text", "bad-characters", "--n", "10", "--max-chars", "3", "--query-budget", "14",
                          "--json")
    assert code == EXIT_BUDGET, err
    d = json.loads(out)
    assert d["type"] == "QueryBudgetExceeded" and d["exit_code"] == EXIT_BUDGET and d["budget_exhausted"]
    assert f"{d['n_unknown']} of 10 messages are unknown" in d["error"]
