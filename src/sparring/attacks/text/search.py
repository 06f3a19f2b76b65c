"""Search over word edits: leave-one-out word importance, then greedy or beam search.

Word importance follows the black-box scoring of DeepWordBug (Gao et al. 2018, "replace-1"/leave-one-out score)
and TextFooler (Jin, Jin, Zhou and Szolovits 2020, Eq. 2): the drop of the goal loss when the word is deleted. Words
are then visited from the most to the least important; at each word every candidate replacement is scored in one
batch and the best is kept if it lowers the loss (greedy, beam width 1) or the ``beam_width`` best partial
messages are carried on (beam search). The search stops at the first message that reaches the goal, choosing among
the successful candidates the one with the fewest edited characters, then the highest similarity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sparring.attacks.text.constraints import Constraints, Piece, join_words
from sparring.attacks.text.result import TextEdit
from sparring.attacks.text.transforms import levenshtein
from sparring.targets.text import TextTarget

__all__ = ["Goal", "SearchState", "search"]

CandidateFn = Callable[[int, str], list[tuple[str, str]]]


@dataclass(frozen=True)
class Goal:
    """What counts as success for a message with true label ``y``.

    ``target_class`` set: reach that class (targeted). ``threshold`` set: push the probability of class ``y``
    below it (e.g. the spam score under a filter's 0.5 or 0.2 cut-off). Neither: any class but ``y``.
    """

    target_class: int | None = None
    threshold: float | None = None

    def loss(self, probs: torch.Tensor, y: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the loss to minimise and whether the goal is reached."""
        if self.threshold is not None:
            loss = probs[:, y] - self.threshold
            return loss, loss < 0
        c = self.target_class if self.target_class is not None else y
        others = probs.clone()
        others[:, c] = -math.inf
        best_other = others.max(dim=1).values
        if self.target_class is not None:
            return best_other - probs[:, c], probs.argmax(dim=1) == c
        return probs[:, c] - best_other, probs.argmax(dim=1) != c


@dataclass
class SearchState:
    """A partial adversarial message: its words, its edits, its loss and similarity."""

    words: list[str]
    edits: dict[int, TextEdit] = field(default_factory=dict)
    loss: float = math.inf
    similarity: float = math.nan
    success: bool = False
    pred: int = -1

    @property
    def chars(self) -> int:
        return sum(e.chars for e in self.edits.values())


@dataclass
class _Run:
    """Everything one message's search needs; :attr:`best` is always the best state so far (partial results)."""

    target: TextTarget
    text: str
    y: int
    goal: Goal
    constraints: Constraints
    gaps: list[str]
    pieces: list[Piece]
    candidates: CandidateFn
    beam_width: int
    max_queries: int | None
    best: SearchState
    queries: int = 0
    capped: bool = False  # max_queries cut candidates the search would have tried: it did not finish

    def room(self, n: int) -> int:
        return n if self.max_queries is None else max(0, min(n, self.max_queries - self.queries))

    def score(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.queries += len(texts)
        probs = self.target.query_proba(texts)
        loss, ok = self.goal.loss(probs, self.y)
        return loss.cpu(), ok.cpu(), probs.argmax(dim=1).cpu()


def search(run: _Run) -> SearchState:
    """Run the importance-ordered greedy/beam search for one message; returns (and keeps in ``run.best``) the best
    state found. A :class:`~sparring.errors.QueryBudgetExceeded` from the target propagates with ``run.best`` set."""
    editable = [i for i, p in enumerate(run.pieces) if p.editable]
    order = _importance_order(run, editable)
    c = run.constraints
    max_words = len(editable) if c.max_words is None else c.max_words
    max_words = min(max_words, max(1, math.floor(c.max_word_fraction * len(editable))))
    beam = [run.best]
    for i in order:
        expansions: list[SearchState] = []
        for st in beam:
            if len(st.edits) >= max_words:
                continue
            old = run.pieces[i].text
            for new, kind in run.candidates(i, st.words[i]):
                cost = levenshtein(old, new)
                if c.max_chars is not None and st.chars + cost > c.max_chars:
                    continue
                words = list(st.words)
                words[i] = new
                edits = {**st.edits, i: TextEdit(run.pieces[i].start, old, new, kind, cost)}
                expansions.append(SearchState(words, edits))
        room = run.room(len(expansions))
        run.capped |= room < len(expansions)
        expansions = expansions[:room]
        if not expansions:
            if run.max_queries is not None and run.queries >= run.max_queries:
                break
            continue
        texts = [join_words(run.gaps, s.words) for s in expansions]
        loss, ok, pred = run.score(texts)
        sims = _similarities(run, texts)
        for s, lo, k, p, sim in zip(expansions, loss.tolist(), ok.tolist(), pred.tolist(), sims, strict=True):
            s.loss, s.success, s.pred, s.similarity = lo, k, p, sim
        valid = [s for s in expansions if c.min_similarity is None or s.similarity >= c.min_similarity]
        winners = [s for s in valid if s.success]
        if winners:
            run.best = min(winners, key=lambda s: (s.chars, -_nan0(s.similarity), s.loss))
            return run.best
        pool = sorted(valid + beam, key=lambda s: s.loss) if run.beam_width > 1 else sorted(valid, key=lambda s: s.loss)
        if run.beam_width == 1:
            if pool and pool[0].loss < beam[0].loss:
                beam = pool[:1]
        else:
            beam = pool[:run.beam_width]
        if beam[0].loss < run.best.loss:
            run.best = beam[0]
    return run.best


def _nan0(v: float) -> float:
    return 0.0 if v != v else v


def _similarities(run: _Run, texts: list[str]) -> list[float]:
    if run.constraints.min_similarity is None:
        return [math.nan] * len(texts)
    return [float(v) for v in run.constraints.similarity_fn()(run.text, texts)]


def _importance_order(run: _Run, editable: list[int]) -> list[int]:
    """Editable word indices, most important first (leave-one-out loss drop; ties keep message order)."""
    if len(editable) <= 1:
        return editable
    n = run.room(len(editable))
    if n < len(editable):  # not enough queries to rank: keep message order
        return editable
    texts = []
    for i in editable:
        words = [p.text for p in run.pieces]
        words[i] = ""
        texts.append(join_words(run.gaps, words).strip() or ".")
    loss, _, _ = run.score(texts)
    drop = run.best.loss - loss
    ranked = sorted(range(len(editable)), key=lambda k: (-float(drop[k]), k))
    return [editable[k] for k in ranked]
