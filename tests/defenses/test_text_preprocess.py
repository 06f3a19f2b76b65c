"""Unicode normalisation and de-leet defences: what they undo, what they cost, what survives them."""

from __future__ import annotations

import pytest

from sparring.attacks.text import CharAttack, Constraints, bad_characters
from sparring.data.text import load_sms_spam, load_text_model
from sparring.defenses.preprocess.text import DefendedTextTarget, SpellingCorrector, normalize, resolve_bidi
from sparring.errors import ParameterError
from sparring.targets.text import TextTarget


@pytest.fixture(scope="module")
def tfidf() -> TextTarget:
    return load_text_model("spam-tfidf-logreg")


@pytest.mark.parametrize(
    ("attacked", "clean"),
    [
        ("FR\u0415\u0415 pr\u0456ze", "FREE prize"),  # Cyrillic homoglyphs
        ("fr\u200bee c\u200dall\u2060 now", "free call now"),  # zero-width characters
        ("\uff26\uff32\uff25\uff25 \U0001d41c\U0001d41a\U0001d425\U0001d425", "FREE call"),  # fullwidth, math bold
        ("fre\u202eez\u202c prize", "freze prize"),  # RLO...PDF shows "ze" reversed: "fre" + "ze"
        ("frx\bee", "free"),  # BACKSPACE deletion
        ("txt \u2066WIN\u2069 to", "txt WIN to"),  # bidi isolate stripped
    ],
)
def test_normalize_undoes_imperceptible_perturbations(attacked: str, clean: str) -> None:
    assert normalize(attacked) == clean


def test_bidi_overrides_are_resolved_to_display_order() -> None:
    assert resolve_bidi("a\u202e(cb)\u202cd") == "a(bc)d"  # reversed, brackets mirrored
    assert resolve_bidi("x\u202eba") == "xab"  # unterminated: ends with the paragraph


def test_mixed_script_only_keeps_pure_cyrillic_words() -> None:
    assert normalize("\u0441\u043e\u0440 c\u043er", mixed_script_only=True) == "\u0441\u043e\u0440 cor"
    with pytest.raises(ParameterError):
        normalize(3)  # type: ignore[arg-type]


def test_spelling_corrector_deleets_and_rejoins() -> None:
    ds = load_sms_spam()
    fix = SpellingCorrector.from_texts(ds.x_train)
    assert fix("W1N a FR33 pr1ze") == "WIN a FREE prize"
    assert fix("cl.aim your pri ze") == "claim your prize"
    assert fix("call 08712300220 now") == "call 08712300220 now"  # numbers untouched
    with pytest.raises(ParameterError):
        SpellingCorrector.from_texts([])


def test_normalisation_keeps_clean_accuracy_within_one_point(tfidf: TextTarget) -> None:
    ds = load_sms_spam()
    clean = tfidf.accuracy(ds.x_test, ds.y_test)
    defended = DefendedTextTarget(tfidf, normalize).accuracy(ds.x_test, ds.y_test)
    assert abs(clean - defended) <= 0.01
    assert defended >= 0.98


def test_normalisation_stops_homoglyph_and_invisible_attacks(tfidf: TextTarget) -> None:
    ds = load_sms_spam()
    spam = [t for t, y in zip(ds.x_test, ds.y_test.tolist(), strict=True) if y == 1][:8]
    attack = bad_characters(max_chars=None)
    plain = attack(tfidf, spam, [1] * len(spam))
    broken = [t for t, b in zip(plain.adv_texts, plain.broken.tolist(), strict=True) if b]
    assert broken
    defended = DefendedTextTarget(tfidf, normalize, query_budget=100_000)
    assert (defended.predict(broken) == 1).all()  # every transferred adversarial message is caught again
    direct = CharAttack(("homoglyph", "invisible"), max_per_kind=6, constraints=Constraints(max_chars=3))(
        defended, spam, [1] * len(spam))
    assert direct.attack_success_rate < 0.1


def test_adaptive_attack_only_tries_edits_that_survive_the_defence(tfidf: TextTarget) -> None:
    defended = DefendedTextTarget(tfidf, normalize)
    unicode_only = CharAttack(("homoglyph", "invisible"), adaptive_to=normalize)
    assert unicode_only._filtered("prize", "prize") == []  # nothing survives: nothing to try
    text = ["URGENT! You have won a 1 week FREE membership in our prize Jackpot! Txt the word: CLAIM to No: 81010"]
    res = CharAttack(("substitute", "delete", "leet", "homoglyph", "invisible"), adaptive_to=normalize,
                     constraints=Constraints(max_chars=None))(defended, text, [1])
    assert all(e.kind not in ("invisible",) for e in res.edits[0])
    assert all(normalize(e.new) != normalize(e.old) for e in res.edits[0])
    assert res.success.all()
