"""Character-level text attacks: goals, constraints, protected tokens, query budgets, and real success rates."""

from __future__ import annotations

import re

import pytest

from sparring.attacks.text import (
    CharAttack,
    TextAttackResult,
    bad_characters,
    deepwordbug,
    homoglyphs,
    leetspeak,
    levenshtein,
    split_words,
    visible,
)
from sparring.data.text import load_sms_spam, load_text_model
from sparring.errors import InputSpecError, LabelError, ParameterError
from sparring.targets.text import CallableTextTarget, TextTarget
from tests.text_helpers import spam_score


@pytest.fixture
def keyword_filter() -> CallableTextTarget:
    return CallableTextTarget(spam_score, class_names=("ham", "spam"))


@pytest.fixture(scope="module")
def tfidf() -> TextTarget:
    return load_text_model("spam-tfidf-logreg")


@pytest.fixture(scope="module")
def caught_spam(tfidf: TextTarget) -> list[str]:
    ds = load_sms_spam()
    spam = [t for t, y in zip(ds.x_test, ds.y_test.tolist(), strict=True) if y == 1]
    pred = tfidf.predict(spam).tolist()
    return [t for t, p in zip(spam, pred, strict=True) if p == 1][:8]


def test_homoglyphs_come_from_the_unicode_confusables() -> None:
    assert "\u0430" in homoglyphs("a")  # CYRILLIC SMALL LETTER A
    assert all(ord(h) > 127 for h in homoglyphs("e"))
    assert levenshtein("free", "fr\u200bee") == 1


def test_bad_characters_flip_the_keyword_filter_with_few_edits(keyword_filter: CallableTextTarget) -> None:
    texts = ["WIN a FREE prize, call now", "claim your cash prize today"]
    res = bad_characters(max_chars=4)(keyword_filter, texts, [1, 1])
    assert isinstance(res, TextAttackResult)
    assert res.success.all() and res.clean_correct.all()
    assert (res.edited_chars <= 4).all() and res.mean_edited_chars is not None
    assert all(e.kind in ("homoglyph", "invisible") for es in res.edits for e in es)
    assert (keyword_filter.predict(res.adv_texts) == 0).all()
    assert res.summary()["attack_success_rate"] == 1.0


def test_edits_are_shown_side_by_side(keyword_filter: CallableTextTarget) -> None:
    res = bad_characters()(keyword_filter, ["FREE prize call"], [1])
    original, adversarial = res.side_by_side(0)
    assert "[[" in original and "<U+" in adversarial
    _, html_adv = res.side_by_side(0, fmt="html")
    assert "<mark" in html_adv and "U+" in html_adv
    assert res.examples()[0]["edited_chars"] == int(res.edited_chars[0])
    assert visible("a\u200bb") == "a<U+200B>b"
    assert "<mark" in res.to_html() and "attack_success_rate" in res.to_html()


def test_protected_tokens_are_never_edited(keyword_filter: CallableTextTarget) -> None:
    text = "FREE prize! call 09061209465 or www.win-cash.com/claim now"
    _, words = split_words(text)
    assert not any(w.editable for w in words if w.text in ("09061209465", "www", "win", "cash", "com"))
    res = deepwordbug(max_chars=None)(keyword_filter, [text], [1])
    adv = res.adv_texts[0]
    assert "09061209465" in adv and "www.win-cash.com/claim" in adv


def test_goals_targeted_and_threshold(keyword_filter: CallableTextTarget) -> None:
    text = ["FREE prize call"]
    res = bad_characters()(keyword_filter, text, [1], threshold=0.3)  # push the spam score under 0.3
    assert res.success.all()
    assert float(keyword_filter.query_proba(res.adv_texts)[0, 1]) < 0.3
    res = bad_characters()(keyword_filter, ["see you at home"], [0], target_class=0)
    assert res.success.all() and res.edited_words.sum() == 0  # already there: no edit needed


def test_the_attack_stops_at_the_query_budget_with_a_partial_result() -> None:
    target = CallableTextTarget(spam_score, query_budget=40)
    texts = ["WIN a FREE prize, call to claim your cash now"] * 4
    res = bad_characters(max_chars=None)(target, texts, [1] * 4)
    assert res.budget_exhausted
    assert target.counter.used <= 40 and res.cost.queries == target.counter.used
    assert not res.attacked.all()  # some messages were never reached
    assert len(res.adv_texts) == 4 and res.summary()["budget_exhausted"] is True
    # those are unknown, never robust: robust + broken + unknown covers the clean-correct messages
    never = ~res.attacked & ~res.success
    assert bool(never.any()) and bool(res.unknown[never].all()) and not bool((res.unknown & res.success).any())
    s = res.summary()
    assert s["n_unknown"] == int(res.unknown.sum()) > 0 and s["unknown_rate"] == s["n_unknown"] / 4
    assert s["robust_accuracy"] + float(res.broken.float().mean()) + s["unknown_rate"] == pytest.approx(1.0)


def test_a_message_cut_short_by_max_queries_is_unknown_not_robust() -> None:
    target = CallableTextTarget(spam_score)
    texts = ["WIN a FREE prize, call to claim your cash now"]
    full = bad_characters(max_chars=None)(target, texts, [1])
    cut = bad_characters(max_chars=None, max_queries=3)(target, texts, [1])
    assert full.n_unknown == 0
    assert not bool(cut.success[0]) and bool(cut.capped[0]) and cut.n_unknown == 1 and cut.robust_accuracy == 0.0


def test_per_message_query_limit(keyword_filter: CallableTextTarget) -> None:
    res = deepwordbug(max_chars=None, max_queries=10)(keyword_filter, ["WIN FREE cash prize, call to claim"], [1])
    assert res.queries[0] <= 11  # the clean query plus at most 10 in the search
    assert not res.budget_exhausted


def test_malformed_input_and_parameters_get_typed_errors(keyword_filter: CallableTextTarget) -> None:
    attack = bad_characters()
    with pytest.raises(InputSpecError, match="texts\\[1\\]"):
        attack(keyword_filter, ["free", None], [1, 1])
    with pytest.raises(InputSpecError, match="UTF-8"):
        attack(keyword_filter, [b"\xff\xfe"], [1])
    with pytest.raises(LabelError):
        attack(keyword_filter, ["free"], [1, 0])
    with pytest.raises(ParameterError, match="kinds"):
        CharAttack(("homoglyph", "telepathy"))(keyword_filter, ["free"], [1])
    with pytest.raises(ParameterError, match="max_chars"):
        bad_characters(max_chars=0)(keyword_filter, ["free"], [1])
    with pytest.raises(ParameterError, match="threshold"):
        attack(keyword_filter, ["free"], [1], threshold=1.5)
    with pytest.raises(ParameterError, match="TextTarget"):
        attack(object(), ["free"], [1])  # type: ignore[arg-type]


def test_leetspeak_and_spacing_edits(keyword_filter: CallableTextTarget) -> None:
    res = leetspeak()(keyword_filter, ["FREE prize call now"], [1])
    assert res.success.all()
    kinds = {e.kind for e in res.edits[0]}
    assert kinds <= {"leet", "spacing"} and kinds
    assert all(ord(c) < 128 for c in res.adv_texts[0])


def test_bad_characters_evade_the_tfidf_spam_filter(tfidf: TextTarget, caught_spam: list[str]) -> None:
    """Unbounded homoglyph + invisible edits get most caught spam through the real TF-IDF filter."""
    res = bad_characters(max_chars=None)(tfidf, caught_spam, [1] * len(caught_spam))
    assert res.clean_correct.all()
    assert res.attack_success_rate >= 0.6
    assert (tfidf.predict([t for t, b in zip(res.adv_texts, res.broken.tolist(), strict=True) if b]) == 0).all()
    for orig, adv in zip(res.texts, res.adv_texts, strict=True):  # phone numbers and short codes survive
        assert re.findall(r"\d{5,}", orig) == re.findall(r"\d{5,}", adv)


def test_beam_search_and_deletion_characters(keyword_filter: CallableTextTarget) -> None:
    texts = ["WIN a FREE prize, call now"]
    greedy = bad_characters(deletions=True)(keyword_filter, texts, [1])
    beam = bad_characters(deletions=True, beam_width=3)(keyword_filter, texts, [1])
    assert greedy.success.all() and beam.success.all()
    assert beam.params["beam_width"] == 3
    assert int(beam.edited_chars[0]) <= int(greedy.edited_chars[0])
    with pytest.raises(ParameterError, match="beam_width"):
        bad_characters(beam_width=0)(keyword_filter, texts, [1])
