"""Character-level perturbations of one word: the candidate edits a text attack searches over.

Each transform maps a word to candidate replacements ``(new_word, kind)``; the search charges each candidate its
Levenshtein distance to the original word (in code points) as "edited characters".

* ``swap``, ``substitute`` (keyboard neighbour), ``delete``, ``insert`` — the four DeepWordBug edits
  (Gao, Lanchantin, Soffa and Qi 2018, "Black-box generation of adversarial text sequences to evade deep learning
  classifiers", Sec. 3.2).
* ``homoglyph`` (a letter swapped for a Unicode confusable that renders alike), ``invisible`` (a zero-width or
  bidi-control character injected inside the word), ``deletion`` (a letter followed by BACKSPACE U+0008, which
  many renderers erase) — the imperceptible perturbations of Boucher, Shumailov, Anderson and Papernot 2022, "Bad
  Characters: Imperceptible NLP Attacks" (IEEE S&P), Sec. III.
* ``leet`` (letters written as look-alike digits/symbols) and ``spacing`` (a space, dot or hyphen splitting the
  word) — the obfuscations spammers use by hand.

The confusables come from the Unicode TR39 data shipped in the ``confusable-homoglyphs`` package (text extra),
loaded lazily.
"""

from __future__ import annotations

import unicodedata
from functools import cache

from sparring.errors import ModelLoadError, ParameterError

__all__ = ["INVISIBLE", "KINDS", "candidates", "confusables_to_ascii", "homoglyphs", "levenshtein"]

KINDS = ("swap", "substitute", "delete", "insert", "homoglyph", "invisible", "deletion", "leet", "spacing")
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")  # ZWSP, ZWNJ, ZWJ, word joiner, ZWNBSP
BIDI = ("\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
        "\u2069", "\u061c")
INVISIBLE = frozenset(ZERO_WIDTH + BIDI + ("\u00ad", "\u180e", "\u2061", "\u2062", "\u2063", "\u2064", "\b"))

_ROWS = ("1234567890-", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_LEET = {"a": "4@", "b": "8", "e": "3", "g": "9", "i": "1!", "l": "1|", "o": "0", "s": "5$", "t": "7+", "z": "2"}
_SCRIPT_RANK = ("CYRILLIC", "GREEK", "LATIN", "ARMENIAN", "CHEROKEE")


def levenshtein(a: str, b: str) -> int:
    """Edit distance in code points (insertions, deletions, substitutions)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@cache
def _keyboard() -> dict[str, str]:
    pos = {c: (r, i) for r, row in enumerate(_ROWS) for i, c in enumerate(row)}
    return {c: "".join(d for d, (r2, i2) in pos.items() if d != c and abs(r2 - r) <= 1 and abs(i2 - i) <= 1)
            for c, (r, i) in pos.items()}


@cache
def _confusables() -> dict[str, list[str]]:
    try:
        from confusable_homoglyphs import utils
    except ImportError:
        raise ModelLoadError("homoglyph attacks and the confusables defence need the Unicode confusables data: "
                             "pip install 'sparring[text]'") from None
    raw = utils.load("confusables.json")
    out: dict[str, list[str]] = {}
    for k, v in raw.items():
        out[k] = [e["c"].replace("\u200e", "") for e in v]
    return out


def _single(h: str) -> bool:
    return len(h) == 1 and ord(h) > 127


@cache
def homoglyphs(char: str) -> tuple[str, ...]:
    """Non-ASCII confusables of an ASCII letter/digit that NFKC does not fold back (so they survive NFKC alone),
    Cyrillic and Greek first (they render in every font)."""
    hs = [h for h in _confusables().get(char, []) if _single(h) and unicodedata.normalize("NFKC", h) != char
          and unicodedata.normalize("NFKC", h).lower() != char.lower()]

    def rank(h: str) -> tuple[int, int]:
        name = unicodedata.name(h, "")
        first = next((i for i, s in enumerate(_SCRIPT_RANK) if name.startswith(s)), len(_SCRIPT_RANK))
        return first, ord(h)

    return tuple(sorted(set(hs), key=rank))


def _ascii_rank(c: str) -> tuple[int, str]:
    return (0 if c.islower() else 1 if c.isupper() else 2 if c.isdigit() else 3), c


@cache
def confusables_to_ascii() -> dict[str, str]:
    """A map from every single non-ASCII code point that Unicode lists as confusable with a printable ASCII
    character to that character (letters before digits before symbols where several apply)."""
    best: dict[str, str] = {}
    for k, vs in _confusables().items():
        pairs = [(k, v) for v in vs] + [(v, k) for v in vs]
        for src, dst in pairs:
            ok = _single(src) and len(dst) == 1 and 32 < ord(dst) < 127
            if ok and (src not in best or _ascii_rank(dst) < _ascii_rank(best[src])):
                best[src] = dst
    return best


def candidates(word: str, kinds: tuple[str, ...], max_per_kind: int = 64) -> list[tuple[str, str]]:
    """Candidate replacements ``(new_word, kind)`` for ``word`` under the given edit kinds (see :data:`KINDS`)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ParameterError(f"unknown edit kind(s) {unknown}; choose from {', '.join(KINDS)}.")
    out: list[tuple[str, str]] = []
    n = len(word)
    for kind in kinds:
        found: list[str] = []
        if kind == "swap":
            found = [word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(1, n - 2)
                     if word[i] != word[i + 1]]
        elif kind == "substitute":
            kb = _keyboard()
            found = [word[:i] + (d.upper() if c.isupper() else d) + word[i + 1:] for i, c in enumerate(word)
                     for d in kb.get(c.lower(), "")[:3]]
        elif kind == "delete":
            found = [word[:i] + word[i + 1:] for i in range(1, n - 1)] if n > 2 else []
        elif kind == "insert":
            kb = _keyboard()
            found = [word[:i] + kb.get(word[i - 1].lower(), "x")[0] + word[i:] for i in range(1, n)]
        elif kind == "homoglyph":
            found = [word[:i] + h + word[i + 1:] for i, c in enumerate(word) for h in homoglyphs(c)[:2]]
        elif kind == "invisible":
            found = [word[:i] + z + word[i:] for i in range(1, n) for z in ("\u200b", "\u200d", "\u2066")]
        elif kind == "deletion":
            found = [word[:i] + "x\b" + word[i:] for i in range(1, n)]
        elif kind == "leet":
            found = [word[:i] + s + word[i + 1:] for i, c in enumerate(word) for s in _LEET.get(c.lower(), "")]
        elif kind == "spacing":
            found = [word[:i] + sep + word[i:] for i in range(1, n) for sep in (" ", ".", "-")]
        out.extend((w, kind) for w in _spread(list(dict.fromkeys(found)), max_per_kind) if w != word)
    return out


def _spread(items: list[str], k: int) -> list[str]:
    """At most ``k`` items, evenly spaced (keeps positions across the word rather than the first few)."""
    if len(items) <= k:
        return items
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]
