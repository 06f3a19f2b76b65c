"""Bidi reordering: store a stretch of the message backwards between RIGHT-TO-LEFT OVERRIDE and POP DIRECTIONAL
FORMATTING, so every screen shows it unchanged while the classifier reads it reversed.

The third imperceptible perturbation class of Boucher, Shumailov, Anderson and Papernot (2022, "Bad Characters:
Imperceptible NLP Attacks", IEEE S&P, Sec. III-C "Reorderings"). The paper nests overrides to swap pairs of
characters; sparring reverses whole stretches of words, ``RLO + reversed(stretch) + PDF``, which the Unicode
Bidirectional Algorithm (UAX #9, rules X1–X9 and L2, with brackets mirrored by L4) displays as the original
stretch. Every candidate is checked with :func:`sparring.defenses.preprocess.bidi.display_order`: a candidate whose
display differs from the original message is never tried.

Cost accounting: a reversed stretch is charged 2 edited characters — the two invisible code points it inserts;
no visible character changes. Its stored (logical) text changes in many positions: :func:`logical_distance` gives the
Levenshtein distance of what is stored, for reports that want both counts. Protected tokens (URLs, phone
numbers, short codes) are never inside a stretch, so they keep their logical order (a phone's number detector or
a copy-paste still gets the right number).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import unicodedata
from typing import Any

import torch

from sparring.attacks.text.base import CharAttack, Normaliser, TextAttack
from sparring.attacks.text.constraints import Constraints, split_words
from sparring.attacks.text.result import TextAttackResult, TextEdit
from sparring.attacks.text.search import Goal
from sparring.attacks.text.transforms import levenshtein
from sparring.defenses.preprocess.bidi import MIRRORS, display_order, is_plain_ltr
from sparring.errors import ParameterError
from sparring.targets.text import TextTarget

__all__ = ["REVERSED_STRETCH", "BidiReorder", "logical_distance", "reverse_stretch"]

RLO, PDF = "\u202e", "\u202c"
REVERSED_STRETCH = "\u202e[^\u202c]*\u202c"  # a protected pattern: what a reordering wrote
_COST = 2
_LINE_BREAK = re.compile(r"[\n\r\t\x1c-\x1e\x85\u2028\u2029]")


def reverse_stretch(text: str) -> str:
    """``RLO + text reversed (brackets mirrored) + PDF``: displayed as ``text`` inside a left-to-right line."""
    return RLO + "".join(MIRRORS.get(c, c) for c in reversed(text)) + PDF


def logical_distance(result: TextAttackResult, i: int) -> int:
    """Levenshtein distance (code points) between original and adversarial message ``i`` as stored, not as shown."""
    return levenshtein(result.texts[i], result.adv_texts[i])


class BidiReorder(TextAttack):
    """Reordering attack (Boucher et al. 2022): reverse stretches of words behind RLO … PDF, greedily.

    Each step scores every stretch of consecutive editable words on one line (no protected token, no line or tab
    break inside, not overlapping a stretch already taken) in one batch and keeps the one that lowers the goal
    loss most; it stops at success, when no stretch lowers the loss, or when ``constraints.max_chars`` (2 per
    stretch) is spent; ``max_queries`` covers both stages. Candidates that would not display as the original are
    dropped — e.g. a stretch right before a number, which UAX #9 pulls into the right-to-left run (rules W7 and
    N1), so it would move on screen. With ``then`` (e.g. ``bad_characters(max_chars=None)``) the characters left
    over go to that attack on the reordered message, the reversed stretches protected.

    Args:
        max_words_per_stretch: longest stretch tried, in words (``None``: whole lines).
        then: a :class:`CharAttack` for the remaining budget, or ``None``.
        constraints: ``max_chars`` (2 per stretch) and ``protected`` apply; ``max_words`` and ``min_similarity``
            do not (a reversal changes no visible word).
        max_queries, adaptive_to: as for :class:`TextAttack` (the stretch search is greedy; ``then`` has its own
            beam width).

    Example:
        >>> from sparring.targets.text import CallableTextTarget
        >>> import torch
        >>> spam = lambda ts: torch.tensor([[0.1, 0.9] if "free" in t.lower() else [0.9, 0.1] for t in ts])
        >>> res = BidiReorder()(CallableTextTarget(spam, n_classes=2), ["Get free tickets"], [1])
        >>> bool(res.success[0]), int(res.edited_chars[0])
        (True, 2)
    """

    name = "bidi-reorder"

    def __init__(self, *, max_words_per_stretch: int | None = None, then: CharAttack | None = None,
                 constraints: Constraints | None = None, max_queries: int | None = None,
                 adaptive_to: Normaliser | None = None) -> None:
        super().__init__(constraints=constraints, max_queries=max_queries, adaptive_to=adaptive_to)
        self.max_words_per_stretch = max_words_per_stretch
        self.then = then

    def get_params(self) -> dict[str, Any]:
        then = None if self.then is None else {"attack": self.then.name, **self.then.get_params()}
        return {"max_words_per_stretch": self.max_words_per_stretch, "then": then, **super().get_params()}

    def _check_params(self) -> None:
        super()._check_params()
        m = self.max_words_per_stretch
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ParameterError(f"max_words_per_stretch must be a positive integer or None; got {m!r}.")
        if self.then is not None and not isinstance(self.then, CharAttack):
            raise ParameterError(f"then must be a CharAttack (e.g. bad_characters()) or None; got "
                                 f"{type(self.then).__name__}.")
        if self.then is not None:
            self.then._check_params()

    def _candidates(self, word: str) -> list[tuple[str, str]]:  # pragma: no cover - the search is over stretches
        return []

    def _survives(self, text: str, undone: str | None) -> bool:
        """Under ``adaptive_to``: the defence does not turn the candidate back into the original."""
        return self.adaptive_to is None or self.adaptive_to(text) != undone

    def _stretches(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` of every stretch of consecutive editable words on one line."""
        gaps, pieces = split_words(text, self.constraints.protected)
        limit = self.max_words_per_stretch or len(pieces)
        out = []
        for a, pa in enumerate(pieces):
            if not pa.editable:
                continue
            for b in range(a, min(len(pieces), a + limit)):
                pb = pieces[b]
                if not pb.editable or (b > a and _LINE_BREAK.search(gaps[b])):
                    break
                out.append((pa.start, pb.start + len(pb.text)))
        return out

    def _attack_one(self, target: TextTarget, goal: Goal, res: TextAttackResult, i: int,
                    clean_probs: torch.Tensor) -> None:
        text, y = res.texts[i], int(res.y[i])
        loss0, ok0 = goal.loss(clean_probs, y)
        if bool(ok0[0]):
            res.success[i], res.attacked[i] = True, True
            return
        budget = self.constraints.max_chars
        max_stretches = len(text) if budget is None else budget // _COST
        shown = display_order(text)
        undone = None if self.adaptive_to is None else self.adaptive_to(text)
        stretches = self._stretches(text)
        plain = is_plain_ltr(text)
        if plain:  # a plain left-to-right message: one stretch displays unchanged unless a number follows it
            stretches = [s for s in stretches if _safe_before(text, s[1])]
        chosen: list[tuple[int, int]] = []
        best_loss, best_pred, success, queries = float(loss0[0]), int(clean_probs.argmax()), False, 0
        try:
            while len(chosen) < max_stretches and not success:
                cands = [s for s in stretches if all(s[1] <= c[0] or c[1] <= s[0] for c in chosen)]
                texts = [_apply(text, [*chosen, s]) for s in cands]
                quick = plain and not chosen  # later stretches can interact (neutrals between two): full check
                keep = [k for k, t in enumerate(texts)
                        if (quick or display_order(t) == shown) and self._survives(t, undone)]
                room = len(keep) if self.max_queries is None else max(0, self.max_queries - 1 - queries)
                keep = keep[:room]
                if not keep:
                    break
                queries += len(keep)
                probs = target.query_proba([texts[k] for k in keep])
                loss, ok = goal.loss(probs, y)
                j = int(torch.argmin(loss))
                if float(loss[j]) >= best_loss:
                    break
                if quick and display_order(texts[keep[j]]) != shown:  # never expected: keep the guarantee
                    stretches.remove(cands[keep[j]])
                    continue
                chosen.append(cands[keep[j]])
                best_loss, best_pred, success = float(loss[j]), int(probs[j].argmax()), bool(ok[j])
            res.attacked[i] = True
        finally:  # also on QueryBudgetExceeded: keep the best message found so far
            res.queries[i] += queries
            if chosen:
                res.adv_texts[i] = _apply(text, chosen)
                res.edits[i] = [TextEdit(s, text[s:e], reverse_stretch(text[s:e]), "reorder", _COST)
                                for s, e in sorted(chosen)]
                res.adv_pred[i] = best_pred
            res.success[i] = success
        left = None if budget is None else budget - _COST * len(chosen)
        if not success and self.then is not None and (left is None or left > 0):
            self._then(target, goal, res, i, sorted(chosen), left)

    def _then(self, target: TextTarget, goal: Goal, res: TextAttackResult, i: int,
              chosen: list[tuple[int, int]], left: int | None) -> None:
        assert self.then is not None
        base = res.adv_texts[i]
        cons = dataclasses.replace(self.then.constraints, max_chars=left,
                                   protected=(*self.then.constraints.protected, REVERSED_STRETCH))
        room = None if self.max_queries is None else self.max_queries - res.queries[i]
        if room is not None and room < 2:
            return
        caps = [q for q in (room, self.then.max_queries) if q is not None]
        follow = copy.copy(self.then)  # the same attack (kinds, beam, name), on this budget and defence
        follow.constraints, follow.adaptive_to = cons, self.adaptive_to
        follow.max_queries = min(caps) if caps else None
        sub = follow(target, [base], [int(res.y[i])], target_class=goal.target_class, threshold=goal.threshold)
        res.queries[i] += sub.queries[0]
        res.budget_exhausted = res.budget_exhausted or sub.budget_exhausted  # the next message's query stops the run
        if not sub.edits[0]:
            return
        res.adv_texts[i] = sub.adv_texts[0]
        res.adv_pred[i] = int(sub.adv_pred[0])
        res.success[i] = bool(sub.success[0])
        starts = [s + _COST * k for k, (s, _) in enumerate(chosen)]  # where each stretch begins in ``base``
        shifted = [dataclasses.replace(e, start=e.start - _COST * sum(1 for b in starts if b < e.start))
                   for e in sub.edits[0]]
        res.edits[i] = sorted([*res.edits[i], *shifted], key=lambda e: e.start)


def _safe_before(text: str, end: int) -> bool:
    """After ``RLO … PDF`` in a plain left-to-right line, the text from ``end`` stays in place unless its first
    character that is not neutral is a number or a combining mark (UAX #9 W1, W5, W7, N1 pull it into the
    right-to-left run)."""
    for c in text[end:]:
        t = unicodedata.bidirectional(c)
        if t in ("WS", "ON", "CS", "ES", "ET", "BN"):
            continue
        return t not in ("EN", "AN", "NSM")
    return True


def _apply(text: str, stretches: list[tuple[int, int]]) -> str:
    out, last = [], 0
    for s, e in sorted(stretches):
        out += [text[last:s], reverse_stretch(text[s:e])]
        last = e
    out.append(text[last:])
    return "".join(out)
