"""Input-preprocessing defences. Images: :mod:`.image` (bit depth, median, JPEG, smoothing, TV; defend, bpda).
Text: :mod:`.text` (Unicode normalisation, confusables, invisible/bidi stripping, spelling and de-leet) and
:mod:`.bidi` (display order under the Unicode Bidirectional Algorithm).

Each input kind has its own module; import from here.
"""

from sparring.defenses.preprocess.bidi import display_order
from sparring.defenses.preprocess.image import (
    BitDepth,
    JpegCompression,
    MedianSmoothing,
    Preprocessor,
    SpatialSmoothing,
    TotalVariation,
    bpda,
    defend,
    image_bounds,
)
from sparring.defenses.preprocess.text import DefendedTextTarget, SpellingCorrector, normalize, resolve_bidi

__all__ = [
    "BitDepth",
    "DefendedTextTarget",
    "JpegCompression",
    "MedianSmoothing",
    "Preprocessor",
    "SpatialSmoothing",
    "SpellingCorrector",
    "TotalVariation",
    "bpda",
    "defend",
    "display_order",
    "image_bounds",
    "normalize",
    "resolve_bidi",
]
