"""What the animation and video paths share: the frame function they are given and what
they report back. `io` never imports the engine or the API; the caller (api.py) hands in
a function that upscales one decoded frame."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from upres.io.image import Image

# One decoded frame (float pixels, alpha or None) in, its upscaled Image out.
FrameUpscaler = Callable[[Image], Image]
FrameProgress = Callable[[int, int], None]


@dataclass
class MediaReport:
    """What the animation or video path saw and did, for the caller's own report."""

    input_size: tuple[int, int] = (0, 0)
    output_size: tuple[int, int] = (0, 0)
    frames: int = 0
    notes: list[str] = field(default_factory=list)
