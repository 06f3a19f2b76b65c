"""Robust training of text classifiers with attack-generated augmentations.

The text analogue of adversarial training (Goodfellow, Shlens and Szegedy 2015, "Explaining and Harnessing
Adversarial Examples": train on the model's own adversarial examples with their true labels; Madry et al. 2018 as
a min-max loop): each round attacks training messages of the attacked class (spam) against the *current* model with
character edits, homoglyphs and invisible characters, adds the successful adversarial messages with their true
labels, and refits. Training on attack outputs is the defence Jin et al. 2020 (TextFooler, section 5 "adversarial
training") and Boucher et al. 2022 ("Bad Characters", section 7) evaluate for text; later rounds attack the model
that already saw the earlier rounds' evasions, so each round hunts for what the previous refit still misses.

>>> from sparring.data.text import load_sms_spam
>>> from sparring.attacks.text import bad_characters
>>> ds = load_sms_spam()
>>> out = train_robust_text(ds.x_train, ds.y_train, attack=bad_characters(max_chars=6), n_attacked=20)
>>> out.history[0].augmented > 0
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from sparring.attacks.text import CharAttack, Constraints, TextAttack
from sparring.errors import ParameterError
from sparring.targets.text import TextTarget, _validate_labels, validate_texts

__all__ = ["CHAR_KINDS", "RobustTextResult", "TextRound", "augment_with_attacks", "train_robust_text"]

CHAR_KINDS = ("swap", "substitute", "delete", "insert", "leet", "spacing", "homoglyph", "invisible")
"""Every character edit kind: DeepWordBug typos, leetspeak/spacing, Bad-Characters homoglyphs and invisibles."""

Fit = Callable[[list[str], list[int]], TextTarget]


@dataclass(frozen=True)
class TextRound:
    """One round of robust training: messages attacked, evasions found (added to the training set), their cost,
    and the size of the training set the model was refitted on."""

    round: int
    attacked: int
    augmented: int
    attack_success_rate: float
    queries: int
    seconds: float
    train_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RobustTextResult:
    """The robustly trained target, the adversarial messages it was trained on, and one :class:`TextRound` each."""

    target: TextTarget
    augmented_texts: list[str] = field(default_factory=list)
    augmented_labels: list[int] = field(default_factory=list)
    history: list[TextRound] = field(default_factory=list)


def augment_with_attacks(target: TextTarget, texts: Any, y: Any, attack: TextAttack) -> tuple[list[str], list[int],
                                                                                            float, int]:
    """Attack ``texts`` against ``target`` and keep the adversarial messages that evaded it, with their TRUE labels.

    Returns ``(adversarial_texts, labels, attack_success_rate, queries)``. Messages the model already got wrong, or
    that the attack did not break, add nothing. A query budget on ``target`` that runs out keeps what was found.
    """
    if not isinstance(attack, TextAttack):
        raise ParameterError(f"attack must be a sparring.attacks.text attack (e.g. bad_characters()); got "
                             f"{type(attack).__name__}.")
    res = attack(target, texts, y)
    keep = res.broken.tolist()
    adv = [a for a, k in zip(res.adv_texts, keep, strict=True) if k]
    labels = [int(v) for v, k in zip(res.y.tolist(), keep, strict=True) if k]
    return adv, labels, res.attack_success_rate, res.cost.queries


def _check(rounds: int, n_attacked: int, attack_class: int | None) -> None:
    for name, v in (("rounds", rounds), ("n_attacked", n_attacked)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ParameterError(f"{name} must be a positive integer; got {v!r}.")
    if attack_class is not None and (isinstance(attack_class, bool) or not isinstance(attack_class, int)
                                     or attack_class < 0):
        raise ParameterError(f"attack_class must be a class index (e.g. 1 for spam) or None for every class; got "
                             f"{attack_class!r}.")


def _default_fit(texts: list[str], y: list[int]) -> TextTarget:
    from sparring.data.text import fit_tfidf_logreg

    return fit_tfidf_logreg(texts, y)


def train_robust_text(
    texts: Sequence[str] | Any, y: Any, *, fit: Fit | None = None, attack: TextAttack | None = None,
    rounds: int = 1, n_attacked: int = 200, attack_class: int | None = 1, initial: TextTarget | None = None,
    n_classes: int = 2, seed: int = 0,
) -> RobustTextResult:
    """Robust training with attack-generated augmentations (adversarial training for a text classifier).

    Args:
        texts, y: the clean training set (list of messages, integer labels).
        fit: ``(texts, labels) -> TextTarget`` fitting the model from scratch; default the ``spam-tfidf-logreg``
            recipe (:func:`sparring.data.text.fit_tfidf_logreg`).
        attack: the attack generating the augmentations; default every character edit kind (:data:`CHAR_KINDS`)
            with no character limit.
        rounds: attack-and-refit rounds; round ``r`` attacks the model refitted after round ``r - 1``.
        n_attacked: training messages attacked per round (a fresh random draw each round).
        attack_class: only messages of this class are attacked (1: spam, whose senders want to pass as ham);
            ``None`` attacks every class.
        initial: the model to attack in round 1 (default ``fit(texts, y)``); it must have been fitted on ``texts``.
        n_classes: number of classes of the labels.
        seed: seed of the per-round draws of messages.

    Returns:
        :class:`RobustTextResult`: the final target (fitted on ``texts`` plus every round's evasions), the added
        messages, and the history.

    Raises:
        InputSpecError, LabelError: malformed messages or labels. ParameterError: bad settings, or no message of
        ``attack_class``.
    """
    _check(rounds, n_attacked, attack_class)
    valid = validate_texts(texts)
    labels = _validate_labels(y, len(valid), n_classes)
    pool = torch.arange(len(valid)) if attack_class is None else (labels == attack_class).nonzero().flatten()
    if pool.numel() == 0:
        raise ParameterError(f"no training message has attack_class {attack_class}; classes present: "
                             f"{sorted(set(labels.tolist()))}. Pass attack_class=None to attack every class.")
    fit_fn: Fit = fit if fit is not None else _default_fit
    atk = attack if attack is not None else CharAttack(CHAR_KINDS, constraints=Constraints())
    ylist = labels.tolist()
    model = initial if initial is not None else fit_fn(valid, ylist)
    out = RobustTextResult(model)
    gen = torch.Generator().manual_seed(seed)
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        idx = pool[torch.randperm(pool.numel(), generator=gen)[:n_attacked]].tolist()
        adv, adv_y, rate, queries = augment_with_attacks(model, [valid[i] for i in idx], [ylist[i] for i in idx],
                                                         atk)
        out.augmented_texts += adv
        out.augmented_labels += adv_y
        model = fit_fn(valid + out.augmented_texts, ylist + out.augmented_labels)
        out.history.append(TextRound(r, len(idx), len(adv), rate, queries, round(time.perf_counter() - t0, 3),
                                     len(valid) + len(out.augmented_texts)))
    out.target = model
    return out
