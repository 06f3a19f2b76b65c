"""What a text attack may change: edit budgets, protected tokens, and a semantic-similarity floor.

A message is split into word pieces (runs of letters, digits and apostrophes) and the gaps between them; attacks
edit word pieces only. A word that overlaps a protected span (URLs, e-mail addresses, phone numbers, and any
pattern you add) is never touched: a spam attack that breaks the call-to-action is no attack.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from sparring.errors import ParameterError

__all__ = ["DEFAULT_PROTECTED", "Constraints", "Piece", "minilm_similarity", "split_words"]

DEFAULT_PROTECTED: tuple[str, ...] = (
    r"(?:https?://|www\.)\S+",  # URLs
    r"[\w.+-]+@[\w-]+\.[\w.-]+",  # e-mail addresses
    r"\+?\d[\d\s().-]{5,}\d",  # phone numbers and short codes of 7+ digits
    r"\b\d{4,6}\b",  # SMS short codes ("text WIN to 80086")
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")

Similarity = Callable[[str, list[str]], torch.Tensor]


@dataclass(frozen=True)
class Piece:
    """A word of a message: its text, where it starts in the original, and whether it may be edited."""

    text: str
    start: int
    editable: bool


def split_words(text: str, protected: Sequence[str] = DEFAULT_PROTECTED) -> tuple[list[str], list[Piece]]:
    """``(gaps, words)`` with ``text == gaps[0] + words[0].text + gaps[1] + ... + words[-1].text + gaps[-1]``."""
    spans = [m.span() for p in protected for m in re.finditer(p, text)]
    gaps, words, last = [], [], 0
    for m in _WORD.finditer(text):
        s, e = m.span()
        frozen = any(s < pe and ps < e for ps, pe in spans)
        gaps.append(text[last:s])
        words.append(Piece(m.group(), s, not frozen))
        last = e
    gaps.append(text[last:])
    return gaps, words


def join_words(gaps: list[str], words: Sequence[str]) -> str:
    out = [gaps[0]]
    for w, g in zip(words, gaps[1:], strict=True):
        out += [w, g]
    return "".join(out)


def minilm_similarity(original: str, candidates: list[str]) -> torch.Tensor:
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings (the text extra), one value per candidate."""
    from sparring.data.text import sentence_encoder

    emb = sentence_encoder()([original, *candidates])
    return (emb[1:] @ emb[0]).clamp(-1.0, 1.0)


@dataclass(frozen=True)
class Constraints:
    """Limits on an adversarial message.

    Args:
        max_chars: most edited characters per message (Levenshtein distance in code points, summed over words).
        max_words: most edited words per message.
        protected: regular expressions of spans never edited (default: URLs, e-mails, phone numbers, short codes).
        min_similarity: floor on the sentence similarity between the original and the adversarial message
            (``None``: no floor). Checked on every candidate before it is accepted.
        similarity: ``(original, candidates) -> similarities``; default MiniLM cosine (needs the text extra).
        max_word_fraction: most edited words as a share of the editable words (TextFooler's perturbation limit).
    """

    max_chars: int | None = None
    max_words: int | None = None
    protected: tuple[str, ...] = DEFAULT_PROTECTED
    min_similarity: float | None = None
    similarity: Similarity | None = field(default=None, compare=False)
    max_word_fraction: float = 1.0

    def check(self) -> None:
        for name in ("max_chars", "max_words"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ParameterError(f"{name} must be a positive integer or None; got {v!r}.")
        if self.min_similarity is not None and not -1.0 <= self.min_similarity <= 1.0:
            raise ParameterError(f"min_similarity must be in [-1, 1] (cosine) or None; got {self.min_similarity!r}.")
        if not 0.0 < self.max_word_fraction <= 1.0:
            raise ParameterError(f"max_word_fraction must be in (0, 1]; got {self.max_word_fraction!r}.")
        for p in self.protected:
            try:
                re.compile(p)
            except re.error as exc:
                raise ParameterError(f"protected pattern {p!r} is not a valid regular expression ({exc}).") from None

    def similarity_fn(self) -> Similarity:
        return self.similarity if self.similarity is not None else minilm_similarity

    def to_dict(self) -> dict[str, object]:
        return {"max_chars": self.max_chars, "max_words": self.max_words, "protected": list(self.protected),
                "min_similarity": self.min_similarity, "max_word_fraction": self.max_word_fraction}
