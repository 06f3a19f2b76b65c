"""Text attacks as configuration objects: ``attack(target, texts, y) -> TextAttackResult``.

Threat model: black-box with scores (the target's class probabilities), untargeted, targeted or threshold goal.
Every attack is query-counted through the target; when the target's query budget would be crossed the attack stops
at once and returns a partial result (``budget_exhausted=True``; messages not reached are marked ``attacked=False``).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from sparring.attacks.result import Cost
from sparring.attacks.text.constraints import Constraints, join_words, split_words
from sparring.attacks.text.result import TextAttackResult
from sparring.attacks.text.search import Goal, SearchState, _Run, search
from sparring.attacks.text.transforms import KINDS, candidates
from sparring.errors import ParameterError, QueryBudgetExceeded
from sparring.targets.text import TextTarget, _validate_labels, validate_texts

__all__ = ["CharAttack", "TextAttack", "bad_characters", "deepwordbug", "leetspeak"]

Normaliser = Callable[[str], str]


class TextAttack(ABC):
    """Base of the text attacks: validation, the clean pass, the per-message search, partial results.

    Args:
        constraints: edit budgets, protected tokens, similarity floor (:class:`Constraints`).
        beam_width: 1 for greedy search, more for beam search.
        max_queries: most queries per message (``None``: no per-message limit; the target's budget still holds).
        adaptive_to: the text transform of a defence (e.g. :func:`sparring.defenses.preprocess.text.normalize`):
            candidate edits it undoes are not tried — the adaptive attack restricted to what survives it.
    """

    name = "text"

    def __init__(self, *, constraints: Constraints | None = None, beam_width: int = 1,
                 max_queries: int | None = None, adaptive_to: Normaliser | None = None) -> None:
        self.constraints = constraints if constraints is not None else Constraints()
        self.beam_width = beam_width
        self.max_queries = max_queries
        self.adaptive_to = adaptive_to

    @abstractmethod
    def _candidates(self, word: str) -> list[tuple[str, str]]:
        """Candidate replacements ``(new_word, kind)`` of one word."""

    def get_params(self) -> dict[str, Any]:
        return {"constraints": self.constraints.to_dict(), "beam_width": self.beam_width,
                "max_queries": self.max_queries, "adaptive_to": getattr(self.adaptive_to, "__name__", None)
                if self.adaptive_to is not None else None}

    def _check_params(self) -> None:
        if not isinstance(self.constraints, Constraints):
            raise ParameterError(f"constraints must be a Constraints; got {type(self.constraints).__name__}.")
        self.constraints.check()
        if isinstance(self.beam_width, bool) or not isinstance(self.beam_width, int) or self.beam_width < 1:
            raise ParameterError(f"beam_width must be a positive integer (1 = greedy); got {self.beam_width!r}.")
        mq = self.max_queries
        if mq is not None and (isinstance(mq, bool) or not isinstance(mq, int) or mq < 1):
            raise ParameterError(f"max_queries must be a positive integer or None; got {mq!r}.")
        if self.adaptive_to is not None and not callable(self.adaptive_to):
            raise ParameterError(f"adaptive_to must be a function str -> str; got {type(self.adaptive_to).__name__}.")

    def _filtered(self, word: str, original: str) -> list[tuple[str, str]]:
        cands = self._candidates(word)
        if self.adaptive_to is None:
            return cands
        undone = self.adaptive_to(original)
        return [(w, k) for w, k in cands if self.adaptive_to(w) != undone]

    def __call__(self, target: TextTarget, texts: Any, y: Any, *, target_class: int | None = None,
                 threshold: float | None = None) -> TextAttackResult:
        """Attack every message; see :class:`~sparring.attacks.text.search.Goal` for ``target_class``/``threshold``.

        Raises:
            InputSpecError: malformed messages (non-strings, empty strings, invalid UTF-8).
            LabelError: labels of the wrong length or range.
            ParameterError: invalid attack parameters or goal.
        """
        if not isinstance(target, TextTarget):
            raise ParameterError(f"target must be a TextTarget (see sparring.targets.text); got "
                                 f"{type(target).__name__}.")
        self._check_params()
        valid = validate_texts(texts)
        yt = _validate_labels(y, len(valid), target.n_classes)
        if target_class is not None and not (isinstance(target_class, int) and 0 <= target_class < target.n_classes):
            raise ParameterError(f"target_class must be in 0..{target.n_classes - 1}; got {target_class!r}.")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ParameterError(f"threshold must be a probability in (0, 1); got {threshold!r}.")
        goal = Goal(target_class, threshold)
        t0, used0 = time.perf_counter(), target.counter.used
        n = len(valid)
        res = TextAttackResult(
            attack=self.name, params={**self.get_params(), "target_class": target_class, "threshold": threshold},
            cost=Cost(), texts=valid, adv_texts=list(valid), y=yt, success=torch.zeros(n, dtype=torch.bool),
            clean_correct=torch.zeros(n, dtype=torch.bool), adv_pred=torch.full((n,), -1, dtype=torch.long),
            attacked=torch.zeros(n, dtype=torch.bool), capped=torch.zeros(n, dtype=torch.bool),
            edits=[[] for _ in valid],
            similarity=torch.full((n,), math.nan), queries=[0] * n, class_names=target.class_names,
        )
        try:
            probs = target.query_proba(valid)
            res.queries = [1] * n
            res.clean_correct = probs.argmax(dim=1).cpu() == yt
            res.adv_pred = probs.argmax(dim=1).cpu()
            for i in range(n):
                self._attack_one(target, goal, res, i, probs[i:i + 1])
        except QueryBudgetExceeded:
            res.budget_exhausted = True
        # a message the search did not finish with (budget, or its max_queries cut candidates) and did not break is
        # unknown: neither robust nor broken
        res.unknown = ~res.success & (~res.attacked | res.capped)
        res.cost = Cost(queries=target.counter.used - used0, seconds=time.perf_counter() - t0)
        return res

    def _attack_one(self, target: TextTarget, goal: Goal, res: TextAttackResult, i: int,
                    clean_probs: torch.Tensor) -> None:
        text, y = res.texts[i], int(res.y[i])
        loss, ok = goal.loss(clean_probs, y)
        gaps, pieces = split_words(text, self.constraints.protected)
        start = SearchState([p.text for p in pieces], loss=float(loss[0]), success=bool(ok[0]),
                            pred=int(clean_probs.argmax()), similarity=1.0)
        if start.success:
            res.success[i], res.attacked[i] = True, True
            return
        run = _Run(target, text, y, goal, self.constraints, gaps, pieces,
                   lambda k, w: self._filtered(w, pieces[k].text), self.beam_width, self.max_queries, start)
        try:
            search(run)
            res.attacked[i] = True
        finally:  # also on QueryBudgetExceeded: keep the best message found so far
            best = run.best
            res.capped[i] = run.capped
            res.queries[i] += run.queries
            if best.edits:
                res.adv_texts[i] = join_words(gaps, best.words)
                res.edits[i] = sorted(best.edits.values(), key=lambda e: e.start)
                res.adv_pred[i] = best.pred
                res.similarity[i] = best.similarity
            res.success[i] = best.success


class CharAttack(TextAttack):
    """Character-level evasion: DeepWordBug edits, Bad-Characters homoglyphs/invisibles, leetspeak and spacing.

    The edit kinds are any of :data:`~sparring.attacks.text.transforms.KINDS`; the presets are
    :func:`deepwordbug` (Gao et al. 2018), :func:`bad_characters` (Boucher et al. 2022) and :func:`leetspeak`.
    Each word is edited at most once (one candidate replacement, whose Levenshtein cost is charged).

    Example:
        >>> from sparring.data.text import load_sms_spam, load_text_model
        >>> ds, target = load_sms_spam(), load_text_model("spam-tfidf-logreg")
        >>> spam = [t for t, y in zip(ds.x_test, ds.y_test.tolist()) if y == 1][:5]
        >>> res = bad_characters(max_chars=3)(target, spam, [1] * 5)
        >>> res.attack_success_rate > 0.5
        True
    """

    name = "char"

    def __init__(self, kinds: tuple[str, ...] = ("homoglyph", "invisible"), *, max_per_kind: int = 32,
                 constraints: Constraints | None = None, beam_width: int = 1, max_queries: int | None = None,
                 adaptive_to: Normaliser | None = None) -> None:
        super().__init__(constraints=constraints, beam_width=beam_width, max_queries=max_queries,
                         adaptive_to=adaptive_to)
        self.kinds = kinds
        self.max_per_kind = max_per_kind

    def get_params(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "max_per_kind": self.max_per_kind, **super().get_params()}

    def _check_params(self) -> None:
        super()._check_params()
        if isinstance(self.kinds, str) or not self.kinds or any(k not in KINDS for k in self.kinds):
            raise ParameterError(f"kinds must be a non-empty tuple of {', '.join(KINDS)}; got {self.kinds!r}.")
        if not isinstance(self.max_per_kind, int) or self.max_per_kind < 1:
            raise ParameterError(f"max_per_kind must be a positive integer; got {self.max_per_kind!r}.")

    def _candidates(self, word: str) -> list[tuple[str, str]]:
        return candidates(word, tuple(self.kinds), self.max_per_kind)


def _preset(kinds: tuple[str, ...], name: str, max_chars: int | None, max_words: int | None,
            kw: dict[str, Any]) -> CharAttack:
    cons = kw.pop("constraints", None) or Constraints(max_chars=max_chars, max_words=max_words)
    attack = CharAttack(kinds, constraints=cons, **kw)
    attack.name = name
    return attack


def deepwordbug(*, max_chars: int | None = 6, max_words: int | None = None, **kw: Any) -> CharAttack:
    """DeepWordBug (Gao et al. 2018): swaps, keyboard-neighbour substitutions, deletions, insertions."""
    return _preset(("swap", "substitute", "delete", "insert"), "deepwordbug", max_chars, max_words, kw)


def bad_characters(*, max_chars: int | None = 6, max_words: int | None = None, deletions: bool = False,
                   **kw: Any) -> CharAttack:
    """Bad Characters (Boucher et al. 2022): homoglyphs and invisible characters (and deletions if asked)."""
    kinds = ("homoglyph", "invisible", "deletion") if deletions else ("homoglyph", "invisible")
    return _preset(kinds, "bad-characters", max_chars, max_words, kw)


def leetspeak(*, max_chars: int | None = 6, max_words: int | None = None, **kw: Any) -> CharAttack:
    """Leetspeak and spacing: letters as look-alike digits/symbols, words split by a space, dot or hyphen."""
    return _preset(("leet", "spacing"), "leetspeak", max_chars, max_words, kw)
