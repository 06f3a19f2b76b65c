"""Bidi reordering (Boucher et al. 2022): invisible to readers, real against the tf-idf filter, closed by
normalisation, budgets and errors as for every text attack."""

from __future__ import annotations

import pytest

from sparring.attacks.text import BidiReorder, Constraints, bad_characters, logical_distance
from sparring.data.text import load_sms_spam, load_text_model
from sparring.defenses.preprocess import DefendedTextTarget, display_order, normalize
from sparring.errors import InputSpecError, ParameterError
from sparring.targets.text import CallableTextTarget, TextTarget
from tests.text_helpers import spam_score


@pytest.fixture
def keyword_filter() -> CallableTextTarget:
    return CallableTextTarget(spam_score, class_names=("ham", "spam"))


def test_one_reversed_stretch_hides_every_keyword_and_displays_unchanged(keyword_filter: CallableTextTarget) -> None:
    msg = "WIN a free prize! Call us on 08001234567 now, claim cash"
    res = BidiReorder(constraints=Constraints(max_chars=4))(keyword_filter, [msg], [1])
    assert bool(res.success[0])
    adv = res.adv_texts[0]
    assert display_order(adv) == msg  # what a reader sees is the original message
    assert "08001234567" in adv  # the protected phone number keeps its stored order
    assert int(res.edited_chars[0]) == 2 * len(res.edits[0]) <= 4
    assert all(e.kind == "reorder" for e in res.edits[0])
    assert logical_distance(res, 0) > int(res.edited_chars[0])  # the stored text changed in many places
    orig, shown = res.side_by_side(0)
    assert "<U+202E>" in shown and orig.startswith("[[WIN")


def test_reordering_breaks_the_tfidf_filter_where_edits_do_not_and_normalisation_closes_it() -> None:
    tfidf: TextTarget = load_text_model("spam-tfidf-logreg")
    ds = load_sms_spam()
    spam = [t for t, y in zip(ds.x_test, ds.y_test.tolist(), strict=True) if y == 1]
    caught = [t for t, p in zip(spam, tfidf.predict(spam).tolist(), strict=True) if p == 1][:12]
    chars = bad_characters(max_chars=3)(tfidf, caught, [1] * len(caught))
    both = BidiReorder(constraints=Constraints(max_chars=3), then=bad_characters(max_chars=None))(
        tfidf, caught, [1] * len(caught))
    assert both.attack_success_rate >= 0.25 > chars.attack_success_rate  # measured: 0.33 vs 0.08 on 12 messages
    assert all(display_order(normalize(a)) == normalize(o) for a, o in zip(both.adv_texts, caught, strict=True))
    assert both.mean_edited_chars is not None and both.mean_edited_chars <= 3
    broken = [a for a, b in zip(both.adv_texts, both.broken.tolist(), strict=True) if b]
    defended = DefendedTextTarget(tfidf, normalize)
    assert defended.predict(broken).tolist() == [1] * len(broken)  # every evading message is caught again
    adaptive = BidiReorder(constraints=Constraints(max_chars=3), adaptive_to=normalize)(
        defended, caught, [1] * len(caught))
    assert adaptive.attack_success_rate == 0.0 and all(not e for e in adaptive.edits)  # nothing survives


def test_query_budget_gives_a_partial_result_and_bad_input_typed_errors() -> None:
    target = CallableTextTarget(spam_score, class_names=("ham", "spam"), query_budget=6)
    msgs = ["free prize claim now today", "win cash call txt free"]
    res = BidiReorder()(target, msgs, [1, 1])
    assert res.budget_exhausted and res.cost.queries <= 6
    assert not bool(res.attacked[1])
    keyword = CallableTextTarget(spam_score, class_names=("ham", "spam"))
    with pytest.raises(InputSpecError):
        BidiReorder()(keyword, ["ok", ""], [0, 0])
    with pytest.raises(ParameterError, match="max_words_per_stretch"):
        BidiReorder(max_words_per_stretch=0)(keyword, ["ok"], [0])
    with pytest.raises(ParameterError, match="then must be a CharAttack"):
        BidiReorder(then="homoglyph")(keyword, ["ok"], [0])  # type: ignore[arg-type]


def test_the_quick_display_rule_matches_the_full_bidi_algorithm_on_real_messages() -> None:
    """For plain left-to-right messages the attack screens stretches with a local rule (a number or combining mark
    right after a stretch moves it); it must agree with the full algorithm on every stretch it could try."""
    from sparring.attacks.text.reorder import _apply, _safe_before

    attack = BidiReorder(max_words_per_stretch=3)
    texts = [t for t in load_sms_spam().x_test[:80] if t.isascii()]
    checked = 0
    for text in texts:
        for s, e in attack._stretches(text):
            assert _safe_before(text, e) == (display_order(_apply(text, [(s, e)])) == text), (text, text[s:e])
            checked += 1
    assert checked > 1000
