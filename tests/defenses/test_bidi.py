"""The Unicode Bidirectional Algorithm behind the text defences: display order, checked against python-bidi."""

from __future__ import annotations

import random
import unicodedata

import pytest

from sparring.attacks.text import reverse_stretch
from sparring.defenses.preprocess import display_order, normalize

LRE, RLE, PDF, LRO, RLO = "\u202a", "\u202b", "\u202c", "\u202d", "\u202e"
LRI, RLI, FSI, PDI = "\u2066", "\u2067", "\u2068", "\u2069"
ALEF, BET = "\u05d0", "\u05d1"


def _strip(s: str) -> str:
    return "".join(c for c in s if unicodedata.category(c) != "Cf")


def test_display_order_agrees_with_python_bidi_on_random_mixed_text() -> None:
    """Latin, Hebrew, Arabic, digits, separators, combining marks, every explicit control: 2,000 random strings,
    compared paragraph by paragraph with python-bidi (the Rust unicode-bidi engine). Each paragraph opens with a
    strong letter; python-bidi does not mirror brackets (L4), so the alphabet has none."""
    get_display = pytest.importorskip("bidi").get_display
    rng = random.Random(0)
    alphabet = [*"abcXYZ  019.,-+$%\t\u0300", ALEF, BET, "\u0627", "\u0628", "\u0661",
                *(LRE, RLE, PDF, LRO, RLO) * 2, LRI, RLI, FSI, PDI]
    for _ in range(2000):
        paragraphs = [rng.choice("a" + ALEF) + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
                      for _ in range(rng.randint(1, 2))]
        text = "\n".join(paragraphs)
        want = "\n".join(_strip(get_display(p)) for p in paragraphs)
        assert _strip(display_order(text)) == want, ascii(text)


def test_overrides_nest_end_with_the_paragraph_and_mirror_brackets() -> None:
    assert display_order(f"call {RLO}won{PDF}!") == "call now!"
    assert display_order(f"x{RLO}ab{RLO}cd{PDF}ef{PDF}y") == "xfedcbay"  # nested: reversed with the rest
    assert display_order(f"x{RLO}ab{LRO}cd{PDF}ef{PDF}y") == "xfecdbay"  # LRO inside RLO keeps "cd"
    assert display_order(f"x{RLO}ab\ncd") == "xba\ncd"  # a paragraph separator ends every override
    assert display_order(f"a{RLO}(cb){PDF}d") == "a(bc)d"  # brackets mirrored at an odd level
    assert display_order(f"{ALEF}{BET} 12") == f"12 {BET}{ALEF}"  # right-to-left paragraph, numbers left to right
    assert display_order("fr\u200bee") == "fr\u200bee"  # other invisibles stay where they were
    # a number right after a reversed stretch joins its right-to-left run and moves (rules W7, N1): not invisible
    assert display_order("call " + reverse_stretch("us now") + " 0800") == "call 0800 us now"


def test_normalize_undoes_a_reordering_that_stripping_alone_would_not() -> None:
    msg = "Claim your free prize now"
    adv = "Claim " + reverse_stretch("your free prize") + " now"
    assert adv != msg and display_order(adv) == msg
    assert normalize(adv) == msg
    assert "".join(c for c in adv if c not in (RLO, PDF)) != msg  # stripping the controls leaves it reversed
