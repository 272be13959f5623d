"""What an input is, from its header alone: size, channels, alpha, bit depth, kind.

`upres upscale --dry-run` plans every input from this without decoding any pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import UnidentifiedImageError

from upres.errors import BadInputError
from upres.io.animation import is_animated_file
from upres.io.image import _open_header, _orientation, _raw_mode
from upres.io.video import is_video_file

_GREY_MODES = {"1", "L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
_GREY_ALPHA_MODES = {"LA", "La"}
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    channels: int  # colour channels the engine sees: 1 (grey) or 3
    alpha: bool
    bit_depth: int
    kind: str  # "image" | "animation" | "video"; the last two are planned per frame


def probe(path: Path) -> Probe:
    """Read only what planning needs; BadInputError naming the file when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "file not found")
    if is_video_file(path):
        return _probe_video(path)
    animated = is_animated_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(path, f"cannot read file: {exc.strerror or exc}") from None
    pil = _open_header(data, path, None)
    width, height = pil.size
    if animated:  # frames are upscaled as whole RGBA pictures
        return Probe(width, height, 3, True, 8, "animation")
    if _orientation(pil) in _ROTATED:
        width, height = height, width
    mode = pil.mode
    grey = mode in _GREY_MODES or mode in _GREY_ALPHA_MODES or _raw_mode(pil).startswith("LA")
    alpha = (
        mode in ("RGBA", "LA", "La", "PA", "RGBa")
        or (mode == "P" and "transparency" in pil.info)
        or (mode in ("L", "RGB") and "transparency" in pil.info)
    )
    sixteen = mode.startswith("I;16") or mode == "I" or ";16" in _raw_mode(pil)
    return Probe(width, height, 1 if grey else 3, alpha, 16 if sixteen else 8, "image")


def _probe_video(path: Path) -> Probe:
    import av

    try:
        with av.open(str(path), "r") as container:
            if not container.streams.video:
                raise BadInputError(path, "has no video stream")
            context = container.streams.video[0].codec_context
            return Probe(context.width, context.height, 3, False, 8, "video")
    except (av.FFmpegError, UnicodeDecodeError, UnidentifiedImageError) as error:
        raise BadInputError(path, f"not a readable video ({error})") from None
