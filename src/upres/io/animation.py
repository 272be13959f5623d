"""Animated GIF, WebP and APNG: every frame upscaled, timing, looping and transparency kept.

Pillow's readers already compose each frame onto the full canvas (applying the previous
frame's disposal and blending), so every frame is upscaled as a whole RGBA picture and
written back as a full frame that replaces the one before it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageSequence, UnidentifiedImageError

from upres.errors import BadInputError
from upres.io.frames import FrameProgress, FrameUpscaler, MediaReport
from upres.io.image import Image, atomic_write, quantise, unit_float

_ANIMATED_FORMATS = {".gif": "GIF", ".png": "PNG", ".apng": "PNG", ".webp": "WEBP"}
_DEFAULT_DURATION_MS = 100


def is_animated_file(path: Path) -> bool:
    """An image file with more than one frame (reads the header only)."""
    if path.suffix.lower() not in _ANIMATED_FORMATS:
        return False
    try:
        with PILImage.open(path) as pil:
            return getattr(pil, "n_frames", 1) > 1
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError):
        return False  # read_image reports what is wrong with it


def upscale_animation(
    upscale_frame: FrameUpscaler,
    source: Path,
    destination: Path,
    *,
    quality: int | None = None,
    progress: FrameProgress | None = None,
    max_pixels: int | None = None,
) -> MediaReport:
    """Upscale every frame and write an animation of the destination's format atomically."""
    pil_format = _ANIMATED_FORMATS.get(destination.suffix.lower())
    if pil_format is None:
        raise ValueError(f"{destination}: an animation can be written as GIF, WebP or PNG only")
    report = MediaReport()
    frames, durations, loop = _read_frames(source, max_pixels)
    transparent = any(frame[:, :, 3].min() < 255 for frame in frames)
    upscaled = []
    for index, rgba in enumerate(frames):
        upscaled.append(_upscale_frame(upscale_frame, rgba, transparent))
        if progress is not None:
            progress(index + 1, len(frames))
    report.input_size = (frames[0].shape[1], frames[0].shape[0])
    report.output_size = upscaled[0].size
    report.frames = len(frames)
    report.notes.append(f"{len(frames)} frames")
    data = _encode(upscaled, durations, loop, pil_format, quality)
    destination.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(destination, data)
    return report


def _read_frames(
    source: Path, max_pixels: int | None
) -> tuple[list[np.ndarray], list[int], int | None]:
    """Full RGBA canvases, per-frame durations (ms), and the loop count (None: play once)."""
    try:
        with PILImage.open(source) as pil:
            width, height = pil.size
            if max_pixels is not None and width * height > max_pixels:
                raise BadInputError(
                    source, f"frames are {width}x{height}, more than {max_pixels:,} pixels"
                )
            loop = pil.info.get("loop")
            frames, durations = [], []
            for frame in ImageSequence.Iterator(pil):
                frames.append(np.asarray(frame.convert("RGBA")))
                durations.append(int(frame.info.get("duration") or _DEFAULT_DURATION_MS))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as error:
        raise BadInputError(source, f"animation is truncated or corrupt ({error})") from None
    return frames, durations, loop


def _upscale_frame(
    upscale_frame: FrameUpscaler, rgba: np.ndarray, transparent: bool
) -> PILImage.Image:
    image = Image(
        pixels=unit_float(rgba[:, :, :3]),
        alpha=unit_float(rgba[:, :, 3]) if transparent else None,
    )
    result = upscale_frame(image)
    colour = quantise(result.pixels, 8)
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    alpha = quantise(result.alpha, 8) if result.alpha is not None else None
    if alpha is None:
        return PILImage.fromarray(np.ascontiguousarray(colour), "RGB")
    return PILImage.fromarray(np.dstack([colour, alpha]), "RGBA")


def _encode(
    frames: list[PILImage.Image],
    durations: list[int],
    loop: int | None,
    pil_format: str,
    quality: int | None,
) -> bytes:
    options: dict = {"save_all": True, "append_images": frames[1:], "duration": durations}
    if loop is not None:
        options["loop"] = loop
    if pil_format == "GIF":
        options["disposal"] = 2  # each frame is a full canvas: clear before the next
        frames = [_gif_frame(frame) for frame in frames]
        options["append_images"] = frames[1:]
        if "transparency" in frames[0].info:
            options["transparency"] = frames[0].info["transparency"]
    elif pil_format == "PNG":
        options["disposal"] = 1  # APNG_DISPOSE_OP_BACKGROUND
        options["blend"] = 0  # APNG_BLEND_OP_SOURCE: replace, never paint over the last frame
    elif pil_format == "WEBP":
        options["quality"] = 95 if quality is None else int(quality)
        options["lossless"] = quality == 100
    buffer = io.BytesIO()
    frames[0].save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def _gif_frame(frame: PILImage.Image) -> PILImage.Image:
    """GIF has 1-bit transparency: a palette of 255 colours plus one transparent index."""
    if frame.mode != "RGBA":
        return frame.convert("P", palette=PILImage.Palette.ADAPTIVE, colors=256)
    alpha = np.asarray(frame)[:, :, 3]
    paletted = frame.convert("RGB").convert("P", palette=PILImage.Palette.ADAPTIVE, colors=255)
    indices = np.asarray(paletted).copy()
    indices[alpha < 128] = 255
    result = PILImage.fromarray(indices, "P")
    palette = paletted.getpalette()[: 255 * 3]
    result.putpalette(palette + [0] * (255 * 3 - len(palette)) + [0, 0, 0])
    result.info["transparency"] = 255
    return result
