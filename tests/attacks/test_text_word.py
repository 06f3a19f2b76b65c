"""TextFooler word substitution (fast checks with a given neighbour set; MiniLM checks are marked slow) and the
``sparring attack-text`` command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sparring.attacks.text import Constraints, TextFooler
from sparring.cli import build_cli
from sparring.errors import ParameterError
from sparring.targets.text import CallableTextTarget

SYNONYMS = {"free": ["complimentary", "gratis"], "prize": ["award", "reward"], "win": ["get", "earn"],
            "call": ["phone", "ring"], "now": ["today"]}


def _spam_score(texts: list[str]) -> np.ndarray:
    k = [sum(w in ("free", "prize", "win", "call", "award") for w in re.findall(r"\w+", t.lower())) for t in texts]
    p = np.array([1 - 0.8 * 0.5**v for v in k])
    return np.stack([1 - p, p], axis=1)


def _word_overlap(original: str, candidates: list[str]) -> torch.Tensor:
    """A stand-in similarity: share of the original's words kept."""
    a = set(original.lower().split())
    return torch.tensor([len(a & set(c.lower().split())) / len(a) for c in candidates])


def test_textfooler_substitutes_neighbours_until_the_filter_flips() -> None:
    target = CallableTextTarget(_spam_score)
    attack = TextFooler(min_similarity=0.4, neighbours=lambda w: SYNONYMS.get(w.lower(), []),
                        constraints=Constraints(similarity=_word_overlap))
    res = attack(target, ["WIN a FREE prize call us now"], [1])
    assert res.success.all()
    assert all(e.kind == "synonym" and e.new.lower() in SYNONYMS[e.old.lower()] for e in res.edits[0])
    assert "award" not in res.adv_texts[0].lower()  # the substitute that is still a spam word never wins
    assert res.similarity[0] >= 0.4
    assert res.adv_texts[0].split()[0].isupper()  # case kept: WIN -> GET


def test_the_similarity_floor_is_enforced() -> None:
    target = CallableTextTarget(_spam_score)
    attack = TextFooler(min_similarity=0.9, neighbours=lambda w: SYNONYMS.get(w.lower(), []),
                        constraints=Constraints(similarity=_word_overlap))
    res = attack(target, ["WIN a FREE prize call us now"], [1])
    assert not res.success.any() and res.edited_words.sum() == 0


def test_textfooler_parameters_are_checked() -> None:
    target = CallableTextTarget(_spam_score)
    with pytest.raises(ParameterError, match="n_neighbours"):
        TextFooler(n_neighbours=0, neighbours=lambda w: [])(target, ["free"], [1])
    with pytest.raises(ParameterError, match="min_similarity"):
        TextFooler(min_similarity=2.0, neighbours=lambda w: [])(target, ["free"], [1])


@pytest.mark.slow
def test_textfooler_on_spam_minilm_at_similarity_08() -> None:
    from sparring.data.text import load_sms_spam, load_text_model

    target = load_text_model("spam-minilm")
    ds = load_sms_spam()
    spam = [t for t, y in zip(ds.x_test, ds.y_test.tolist(), strict=True) if y == 1][:10]
    res = TextFooler(min_similarity=0.8)(target, spam, [1] * len(spam))
    assert res.attack_success_rate >= 0.2
    assert bool((res.similarity[res.broken] >= 0.8).all())


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(build_cli(), list(args))
    return res.exit_code, res.output


def test_attack_text_cli_runs_and_reports_json(tmp_path: Path) -> None:
    page = tmp_path / "examples.html"
    code, out = _cli("attack-text", "bad-characters", "--n", "3", "--max-chars", "4", "--json", "--html", str(page))
    assert code == 0, out
    assert "<table>" in page.read_text(encoding="utf-8")
    d = json.loads(out)
    assert d["attack"] == "bad-characters" and d["n"] == 3 and d["params"]["constraints"]["max_chars"] == 4
    code, out = _cli("attack-text", "bad-characters", "--n", "3", "--query-budget", "10", "--json")
    assert code == 5, out  # the budget ran out: every message is unknown, none counted robust
    d = json.loads(out[:out.index("\nerror (QueryBudgetExceeded)")])
    assert d["budget_exhausted"] is True and d["n_unknown"] == 3 and d["robust_accuracy"] == 0.0
    code, out = _cli("attack-text", "reorder", "--n", "3", "--max-chars", "3", "--max-queries", "60", "--json")
    d = json.loads(out)
    assert code == 0 and d["attack"] == "bidi-reorder" and d["params"]["then"]["attack"] == "bad-characters"
    assert d["params"]["constraints"]["max_chars"] == 3


def test_attack_text_cli_errors_have_exit_codes() -> None:
    code, out = _cli("attack-text", "bad-characters", "--model", "spam-bert")
    assert code == 3 and "spam-tfidf-logreg" in out
    code, out = _cli("attack-text", "bad-characters", "--data", "/nonexistent/messages.txt")
    assert code == 3 and "one message per line" in out
