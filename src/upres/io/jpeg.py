"""The quality a JPEG was saved at, estimated from its quantisation tables.

Pillow reads the tables (`Image.quantization`) but has no estimate, and none of our
dependencies has one, so it is written out here: every encoder that takes a 1-100
"quality" (libjpeg and its descendants: Pillow, OpenCV, ImageMagick, GIMP, most cameras'
software) scales the two example tables of the JPEG standard (ITU-T T.81, Annex K) by the
IJG rule below. The estimate is the quality whose scaled tables are nearest to the file's;
for tables made another way (some cameras, Photoshop) it is the IJG quality of similar
strength.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

# Annex K.1 and K.2, row by row (the order Pillow returns tables in).
# fmt: off
LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)
CHROMINANCE = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32
# fmt: on


def ijg_table(base: tuple[int, ...], quality: int) -> list[int]:
    """libjpeg's jpeg_quality_scaling + jpeg_add_quant_table with baseline limits."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(max((value * scale + 50) // 100, 1), 255) for value in base]


def estimate_quality(tables: dict[int, list[int]]) -> int:
    """The 1-100 quality whose standard tables are nearest to these (mean |difference|)."""
    bases = [LUMINANCE, CHROMINANCE]

    def distance(quality: int) -> float:
        pairs = [(list(tables[i]), bases[min(i, 1)]) for i in sorted(tables)[:2]]
        return sum(
            sum(abs(a - b) for a, b in zip(table, ijg_table(base, quality), strict=False))
            for table, base in pairs
        )

    return min(range(1, 101), key=lambda quality: (distance(quality), -quality))


def jpeg_quality(path: str | Path) -> int | None:
    """The estimated quality of a JPEG file; None when it is not a readable JPEG."""
    try:
        with PILImage.open(path) as image:
            tables = getattr(image, "quantization", None) if image.format == "JPEG" else None
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    if not tables or any(len(table) != 64 for table in tables.values()):
        return None
    return estimate_quality(tables)
