"""An input guard for LLM applications: heuristics plus a small classifier over what the attacker can write (the
user turn, untrusted documents), run before the model is queried.

* Heuristics (high precision, each named in the verdict): instruction overrides ("ignore/disregard ... previous
  instructions"), requests for the prompt or the secret, role switches (developer mode, DAN), fake chat-template or
  system markers, "decode ... and follow" wrappers, invisible characters and mixed-script (homoglyph) words.
* Classifier: character n-gram (2-5, word-bounded) TF-IDF and logistic regression (the classic baseline of
  prompt-injection detectors; cf. Jain et al. 2023, "Baseline Defenses for Adversarial Attacks Against Aligned
  Language Models", Sec. 4 on detection), trained in well under a second on the labelled texts shipped with
  sparring (:func:`load_guard_set`). Long texts are scored sentence window by window (the maximum counts), so an
  injection hidden in a benign document is not diluted.

The guard looks through the encodings the red-team converters use: it also scores the text with invisible
characters removed and confusables folded, every base64 run decoded, and the text with leetspeak digits read as
letters. Its false-positive rate is measured on a held-out benign set (:func:`evaluate_guard`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from sparring.errors import ParameterError

__all__ = ["HEURISTICS", "GuardVerdict", "InputGuard", "evaluate_guard", "load_guard_set"]

HEURISTICS: dict[str, re.Pattern[str]] = {
    "override": re.compile(r"\b(ignore|disregard|forget|override|cancel|abandon|bypass)\b[^.!?\n]{0,40}\b"
                           r"(previous|prior|above|earlier|preceding|all|any|your|the)\b[^.!?\n]{0,25}\b"
                           r"(instructions?|prompts?|rules|directions|directives|guidelines|programming|orders)",
                           re.I),
    "prompt-request": re.compile(r"\b(print|repeat|reveal|show|output|display|paste|quote|reproduce|spell-check)\b"
                                 r"[^.!?\n]{0,40}\b(system (prompt|message)|initial (instructions|prompt|config\w*)|"
                                 r"(the )?(text|prompt|words|everything) above|your (hidden |initial )?"
                                 r"(instructions|prompt|setup message))", re.I),
    "secret-request": re.compile(r"\b(reveal|tell|give|print|show|spell|encode|write|include|disclose|share|"
                                 r"output)\b[^.!?\n]{0,30}\b(the|your)\s+(secret|hidden|confidential)?\s*"
                                 r"(password|passphrase|passcode|access code|secret)\b", re.I),
    "role-switch": re.compile(r"\b(you are now|from now on,? you are|developer mode|maintenance mode|debug mode|"
                              r"jailbreak|do anything now|no (rules|restrictions)|unrestricted|unfiltered)\b", re.I),
    "fake-system": re.compile(r"(<\|im_start\|>|\[system( override)?\]|###\s*system|<system>|\bsystem notice\b|"
                              r"\bnew instructions\b|\bimportant new instructions\b)", re.I),
    "decode-and-follow": re.compile(r"\b(decode|decipher)\b[^.\n]{0,40}\b(follow|obey|execute|do)\b", re.I),
    "delimiter-break": re.compile(r"(-{6,}|={6,}|#{6,})[^\n]{0,10}\b(end|stop|now|new)\b", re.I),
}
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\u00ad]")
_WORD = re.compile(r"\w+")
_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "0": "o", "5": "s", "7": "t", "$": "s"})
_SENT = re.compile(r"(?<=[.!?:\n])\s+")


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's verdict on one text: ``flagged``, the classifier's ``score`` (max over windows and views) and
    the heuristics that fired."""

    flagged: bool
    score: float
    heuristics: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "score": round(self.score, 6), "heuristics": list(self.heuristics)}


def load_guard_set(split: str = "train") -> list[dict[str, str]]:
    """The guard's labelled texts shipped with sparring: ``split`` is ``"train"`` or ``"heldout"``; each row is
    ``{"text", "label": "attack"|"benign", "kind": "prompt"|"document"}``."""
    if split not in ("train", "heldout"):
        raise ParameterError(f"split must be 'train' or 'heldout'; got {split!r}.")
    text = resources.files("sparring.llm").joinpath(f"data/guard_{split}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=1)
def _classifier() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rows = load_guard_set("train")
    model = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2,
                                          lowercase=True),
                          LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000))
    model.fit([r["text"] for r in rows], [int(r["label"] == "attack") for r in rows])
    return model


def _views(text: str) -> list[str]:
    from sparring.defenses.preprocess.text import normalize

    clean = normalize(text, mixed_script_only=True)
    views = [clean]
    for m in _B64.finditer(clean):
        import base64
        import binascii

        try:
            dec = base64.b64decode(m.group(0) + "=" * (-len(m.group(0)) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if dec.isprintable() or all(c.isprintable() or c.isspace() for c in dec):
            views.append(dec)
    if re.search(r"[A-Za-z][0-9@$][A-Za-z]", clean):
        views.append(clean.translate(_LEET))
    return views


def _windows(text: str, size: int = 240) -> list[str]:
    parts = [p for p in _SENT.split(text) if p.strip()]
    out, cur = [], ""
    for p in parts:
        if cur and len(cur) + len(p) > size:
            out.append(cur)
            cur = ""
        cur = f"{cur} {p}".strip()
    if cur:
        out.append(cur)
    return out or [text]


class InputGuard:
    """Flags a text when a heuristic fires or the classifier's attack probability is at least ``threshold``.

    Args:
        threshold: classifier probability from which a text is flagged (0.5 default).
        heuristics, classifier: turn either part off (to measure each alone).
    """

    def __init__(self, *, threshold: float = 0.5, heuristics: bool = True, classifier: bool = True) -> None:
        if not 0 < threshold < 1:
            raise ParameterError(f"threshold must be in (0, 1); got {threshold!r}.")
        if not heuristics and not classifier:
            raise ParameterError("an input guard needs its heuristics, its classifier or both.")
        self.threshold, self.heuristics, self.classifier = float(threshold), heuristics, classifier

    def check(self, text: str) -> GuardVerdict:
        if not isinstance(text, str):
            raise ParameterError(f"the guard checks a str; got {type(text).__name__}.")
        views = _views(text)
        fired: list[str] = []
        if self.heuristics:
            if _INVISIBLE.search(text):
                fired.append("invisible-characters")
            if any(re.search(r"[A-Za-z]", w) and re.search(r"[\u0370-\u03ff\u0400-\u04ff]", w)
                   for w in _WORD.findall(text)):
                fired.append("mixed-script")
            fired += [name for name, rx in HEURISTICS.items() if any(rx.search(v) for v in views)]
        score = 0.0
        if self.classifier:
            windows = [w for v in views for w in _windows(v)]
            score = float(max(_classifier().predict_proba(windows)[:, 1]))
        flagged = bool(fired) or (self.classifier and score >= self.threshold)
        return GuardVerdict(flagged, score, tuple(dict.fromkeys(fired)))


def evaluate_guard(guard: InputGuard | None = None, rows: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """False-positive rate on the benign rows and detection rate on the attack rows (default: the held-out set),
    each with its Wilson 95% interval."""
    from sparring.llm.stats import wilson_interval

    g = guard or InputGuard()
    data = load_guard_set("heldout") if rows is None else rows
    flags = [(r["label"], g.check(r["text"]).flagged) for r in data]
    out: dict[str, Any] = {}
    for label, key in (("benign", "fpr"), ("attack", "tpr")):
        k = sum(f for lab, f in flags if lab == label)
        n = sum(lab == label for lab, _ in flags)
        lo, hi = wilson_interval(k, n)
        out[key] = {"flagged": k, "n": n, "rate": round(k / n, 6) if n else None, "ci95": [round(lo, 6),
                                                                                             round(hi, 6)]}
    return out
