"""Word substitution under a sentence-similarity floor: TextFooler (Jin, Jin, Zhou and Szolovits 2020).

"Is BERT Really Robust? A Strong Baseline for Natural Language Attack on Text Classification and Entailment"
(AAAI 2020), Algorithm 1: rank words by the score drop when each is deleted (Eq. 2), then for each word in that
order try its nearest neighbours in a word-embedding space, keep only candidates whose sentence similarity to the
original stays above a floor, stop at the first flip (taking the most similar flipping candidate), otherwise keep
the candidate that lowers the true-class score most.

Choice of neighbours (documented departure from the paper): the paper uses counter-fitted GloVe vectors (synonyms
pulled together, antonyms pushed apart) and a POS filter; neither ships offline here. sparring embeds a vocabulary
(by default the words seen at least three times in the SMS training split, stop words excluded) with the same
all-MiniLM-L6-v2 model that measures sentence similarity, and takes the ``n_neighbours`` nearest words with cosine
at least ``min_cosine``. Such neighbours are *related* words, not always synonyms (an antonym can be close); the
sentence-similarity floor (default 0.8, MiniLM cosine in place of the paper's Universal Sentence Encoder) is what
bounds the change of meaning. Vocabulary embeddings are cached under the sparring cache dir.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from sparring.attacks.text.base import Normaliser, TextAttack
from sparring.attacks.text.constraints import Constraints
from sparring.errors import ParameterError

__all__ = ["STOP_WORDS", "TextFooler", "WordNeighbours", "sms_vocabulary"]

_STOP = (
    "a an and are as at be been but by can could did do does for from had has have he her him his how i if in "
    "into is it its me my no nor not of on or our she so than that the their them then there these they this to "
    "too up us was we were what when where which who will with would you your u ur"
)
STOP_WORDS = frozenset(_STOP.split())


def sms_vocabulary(min_count: int = 3) -> list[str]:
    """Alphabetic words seen at least ``min_count`` times in the SMS training split, stop words excluded."""
    from sparring.data.text import load_sms_spam

    counts = Counter(w for t in load_sms_spam().x_train for w in re.findall(r"[a-z]{2,}", t.lower()))
    return sorted(w for w, c in counts.items() if c >= min_count and w not in STOP_WORDS)


class WordNeighbours:
    """Nearest words by MiniLM cosine within a vocabulary; embeddings cached on disk (keyed by the word list)."""

    def __init__(self, vocabulary: Sequence[str], *, n_neighbours: int = 30, min_cosine: float = 0.5) -> None:
        self.vocabulary = list(dict.fromkeys(w.lower() for w in vocabulary))
        if not self.vocabulary:
            raise ParameterError("the neighbour vocabulary is empty; pass some words.")
        self.n_neighbours, self.min_cosine = n_neighbours, min_cosine
        self._index = {w: i for i, w in enumerate(self.vocabulary)}
        self._emb: torch.Tensor | None = None
        self._memo: dict[str, list[str]] = {}

    def _embeddings(self) -> torch.Tensor:
        if self._emb is None:
            import hashlib

            from sparring.data.cache import cache_dir, load_state, save_state
            from sparring.data.text import sentence_encoder

            key = hashlib.sha256("\n".join(self.vocabulary).encode()).hexdigest()[:16]
            path = cache_dir() / "zoo" / f"minilm-words-{key}.pt"
            state = load_state(path)
            if state is None:
                state = {"emb": sentence_encoder()(self.vocabulary)}
                save_state(path, state)
            self._emb = state["emb"]
        return self._emb

    def __call__(self, word: str) -> list[str]:
        low = word.lower()
        if low not in self._memo:
            i = self._index.get(low)
            if i is None:
                self._memo[low] = []
            else:
                emb = self._embeddings()
                sims = emb @ emb[i]
                sims[i] = -1.0
                top = sims.topk(min(self.n_neighbours, len(self.vocabulary) - 1))
                self._memo[low] = [self.vocabulary[int(j)] for v, j in zip(top.values, top.indices, strict=True)
                                   if float(v) >= self.min_cosine]
        return self._memo[low]


def _match_case(src: str, w: str) -> str:
    return w.upper() if src.isupper() and len(src) > 1 else w.capitalize() if src[:1].isupper() else w


class TextFooler(TextAttack):
    """TextFooler word substitution (Jin et al. 2020) with MiniLM neighbours and a MiniLM similarity floor.

    Threat model: black-box, scores; untargeted, targeted or threshold goal. Needs the text extra.

    Args:
        min_similarity: floor on MiniLM sentence cosine between original and adversarial message (paper: 0.7 to
            0.8 with USE; here 0.8).
        n_neighbours, min_cosine: the neighbour set (paper: N = 50, delta = 0.5).
        vocabulary: words that may be substituted and substituted in; default :func:`sms_vocabulary`.
        neighbours: your own neighbour function ``word -> candidate words`` (e.g. counter-fitted synonyms), used
            in place of the MiniLM neighbours (``vocabulary``, ``n_neighbours``, ``min_cosine`` then unused).
        constraints: further limits (its ``min_similarity`` is overridden by ``min_similarity``).
        beam_width, max_queries, adaptive_to: see :class:`~sparring.attacks.text.base.TextAttack`.
    """

    name = "textfooler"

    def __init__(self, *, min_similarity: float = 0.8, n_neighbours: int = 30, min_cosine: float = 0.5,
                 vocabulary: Sequence[str] | None = None, neighbours: Callable[[str], list[str]] | None = None,
                 constraints: Constraints | None = None,
                 beam_width: int = 1, max_queries: int | None = None, adaptive_to: Normaliser | None = None) -> None:
        base = constraints if constraints is not None else Constraints()
        cons = Constraints(max_chars=base.max_chars, max_words=base.max_words, protected=base.protected,
                           min_similarity=min_similarity, similarity=base.similarity,
                           max_word_fraction=base.max_word_fraction)
        super().__init__(constraints=cons, beam_width=beam_width, max_queries=max_queries, adaptive_to=adaptive_to)
        self.min_similarity = min_similarity
        self.n_neighbours = n_neighbours
        self.min_cosine = min_cosine
        self.vocabulary = vocabulary
        self.neighbours = neighbours
        self._neighbours: Callable[[str], list[str]] | None = neighbours

    def get_params(self) -> dict[str, Any]:
        return {"min_similarity": self.min_similarity, "n_neighbours": self.n_neighbours,
                "min_cosine": self.min_cosine, **super().get_params()}

    def _check_params(self) -> None:
        super()._check_params()
        if isinstance(self.n_neighbours, bool) or not isinstance(self.n_neighbours, int) or self.n_neighbours < 1:
            raise ParameterError(f"n_neighbours must be a positive integer; got {self.n_neighbours!r}.")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ParameterError(f"min_cosine must be in [-1, 1]; got {self.min_cosine!r}.")
        if self.neighbours is not None and not callable(self.neighbours):
            raise ParameterError(f"neighbours must be a function word -> list of words; got "
                                 f"{type(self.neighbours).__name__}.")
        if self._neighbours is None:
            vocab = self.vocabulary if self.vocabulary is not None else sms_vocabulary()
            self._neighbours = WordNeighbours(vocab, n_neighbours=self.n_neighbours, min_cosine=self.min_cosine)

    def _candidates(self, word: str) -> list[tuple[str, str]]:
        assert self._neighbours is not None
        if word.lower() in STOP_WORDS:
            return []
        return [(_match_case(word, w), "synonym") for w in self._neighbours(word)]
