"""Text input normalisation: undo Unicode tricks and spammer spelling before the classifier sees the message.

* :func:`normalize` — puts the message in display order (the Unicode Bidirectional Algorithm, so bidi
  reorderings are undone; :mod:`sparring.defenses.preprocess.bidi`), then strips every bidi control, resolves
  BACKSPACE deletions, strips invisible characters (zero-width, soft hyphen, word joiner, ...), applies NFKC
  (Unicode Standard Annex #15) and maps every remaining Unicode confusable of an ASCII character to it (the
  TR39 confusables data from the ``confusable-homoglyphs`` package). This closes the imperceptible perturbations
  of Boucher et al. 2022 ("Bad Characters", whose Sec. VII recommends exactly this sanitisation).
* :class:`SpellingCorrector` — a de-leet and spelling step over a vocabulary (Norvig 2007's edit-distance-1
  corrector): a word outside the vocabulary becomes the most frequent in-vocabulary word among its de-leeted forms
  and its single edits; words split by a space/dot/hyphen are rejoined when the join is a known word.
* :class:`DefendedTextTarget` — a target wrapper that applies such a transform to every query.

Limits: confusables mapping folds legitimate non-Latin letters that look like ASCII (Cyrillic, Greek) into ASCII;
use ``mixed_script_only=True`` to touch only words that also hold ASCII letters. Display order puts right-to-left
scripts (Hebrew, Arabic) left to right as shown, which a model trained on their stored order may not expect.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import torch

from sparring.attacks.text.transforms import INVISIBLE, confusables_to_ascii
from sparring.defenses.preprocess.bidi import display_order
from sparring.errors import ParameterError
from sparring.targets.text import TextTarget

__all__ = ["DefendedTextTarget", "SpellingCorrector", "normalize", "resolve_bidi"]

_LEET_BACK = {"4": "a", "@": "a", "8": "b", "3": "e", "9": "g", "1": "il", "!": "i", "|": "l", "0": "o",
              "5": "s", "$": "s", "7": "t", "+": "t", "2": "z"}
_TOKEN = re.compile(r"\S+")


def resolve_bidi(text: str) -> str:
    """``text`` in display order under the Unicode Bidirectional Algorithm (overrides, embeddings and isolates
    resolved, brackets mirrored at right-to-left levels; the explicit controls removed): what a reader sees. See
    :func:`sparring.defenses.preprocess.bidi.display_order`."""
    return display_order(text)


def _backspaces(text: str) -> str:
    out: list[str] = []
    for c in text:
        if c == "\b":
            if out:
                out.pop()
        else:
            out.append(c)
    return "".join(out)


def normalize(text: str, *, nfkc: bool = True, confusables: bool = True, strip_invisible: bool = True,
              mixed_script_only: bool = False) -> str:
    """The message as a reader sees it, in plain ASCII where Unicode offers a look-alike.

    Args:
        text: the message.
        nfkc: apply Unicode NFKC (fullwidth, mathematical and compatibility forms fold to their base letters).
        confusables: map TR39 confusables of ASCII characters to ASCII (needs the text extra).
        strip_invisible: put the message in display order (bidi algorithm) and resolve backspaces, then
            remove invisible and bidi-control characters.
        mixed_script_only: map confusables only inside words that also contain an ASCII letter.

    Example:
        >>> normalize("FR\u0415\u0415 pri\u200bze, c\u0430ll now")
        'FREE prize, call now'
    """
    if not isinstance(text, str):
        raise ParameterError(f"normalize takes a str; got {type(text).__name__}.")
    if strip_invisible:
        text = _backspaces(resolve_bidi(text))
        text = "".join(c for c in text if c not in INVISIBLE and unicodedata.category(c) != "Cf")
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if confusables:
        table = confusables_to_ascii()
        if mixed_script_only:
            text = _TOKEN.sub(lambda m: _fold(m.group(), table) if re.search(r"[A-Za-z]", m.group())
                              else m.group(), text)
        else:
            text = _fold(text, table)
    return text


def _fold(s: str, table: dict[str, str]) -> str:
    return "".join(table.get(c, c) if ord(c) > 127 else c for c in s)


class SpellingCorrector:
    """De-leet and edit-distance-1 spelling correction against a word-frequency vocabulary (Norvig 2007).

    Args:
        counts: word -> frequency (lower case), e.g. from :meth:`from_texts` on the training messages.
        min_count: words seen fewer times are not corrected *to*.
    """

    def __init__(self, counts: Counter[str], *, min_count: int = 2) -> None:
        if not counts:
            raise ParameterError("SpellingCorrector needs a non-empty vocabulary (word counts).")
        self.counts = counts
        self.min_count = min_count
        self._letters = "abcdefghijklmnopqrstuvwxyz"

    @classmethod
    def from_texts(cls, texts: Iterable[str], **kwargs: Any) -> SpellingCorrector:
        return cls(Counter(w for t in texts for w in re.findall(r"[a-z]+", t.lower())), **kwargs)

    def known(self, w: str) -> bool:
        return self.counts.get(w, 0) >= self.min_count

    def correct_word(self, word: str) -> str:
        low = word.lower()
        if not re.search(r"[a-z]", low) or self.known(low):
            return word
        options = [c for c in self._deleet(low) if self.known(c)]
        if not options and len(low) >= 4:  # short words have too many neighbours to correct safely
            options = [c for c in self._edits1(low) if self.known(c)]
        if not options:
            return word
        best = max(options, key=lambda c: (self.counts[c], c))
        return best.upper() if word.isupper() else best.capitalize() if word[:1].isupper() else best

    def _deleet(self, w: str) -> list[str]:
        outs = [""]
        for c in w:
            outs = [o + r for o in outs for r in (_LEET_BACK.get(c, c) if c in _LEET_BACK else c)][:64]
        return [o for o in outs if o != w]

    def _edits1(self, w: str) -> set[str]:
        splits = [(w[:i], w[i:]) for i in range(len(w) + 1)]
        dels = [a + b[1:] for a, b in splits if b]
        swaps = [a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1]
        subs = [a + c + b[1:] for a, b in splits if b for c in self._letters]
        ins = [a + c + b for a, b in splits for c in self._letters]
        return set(dels + swaps + subs + ins)

    def __call__(self, text: str) -> str:
        return re.sub(r"[A-Za-z0-9@$!|+]+", lambda m: self.correct_word(m.group()), self._rejoin(text))

    def _letters_run(self, m: re.Match[str]) -> str:
        joined = re.sub(r"[ .\-]", "", m.group())
        return joined if self.known(joined.lower()) else m.group()

    def _rejoin(self, text: str) -> str:
        """Join ``a<sep>b`` (sep: one space, dot or hyphen) when ``ab`` is a known word and ``a`` or ``b`` is not."""
        text = re.sub(r"\b(?:[A-Za-z][ .\-]){2,}[A-Za-z]\b", self._letters_run, text)  # "f r e e"
        parts = re.split(r"([A-Za-z]+)", text)  # odd indices are words
        i = 1
        while i + 2 < len(parts):
            a, sep, b = parts[i], parts[i + 1], parts[i + 2]
            if sep in (" ", ".", "-") and self.known((a + b).lower()) and not (
                    self.known(a.lower()) and self.known(b.lower())):
                parts[i:i + 3] = [a + b]
                continue
            i += 2
        return "".join(parts)


class DefendedTextTarget(TextTarget):
    """``inner`` behind an input transform: every query is transformed, then scored by ``inner``.

    The wrapper has its own query counter and budget (what the attacker spends); ``inner`` counts too.

    Example:
        >>> from sparring.data.text import load_text_model
        >>> defended = DefendedTextTarget(load_text_model("spam-tfidf-logreg"), normalize)
        >>> defended.predict(["W\u0456n a FR\u0415\u0415 pr\u0456ze! T\u0435xt W\u0406N now"]).tolist()
        [1]
    """

    def __init__(self, inner: TextTarget, transform: Callable[[str], str], *, query_budget: int | None = None,
                 batch_size: int | None = None) -> None:
        if not isinstance(inner, TextTarget):
            raise ParameterError(f"inner must be a TextTarget; got {type(inner).__name__}.")
        if not callable(transform):
            raise ParameterError(f"transform must be a function str -> str; got {type(transform).__name__}.")
        super().__init__(inner.n_classes, output=inner.output, class_names=inner.class_names,
                         batch_size=batch_size or inner.batch_size, query_budget=query_budget)
        self.inner = inner
        self.transform = transform

    def _scores_batch(self, texts: list[str]) -> torch.Tensor:
        return self.inner.query([self.transform(t) or "." for t in texts])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "defence": getattr(self.transform, "__name__", type(self.transform).__name__),
                "inner": self.inner.describe()}
