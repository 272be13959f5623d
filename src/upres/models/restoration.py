"""Which restoration model fits an input: the JPEG model nearest to the file's own quality,
the denoising model nearest to the noise level asked for, grey models for grey images.

The SwinIR models are trained at fixed levels (JPEG quality 10/20/30/40, noise sigma
15/25/50); a model trained for stronger degradation than the input's smooths detail away,
a weaker one leaves artefacts, so the nearest level is the pick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage

from upres.io.jpeg import jpeg_quality

JPEG_QUALITIES = (10, 20, 30, 40)
NOISE_SIGMAS = (15, 25, 50)
DEFAULT_SIGMA = 25
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass(frozen=True)
class Pick:
    model: str
    reason: str  # what the choice rests on, printed with it


def nearest(value: float, levels: tuple[int, ...]) -> int:
    """The nearest level; halfway between two, the lower (stronger restoration)."""
    return min(levels, key=lambda level: (abs(level - value), level))


def is_grey(path: Path) -> bool:
    try:
        with PILImage.open(path) as image:
            return image.mode in GREY_MODES
    except (OSError, ValueError):
        return False  # unreadable: the run reports the file's own problem


def kind_of(path: Path) -> str:
    return "grey" if is_grey(path) else "colour"


def pick_jpeg(path: Path, quality: int | None = None) -> Pick:
    """`quality` (--jpeg-quality) wins; else the file's estimated quality; else the mildest."""
    if quality is not None:
        reason = f"--jpeg-quality {quality}"
    else:
        quality = jpeg_quality(path)
        reason = (
            f"JPEG quality {quality} (estimated from its quantisation tables)"
            if quality is not None
            else "not a JPEG, quality unknown: the mildest model (--jpeg-quality N to choose)"
        )
    level = nearest(quality, JPEG_QUALITIES) if quality is not None else max(JPEG_QUALITIES)
    return Pick(f"swinir-jpeg-{kind_of(path)}-q{level}-x1", reason)


def pick_denoise(path: Path, sigma: float | None = None) -> Pick:
    """The model for the noise level asked for (--sigma, in 0-255 units), default 25."""
    reason = f"--sigma {sigma:g}" if sigma is not None else f"noise sigma {DEFAULT_SIGMA} (default)"
    level = nearest(sigma if sigma is not None else DEFAULT_SIGMA, NOISE_SIGMAS)
    return Pick(f"swinir-denoise-{kind_of(path)}-sigma{level}-x1", reason)
