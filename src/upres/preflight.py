"""The cheap checks made per input before any pixel is decoded: headers only.

exists and readable, which kind (still, animation, video), the declared size, where the
result goes (not a folder, writable, a format that can hold this kind of result), and the
planned output within the output limit. Each failure is a typed error naming the file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from upres.errors import BadInputError, OutputError, OutputExistsError, RequestError
from upres.io.paths import ANIMATION_WRITE_SUFFIXES, VIDEO_SUFFIXES
from upres.request import WRITE_FORMATS, UpscaleRequest, check_output_size

STILL, ANIMATION, VIDEO = "still", "animation", "video"
STILL_WRITE_SUFFIXES = tuple(f".{name}" for name in WRITE_FORMATS)
_MULTI_FRAME_FORMATS = ("GIF", "PNG", "WEBP")
_SIDEWAYS_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class InputInfo:
    """What the header says: the kind of input, its upright size and its frame count."""

    path: Path
    kind: str  # STILL | ANIMATION | VIDEO
    width: int
    height: int
    frames: int = 1


@dataclass(frozen=True)
class Checked:
    """An input ready to run: its facts, the planned result size, or skip (output exists)."""

    info: InputInfo
    output_size: tuple[int, int]
    skip: bool = False


def inspect_input(path: str | Path, max_input_pixels: int | None = None) -> InputInfo:
    """The input's kind and size from its header; BadInputError for anything unusable."""
    path = Path(path)
    if not path.exists():
        problem = "dangling symbolic link" if path.is_symlink() else "file not found"
        raise BadInputError(path, problem)
    if path.is_dir():
        raise BadInputError(path, "is a folder, not an image file")
    if not path.is_file():
        raise BadInputError(path, "is not a regular file (a device, pipe or socket)")
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except PermissionError:
        raise BadInputError(path, "permission denied (not readable)") from None
    except OSError as error:
        raise BadInputError(path, f"cannot read file: {error.strerror or error}") from None
    if empty:
        raise BadInputError(path, "file is empty (0 bytes)")
    info = _video_header(path) if path.suffix.lower() in VIDEO_SUFFIXES else _image_header(path)
    if info.width <= 0 or info.height <= 0:
        raise BadInputError(path, f"has zero size ({info.width}x{info.height})")
    pixels = info.width * info.height
    if max_input_pixels is not None and pixels > max_input_pixels:
        raise BadInputError(
            path,
            f"is {info.width}x{info.height} = {pixels:,} pixels, more than the limit of"
            f" {max_input_pixels:,} pixels (--max-input-pixels)",
        )
    return info


def _image_header(path: Path) -> InputInfo:
    try:
        with warnings.catch_warnings():
            # Our own limits follow; Pillow's bomb warning would only be noise here.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as pil:
                width, height = pil.size
                frames = 1
                if pil.format in _MULTI_FRAME_FORMATS:
                    frames = int(getattr(pil, "n_frames", 1))
                orientation = pil.getexif().get(_EXIF_ORIENTATION) if pil.format == "JPEG" else 1
    except PILImage.DecompressionBombError as error:
        raise BadInputError(
            path, f"header declares a huge image, refused unread ({error})"
        ) from None
    except UnidentifiedImageError:
        raise BadInputError(path, "not an image file (unknown or unsupported format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as error:
        raise BadInputError(path, f"corrupt or truncated image header ({error})") from None
    if orientation in _SIDEWAYS_ORIENTATIONS:
        width, height = height, width
    return InputInfo(path, ANIMATION if frames > 1 else STILL, width, height, frames)


def _video_header(path: Path) -> InputInfo:
    import av  # PyAV only when a video is actually given

    try:
        with av.open(str(path), "r") as container:
            if not container.streams.video:
                raise BadInputError(path, "has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = int(stream.frames or 0)
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise BadInputError(path, f"not a readable video ({error})") from None
    return InputInfo(path, VIDEO, width, height, frames)


def check_destination(info: InputInfo, destination: str | Path, request: UpscaleRequest) -> bool:
    """Raise unless the result can be written there; True when it exists and is skipped."""
    destination = Path(destination)
    _check_suffix(info, destination, request.format)
    if destination.is_dir():
        raise OutputError(destination, "is a folder; name a file, or give a folder as -o")
    if destination.exists() or destination.is_symlink():
        if request.skip_existing:
            return True
        if not request.overwrite:
            raise OutputExistsError(
                f"{destination}: already exists (use --overwrite or --skip-existing)"
            )
        if info.path.resolve() == destination.resolve():
            raise OutputExistsError(f"{destination}: is the input itself; write elsewhere")
    _check_writable(destination)
    return False


def _check_suffix(info: InputInfo, destination: Path, format: str | None) -> None:
    suffix = destination.suffix.lower()
    if info.kind == VIDEO:
        if suffix not in VIDEO_SUFFIXES:
            raise OutputError(
                destination, f"a video is written as {', '.join(VIDEO_SUFFIXES)} only"
            )
    elif info.kind == ANIMATION:
        if suffix not in ANIMATION_WRITE_SUFFIXES:
            raise OutputError(
                destination,
                f"{info.path.name} is an animation ({info.frames} frames): write it as"
                " .gif, .webp or .png",
            )
    elif format is None and suffix not in STILL_WRITE_SUFFIXES:
        shown = suffix or "no suffix"
        raise OutputError(
            destination, f"cannot write an image as {shown}; use .png, .jpg, .webp, .tiff or .bmp"
        )


def _check_writable(destination: Path) -> None:
    """Probe the nearest existing folder with a real file: permissions, read-only
    filesystems and full disks all show up here, before the model runs."""
    folder = destination.parent
    while not folder.exists():
        if folder.is_symlink():
            raise OutputError(destination, f"{folder} is a dangling symbolic link")
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(destination, f"{folder} is a file, not a folder")
    probe = folder / f".upres-probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise OutputError(destination, f"cannot write in {folder} ({error.strerror})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()


def check_video_codec(codec: str | None) -> None:
    """An encoder name FFmpeg does not have is a usage error, found before any frame."""
    if codec is None:
        return
    import av

    try:
        av.codec.Codec(codec, "w")
    except (av.FFmpegError, ValueError, KeyError):
        raise RequestError("video_codec", f"is not an encoder this FFmpeg has: {codec!r}") from None


def check_input(
    source: str | Path,
    destination: str | Path,
    request: UpscaleRequest,
    model_scale: float,
) -> Checked:
    """Every check of one input and its destination, from headers only."""
    info = inspect_input(source, request.max_input_pixels)
    if info.kind == VIDEO:
        check_video_codec(request.video.codec)
    skip = check_destination(info, destination, request)
    output = request.planned_size(info.width, info.height, model_scale)
    if not skip:
        check_output_size(info.path, (info.width, info.height), output, request.output_limit())
    return Checked(info, output, skip)
