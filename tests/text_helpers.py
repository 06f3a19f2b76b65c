"""A keyword spam filter shared by the text-attack tests: a score that each spam word raises."""

from __future__ import annotations

import re

import numpy as np

SPAM_WORDS = ("free", "win", "prize", "claim", "call", "txt", "cash")


def spam_score(texts: list[str]) -> np.ndarray:
    """A keyword filter: spam probability grows with the number of spam words (0.2 with none, 0.6 with one)."""
    out = []
    for t in texts:
        k = sum(w in SPAM_WORDS for w in re.findall(r"\w+", t.lower()))
        p = 1 - 0.8 * 0.5**k
        out.append([1 - p, p])
    return np.array(out)
