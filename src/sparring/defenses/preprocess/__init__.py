"""Input-preprocessing defences. Images: :mod:`.image` (bit depth, median, JPEG, smoothing, TV; defend, bpda).

Each input kind has its own module; import from here.
"""

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

__all__ = [
    "BitDepth",
    "JpegCompression",
    "MedianSmoothing",
    "Preprocessor",
    "SpatialSmoothing",
    "TotalVariation",
    "bpda",
    "defend",
    "image_bounds",
]
