"""The result of a text attack: adversarial messages, per-example success and cost, and the edits to show."""

from __future__ import annotations

import html
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import torch

from sparring.attacks.result import AttackResult

__all__ = ["TextAttackResult", "TextEdit", "visible"]


@dataclass(frozen=True)
class TextEdit:
    """One edited word: where it starts in the original message, what it was, what it became, how."""

    start: int
    old: str
    new: str
    kind: str
    chars: int


def visible(s: str) -> str:
    """``s`` with every non-ASCII or control code point written as ``<U+XXXX>`` (shows homoglyphs and invisibles)."""
    return "".join(c if 32 <= ord(c) < 127 else f"<U+{ord(c):04X}>" for c in s)


@dataclass
class TextAttackResult(AttackResult):
    """The outcome of a text attack on a batch of messages.

    Attributes:
        texts, adv_texts: the original and the adversarial messages (the original where nothing was found).
        y: the true labels.
        success: per message, the goal was reached (untargeted: prediction != y; targeted: prediction == target;
            threshold: the score of the attacked class fell below it). Messages already misclassified count as
            successes with no edit, as in :class:`~sparring.attacks.result.EvasionResult`.
        clean_correct: per message, the clean prediction was right.
        adv_pred: prediction on the adversarial message (-1 where the budget ran out before it was known).
        attacked: per message, the search ran to its end (False: skipped because the query budget ran out).
        edits: per message, the edited words (:class:`TextEdit`).
        similarity: per message, the sentence similarity to the original (``nan`` where not measured).
        queries: per message, the queries the search spent.
        budget_exhausted: the target's query budget stopped the attack; the result covers what was done.
        capped: per message, the attack's own ``max_queries`` cut candidates the search would have tried.
        unknown: per message, not broken and not finished (never attacked because the budget ran out, or
            ``capped``): neither robust nor broken; :attr:`robust_accuracy` does not count it.
        class_names: the target's class names (``None``: classes are shown as indices); :meth:`per_class` and the
            examples use them.
    """

    texts: list[str] = field(default_factory=list)
    adv_texts: list[str] = field(default_factory=list)
    y: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    success: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    clean_correct: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    adv_pred: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    attacked: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    edits: list[list[TextEdit]] = field(default_factory=list)
    similarity: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    queries: list[int] = field(default_factory=list)
    budget_exhausted: bool = False
    capped: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    unknown: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    class_names: tuple[str, ...] | None = None

    @property
    def n(self) -> int:
        return len(self.texts)

    @property
    def edited_chars(self) -> torch.Tensor:
        return torch.tensor([sum(e.chars for e in es) for es in self.edits], dtype=torch.long)

    @property
    def edited_words(self) -> torch.Tensor:
        return torch.tensor([len(es) for es in self.edits], dtype=torch.long)

    @property
    def broken(self) -> torch.Tensor:
        """Messages classified correctly when clean that the attack made reach its goal."""
        return self.success & self.clean_correct

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.n else 0.0

    @property
    def attack_success_rate(self) -> float:
        """Among messages classified correctly when clean, the share the attack broke."""
        cc = self.clean_correct
        return float(self.success[cc].float().mean()) if bool(cc.any()) else 0.0

    @property
    def n_unknown(self) -> int:
        return int(self.unknown.sum()) if self.unknown.numel() else 0

    @property
    def robust_accuracy(self) -> float:
        """Messages classified correctly when clean that the attack finished with and did not break."""
        if not self.n:
            return 0.0
        unknown = self.unknown if self.unknown.numel() else torch.zeros(self.n, dtype=torch.bool)
        return float((self.clean_correct & ~self.success & ~unknown).float().mean())

    def _mean_over_broken(self, v: torch.Tensor) -> float | None:
        b = self.broken
        return float(v[b].float().nanmean()) if bool(b.any()) else None

    @property
    def mean_edited_chars(self) -> float | None:
        """Mean edited characters per broken message (None if none was broken)."""
        return self._mean_over_broken(self.edited_chars)

    @property
    def mean_edited_words(self) -> float | None:
        return self._mean_over_broken(self.edited_words)

    @property
    def mean_similarity(self) -> float | None:
        m = self._mean_over_broken(self.similarity)
        return None if m is None or m != m else m

    def class_name(self, c: int) -> str:
        """The name of class ``c`` (its index as a string without class names; ``"?"`` for -1, not known)."""
        if c < 0:
            return "?"
        return self.class_names[c] if self.class_names is not None and c < len(self.class_names) else str(c)

    def per_class(self) -> dict[str, dict[str, Any]]:
        """Per true class (by name, in class order): messages, clean accuracy, attack success rate (among the
        correctly classified), robust accuracy, unknown count, and where the broken messages went (``moved_to``:
        adversarial prediction -> count)."""
        out: dict[str, dict[str, Any]] = {}
        unknown = self.unknown if self.unknown.numel() else torch.zeros(self.n, dtype=torch.bool)
        for c in sorted(set(self.y.tolist())):
            m = self.y == c
            cc, broken = self.clean_correct[m], self.broken[m]
            moved: dict[str, int] = {}
            for p in self.adv_pred[m][broken].tolist():
                moved[self.class_name(int(p))] = moved.get(self.class_name(int(p)), 0) + 1
            out[self.class_name(int(c))] = {
                "n": int(m.sum()), "clean_accuracy": float(cc.float().mean()),
                "attack_success_rate": float(self.success[m][cc].float().mean()) if bool(cc.any()) else 0.0,
                "robust_accuracy": float((cc & ~self.success[m] & ~unknown[m]).float().mean()),
                "n_unknown": int(unknown[m].sum()), "moved_to": moved}
        return out

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        s.update(n=self.n, attacked=int(self.attacked.sum()), clean_accuracy=float(self.clean_correct.float().mean())
                 if self.n else 0.0, success_rate=self.success_rate, attack_success_rate=self.attack_success_rate,
                 mean_edited_chars=self.mean_edited_chars, mean_edited_words=self.mean_edited_words,
                 mean_similarity=self.mean_similarity, budget_exhausted=self.budget_exhausted,
                 robust_accuracy=self.robust_accuracy, n_unknown=self.n_unknown,
                 unknown_rate=self.n_unknown / self.n if self.n else 0.0,
                 mean_queries=sum(self.queries) / max(1, self.n),
                 class_names=list(self.class_names) if self.class_names is not None else None,
                 per_class=self.per_class())
        return s

    def side_by_side(self, i: int, *, fmt: str = "text") -> tuple[str, str]:
        """The original and adversarial message ``i`` with the edited words marked.

        ``fmt="text"``: edited words in ``[[...]]`` with non-ASCII and invisible code points as ``<U+XXXX>``;
        ``fmt="html"``: escaped HTML with edited words in ``<mark>`` and each homoglyph/invisible character in
        ``<mark class="u" title="U+XXXX NAME">``.
        """
        orig, adv = self.texts[i], self.texts[i]
        pieces_o, pieces_a, last = [], [], 0
        for e in sorted(self.edits[i], key=lambda e: e.start):
            pieces_o += [_fmt(orig[last:e.start], fmt, False), _fmt(e.old, fmt, True)]
            pieces_a += [_fmt(orig[last:e.start], fmt, False), _fmt(e.new, fmt, True, e.kind)]
            last = e.start + len(e.old)
        tail = _fmt(adv[last:], fmt, False)
        return "".join(pieces_o) + tail, "".join(pieces_a) + tail

    def examples(self, k: int = 5, *, fmt: str = "text") -> list[dict[str, Any]]:
        """Up to ``k`` broken messages side by side, for reports."""
        idx = [int(i) for i in torch.nonzero(self.broken & (self.edited_words > 0)).flatten()][:k]
        out = []
        for i in idx:
            o, a = self.side_by_side(i, fmt=fmt)
            out.append({"index": i, "label": self.class_name(int(self.y[i])),
                        "adversarial_label": self.class_name(int(self.adv_pred[i])),
                        "original": o, "adversarial": a, "edited_chars": int(self.edited_chars[i]),
                        "similarity": None if self.similarity[i] != self.similarity[i] else
                        round(float(self.similarity[i]), 3)})
        return out

    def to_html(self, k: int = 10) -> str:
        """A standalone HTML page: the summary and up to ``k`` evading messages side by side, edits highlighted."""
        s = self.summary()
        keys = ("n", "attack_success_rate", "mean_edited_chars", "mean_edited_words", "mean_similarity",
                "mean_queries", "budget_exhausted")
        head = "".join(f"<tr><th>{key}</th><td>{html.escape(str(s[key]))}</td></tr>" for key in keys)
        rows = "".join(f"<tr><td>{html.escape(e['label'])} → {html.escape(e['adversarial_label'])}</td>"
                       f"<td>{e['original']}</td><td>{e['adversarial']}</td><td>{e['edited_chars']}</td></tr>"
                       for e in self.examples(k, fmt="html"))
        classes = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{c['n']}</td><td>{c['clean_accuracy']:.3f}</td>"
            f"<td>{c['attack_success_rate']:.3f}</td><td>{c['robust_accuracy']:.3f}</td><td>{c['n_unknown']}</td>"
            f"<td>{html.escape(', '.join(f'{k}: {v}' for k, v in c['moved_to'].items()))}</td></tr>"
            for name, c in s["per_class"].items())
        return (f"<!doctype html><meta charset=utf-8><title>{html.escape(self.attack)}</title>"
                "<style>mark{background:#fd6}mark.u{background:#f88}td,th{border:1px solid #ccc;padding:4px;"
                "vertical-align:top}</style>"
                f"<h1>{html.escape(self.attack)}</h1><table>{head}</table><h2>Per class</h2><table><tr><th>class</th>"
                "<th>messages</th><th>clean accuracy</th><th>attack success</th><th>robust accuracy</th>"
                f"<th>unknown</th><th>broken messages now read as</th></tr>{classes}</table><h2>Examples</h2><table>"
                "<tr><th>class → adversarial</th><th>original</th><th>adversarial</th><th>edited chars</th></tr>"
                f"{rows}</table>")


def _fmt(s: str, fmt: str, edited: bool, kind: str = "") -> str:
    if fmt == "text":
        return f"[[{visible(s)}]]" if edited else visible(s)
    if not edited:
        return html.escape(s)
    inner = "".join(
        html.escape(c) if 32 <= ord(c) < 127 else
        f'<mark class="u" title="U+{ord(c):04X} {html.escape(unicodedata.name(c, "control"))}">'
        f'{html.escape(c) if c.isprintable() else "·"}</mark>'
        for c in s
    )
    return f'<mark title="{html.escape(kind)}">{inner}</mark>'
