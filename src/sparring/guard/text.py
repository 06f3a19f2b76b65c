"""Text models in the guard: a :class:`~sparring.targets.text.TextTarget` served in-process, requests
``{"inputs": ["text", ...]}`` answered ``{"scores": [[...]]}`` (the protocol
:class:`~sparring.targets.text.HttpTextTarget` speaks), with a Unicode/invisible-character detector.

The ``unicode`` detector scores each message by its count of *evasion characters*, the imperceptible perturbations
of Boucher et al. 2022 ("Bad Characters: Imperceptible NLP Attacks", IEEE S&P; Sec. VII recommends detecting and
sanitising them):

* invisible characters: zero-width, soft hyphen, word joiner, bidi controls, backspace, any other format (Cf) or
  C0 control character except tab/newline/CR (C1 controls U+0080-U+009F are left out: in real corpora they are
  Windows-1252 punctuation decoded as Latin-1, e.g. 34 of the 5,574 bundled SMS messages hold ``\x92`` for ``'``);
* homoglyphs: a non-ASCII letter or digit that NFKC (Unicode Standard Annex #15) or the TR39 confusables data
  folds to an ASCII letter or digit, when its word also holds an ASCII letter (mixed script: Cyrillic ``а`` in
  ``cаll``), or always when NFKC folds it (fullwidth, mathematical letters: ``ＦＲＥＥ``). A word written wholly in
  another script (``привет``) and punctuation look-alikes (curly quotes, dashes) are not counted.

It fires when the count exceeds its threshold (default 0: one evasion character). With ``normalise: true`` the
model classifies :func:`sparring.defenses.preprocess.text.normalize` of each message instead of the raw text.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

import torch

from sparring.defenses.preprocess.text import normalize
from sparring.errors import GuardConfigError, InputSpecError, QueryBudgetExceeded, SparringError
from sparring.guard.auth import Principal
from sparring.guard.config import GuardConfig
from sparring.guard.service import GuardService, Outcome
from sparring.guard.store import Event, Store, StoreBatch
from sparring.targets.text import TextTarget

__all__ = ["TextDetector", "TextGuardService", "evasion_chars", "text_hash", "validate_request_texts"]

_WORD = re.compile(r"\S+")
_ASCII_ALNUM = re.compile(r"[A-Za-z0-9]")
_ASCII_RUN = re.compile(r"[A-Za-z0-9]+")
_KEEP_CONTROLS = frozenset("\t\n\r")


def _invisible(c: str) -> bool:
    from sparring.attacks.text.transforms import INVISIBLE

    cat = unicodedata.category(c)
    return c in INVISIBLE or cat == "Cf" or (cat == "Cc" and c not in _KEEP_CONTROLS and not "\x80" <= c <= "\x9f")


def evasion_chars(text: str) -> int:
    """How many invisible characters and ASCII homoglyphs ``text`` holds (see the module docstring)."""
    from sparring.attacks.text.transforms import confusables_to_ascii

    table = confusables_to_ascii()
    n = sum(1 for c in text if _invisible(c))
    for m in _WORD.finditer(text):
        word = m.group()
        if word.isascii():
            continue
        mixed = bool(_ASCII_ALNUM.search(word))
        for c in word:
            if c.isascii() or not c.isalnum():
                continue
            nfkc = unicodedata.normalize("NFKC", c)
            folded = nfkc != c and nfkc.isascii() and nfkc.isalnum()
            n += folded or (mixed and _ASCII_RUN.fullmatch(table.get(c, "")) is not None)
    return n


@dataclass
class TextDetector:
    """The ``unicode`` detector of ``guard.yaml`` with its policy; scores are evasion-character counts."""

    name: str
    kind: str
    policy: str
    threshold: float
    normalise: bool

    def scores(self, texts: list[str]) -> list[float]:
        return [float(evasion_chars(t)) for t in texts]


def text_hash(texts: list[str]) -> str:
    """SHA-256 of the batch: of the UTF-8 text for one message; for several, of their hex digests joined by
    newlines (so each message's hash can be checked on its own)."""
    digests = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    return digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest()


def validate_request_texts(inputs: Any, *, max_batch: int, max_chars: int) -> list[str]:
    """``inputs`` of a text request as a list of non-empty strings of at most ``max_chars`` characters.

    Raises:
        InputSpecError: not a list, empty, over ``max_batch`` items, a non-string item, an empty or
            whitespace-only string, or one longer than ``max_chars`` (the message names the index).
    """
    if not isinstance(inputs, list):
        raise InputSpecError(f"'inputs' must be a list of strings (messages); got {type(inputs).__name__}. Send "
                             "{\"inputs\": [\"text\", ...]}.")
    if not inputs:
        raise InputSpecError("'inputs' is empty; send at least one message.")
    if len(inputs) > max_batch:
        raise InputSpecError(f"a batch of {len(inputs)} messages exceeds the limit of {max_batch}; split it.")
    for i, t in enumerate(inputs):
        if not isinstance(t, str):
            raise InputSpecError(f"inputs[{i}] is a {_json_type(t)}; every item must be a string (a message).")
        if not t.strip():
            raise InputSpecError(f"inputs[{i}] is empty or whitespace only; a classifier needs text. Drop it.")
        if len(t) > max_chars:
            raise InputSpecError(f"inputs[{i}] has {len(t)} characters, over the limit of {max_chars} "
                                 "(limits.max_text_chars); shorten or split it.")
    return list(inputs)


def _json_type(v: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", list: "list", dict: "object",
            type(None): "null"}.get(type(v), type(v).__name__)


class TextGuardService(GuardService):
    """A guard serving a text classifier in-process: the ``unicode`` detectors with their policies (run before the
    model, so a rejected message never reaches it), optional normalisation, then the model; the event (SHA-256 of
    the UTF-8 text, labels, confidences, detector scores, decision) is committed before the answer, as on the tensor
    path. PRADA and the drift window work on tensor inputs and are not run for text models."""

    def __init__(self, config: GuardConfig, *, target: TextTarget | None = None, store: Store | None = None) -> None:
        from sparring.data.text import text_model_names
        from sparring.targets.text_load import is_entry_point, load_text_target

        m = config.model
        if not m.is_text or m.source is None:
            raise GuardConfigError("TextGuardService serves text models (model: a text zoo name, or kind: text).")
        src = m.source if m.source in text_model_names() or is_entry_point(m.source) else str(config.resolve(m.source))
        self.text_target = target if target is not None else load_text_target(
            src, classes=m.classes, trust_pickle=m.trust_pickle, batch_size=config.limits.max_batch)
        self.text_detectors = [TextDetector(d.label, d.kind, d.policy, 0.0 if d.threshold is None else d.threshold,
                                            d.normalise) for d in config.detectors]
        self.normalise = any(d.normalise for d in self.text_detectors)
        self.detectors = []
        self._init_common(config, store)
        self.prada, self.drift, self._rates, self.rate_p0 = None, None, {}, None
        for d in self.text_detectors:
            self.metrics.detector_threshold.labels(d.name).set(d.threshold)
        self.apply_retention()

    def health(self) -> dict[str, Any]:
        t = self.text_target
        return {"status": "ok", "kind": "text", "n_classes": t.n_classes, "classes": t.class_names,
                "output": "scores", "score_kind": t.output, "normalise": self.normalise}

    def predict_texts(self, who: Principal, texts: list[str], *, path: str = "/predict") -> Outcome:
        """Answer a validated batch of messages for ``who``; the event is stored first."""
        t0 = time.perf_counter()
        with self._lock:
            res = self._texts_locked(who.client_id, texts, text_hash(texts), path)
        if isinstance(res, Outcome):
            return res
        batch, outcome = res
        return self._commit(batch, outcome, t0, who.client_id)

    def _texts_locked(self, cid: str, texts: list[str], sha: str, path: str) -> Outcome | tuple[StoreBatch, Outcome]:
        batch = StoreBatch(Event(cid, path, 200, "ok", input_sha256=sha, n_inputs=len(texts)))
        report: dict[str, Any] = {}
        flagged: list[str] = []
        for d in self.text_detectors:
            s = d.scores(texts)
            fired = [i for i, v in enumerate(s) if v > d.threshold]
            report[d.name] = {"scores": s, "threshold": d.threshold, "policy": d.policy, "fired": fired,
                              "normalised": d.normalise}
            for v in s:
                self.metrics.detector_score.labels(d.name).observe(v)
            if not fired:
                continue
            self.metrics.detector_fired.labels(d.name, d.policy).inc(len(fired))
            if d.policy == "reject" and batch.event.status == 200:
                msg = (f"rejected by detector {d.name!r}: message(s) {fired} hold invisible characters or "
                       f"homoglyphs (counts {[int(s[i]) for i in fired]}, threshold {d.threshold:g}); send plain text.")
                batch.event.status, batch.event.decision, batch.event.message = 403, "reject", msg
                batch.event.detectors = report
                return batch, Outcome(403, {"error": msg, "guard": {"rejected_by": d.name, "examples": fired}})
            if d.policy == "flag":
                flagged.append(d.name)
        sent = [normalize(t) or "." for t in texts] if self.normalise else texts
        try:
            with torch.no_grad():
                out = self.text_target.query(sent).detach().cpu()
        except QueryBudgetExceeded as exc:
            return self.refuse(429, "error", str(exc), path=path, client_id=cid, body_sha=sha)
        except SparringError as exc:
            return self.refuse(500, "error", f"the text model failed: {exc}", path=path, client_id=cid,
                               body_sha=sha)
        probs = out.double().softmax(dim=1) if self.text_target.output == "logits" else out.double()
        batch.event.prediction = {"labels": out.argmax(dim=1).tolist(),
                                  "confidence": [round(float(c), 6) for c in probs.amax(dim=1)]}
        batch.event.detectors = report
        body: dict[str, Any] = {"scores": out.tolist()}
        if flagged:
            batch.event.decision = "flag"
            body["guard"] = {"flagged": flagged}
        return batch, Outcome(200, body)
