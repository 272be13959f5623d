"""One upscale request, validated once with the same rules and messages on every surface.

The CLI, `upres.load(...)`/`Upscaler.__call__`/`upscale_file`, the service's form and each
`upres batch` item build an `UpscaleRequest` before a model loads or a pixel is decoded; a
field that breaks a rule raises `RequestError` naming it. Light on purpose (no torch, no
OpenCV): the CLI builds it before anything heavy is imported.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from upres.errors import OutputTooLargeError, RequestError
from upres.settings import setting

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
ALPHA_MODES = ("model", "bicubic")
# Still-image formats a result can be written in (an animation or a video keeps its own).
WRITE_FORMATS = ("png", "jpg", "jpeg", "webp", "tiff", "tif", "bmp")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# An explicit tile below this runs thousands of model calls for nothing (the engine's own
# out-of-memory retries stop at the same size); 0 means the whole image as one tile.
SMALLEST_TILE = 32
NO_TILING = 0
MAX_OVERLAP = 512
MAX_OUTPUT_ENV = "UPRES_MAX_OUTPUT_PIXELS"
# Host bytes a result pixel is budgeted at its peak, a cautious sum: the RGB result (3 B,
# 6 B at 16 bits), a float32 copy for the resize or sharpening (12 B), the alpha plane.
BYTES_PER_OUTPUT_PIXEL = 16


@dataclass(frozen=True)
class VideoRequest:
    """How an upscaled video is encoded; codec None picks one that suits the container."""

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str = "yuv420p"


@dataclass(frozen=True)
class UpscaleRequest:
    """What to run and how to write it. Construction validates; instances are immutable.

    scale, width, height and long_side: at most one (None everywhere: the model's scale).
    tile: None is "auto" (planned from free memory), 0 one tile (no tiling), else >= 32.
    max_output_pixels: None is the default from host memory (`default_max_output_pixels`).
    """

    models: tuple[str, ...] = ()
    scale: float | None = None
    width: int | None = None
    height: int | None = None
    long_side: int | None = None
    tile: int | None = None
    tile_overlap: int = 32
    precision: str = "auto"
    device: str = "auto"
    format: str | None = None
    quality: int | None = None
    sharpen: float = 0.0
    alpha: str = "model"
    denoise_strength: float | None = None
    max_input_size: int | None = None
    max_input_pixels: int | None = None
    max_output_pixels: int | None = None
    overwrite: bool = False
    skip_existing: bool = False
    suffix: str | None = None
    video: Any = field(default_factory=VideoRequest)  # VideoRequest or io.video.VideoOptions

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "models", tuple(str(m) for m in self.models or ()))
        set_(self, "scale", _scale(self.scale))
        for name in ("width", "height", "long_side"):
            set_(self, name, _positive_int(name, getattr(self, name), "pixels"))
        given = [n for n in ("scale", "width", "height", "long_side") if getattr(self, n)]
        if len(given) > 1:
            raise RequestError(
                given[1],
                f"cannot be combined with {given[0]}: give one of scale, width, height"
                " or long_side",
            )
        set_(self, "tile", parse_tile(self.tile))
        set_(self, "tile_overlap", _int_range("tile_overlap", self.tile_overlap, 0, MAX_OVERLAP))
        set_(self, "precision", _choice("precision", self.precision, PRECISIONS))
        set_(self, "device", _device(self.device))
        set_(self, "format", _format(self.format))
        if self.quality is not None:
            set_(self, "quality", _int_range("quality", self.quality, 1, 100))
        set_(self, "sharpen", _float_range("sharpen", self.sharpen, 0.0, 1.0))
        set_(self, "alpha", _choice("alpha", self.alpha, ALPHA_MODES))
        if self.denoise_strength is not None:
            strength = _float_range("denoise_strength", self.denoise_strength, 0.0, 1.0)
            set_(self, "denoise_strength", strength)
        for name in ("max_input_size", "max_input_pixels", "max_output_pixels"):
            set_(self, name, _positive_int(name, getattr(self, name), ""))
        if self.overwrite and self.skip_existing:
            raise RequestError("overwrite", "cannot be combined with skip_existing")
        set_(self, "suffix", _suffix(self.suffix))
        set_(self, "video", _video(self.video))

    # -- derived facts --------------------------------------------------------------

    @property
    def exact_size(self) -> bool:
        return bool(self.width or self.height or self.long_side)

    def output_limit(self) -> int:
        return self.max_output_pixels or default_max_output_pixels()

    def planned_size(self, width: int, height: int, model_scale: float) -> tuple[int, int]:
        """The result's size for an input of this size, after the max_input_size downsize
        (or UPRES_MAX_INPUT_SIZE's, as the engine applies it)."""
        limit = self.max_input_size
        configured = setting("UPRES_MAX_INPUT_SIZE")  # or the seed's MAX_INPUT_SIZE
        if limit is None and configured is not None and configured.isdigit():
            limit = int(configured)
        width, height = downsized(width, height, limit)
        return self.output_size(width, height, model_scale)

    def output_size(self, width: int, height: int, model_scale: float) -> tuple[int, int]:
        """The result's (width, height) for an input of this size (after any downsize)."""
        if self.width:
            return self.width, max(1, round(height * self.width / width))
        if self.height:
            return max(1, round(width * self.height / height)), self.height
        if self.long_side:
            ratio = self.long_side / max(width, height)
            return max(1, round(width * ratio)), max(1, round(height * ratio))
        factor = self.scale or float(model_scale)
        return max(1, round(width * factor)), max(1, round(height * factor))

    def tag(self, model_scale: float) -> str:
        """NAME_TAG of results written beside their inputs: --suffix, else x4 / w1920..."""
        if self.suffix is not None:
            return self.suffix
        if self.width:
            return f"w{self.width}"
        if self.height:
            return f"h{self.height}"
        if self.long_side:
            return f"l{self.long_side}"
        return f"x{(self.scale or model_scale):g}"

    def with_options(self, **changes: Any) -> UpscaleRequest:
        """A copy with some fields changed, validated again."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise RequestError(unknown[0], "is not an option")
        return replace(self, **changes)


def downsized(width: int, height: int, limit: int | None) -> tuple[int, int]:
    """The size after the Smart-Safe downsize to `limit` on the longest side (if over it)."""
    longest = max(width, height)
    if not limit or longest <= limit:
        return width, height
    ratio = limit / longest
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def check_output_size(
    source: object, input_size: tuple[int, int], output: tuple[int, int], limit: int
) -> None:
    """Refuse a planned result over `limit` pixels, naming the largest scale that fits."""
    width, height = output
    if width * height <= limit:
        return
    in_width, in_height = input_size
    largest = math.floor(math.sqrt(limit / max(1, in_width * in_height)) * 100) / 100
    raise OutputTooLargeError(
        source if source is not None else None, output, limit, largest_scale=largest
    )


def default_max_output_pixels() -> int:
    """UPRES_MAX_OUTPUT_PIXELS, else what the host memory available now holds at a result
    pixel's peak cost (at least 16 megapixels, so a busy machine still does photos)."""
    value = os.environ.get(MAX_OUTPUT_ENV, "").strip()
    if value:
        try:
            limit = int(value)
        except ValueError:
            raise RequestError(
                MAX_OUTPUT_ENV, f"must be a number of pixels, not {value!r}"
            ) from None
        return _positive_int(MAX_OUTPUT_ENV, limit, "") or 1
    import psutil  # small, and only when a limit is needed

    available = int(psutil.virtual_memory().available)
    return max(16_000_000, available // BYTES_PER_OUTPUT_PIXEL)


def parse_tile(value: object) -> int | None:
    """'auto'/None -> None (planned); 0 -> no tiling; else a size of at least 32 pixels."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, bool):
        raise RequestError("tile", f"must be 'auto', 0 (no tiling) or a size, not {value!r}")
    try:
        tile = int(str(value).strip()) if isinstance(value, str) else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise RequestError(
            "tile", f"must be 'auto', 0 (no tiling) or a number of pixels, not {value!r}"
        ) from None
    if isinstance(value, float) and value != tile:
        raise RequestError("tile", f"must be a whole number of pixels, not {value}")
    if tile == NO_TILING:
        return NO_TILING
    if tile < SMALLEST_TILE:
        raise RequestError(
            "tile",
            f"must be 0 (no tiling), 'auto' or at least {SMALLEST_TILE} pixels, not {tile}",
        )
    return tile


# -- field rules ------------------------------------------------------------------------


def _number(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise RequestError(name, f"must be a number, not {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RequestError(name, f"must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise RequestError(name, f"must be a finite number, not {value!r}")
    return number


def _scale(value: object) -> float | None:
    if value is None:
        return None
    scale = _number("scale", value)
    if scale <= 0:
        raise RequestError("scale", f"must be greater than 0, not {value:g}")  # type: ignore[str-format]
    return scale


def _positive_int(name: str, value: object, unit: str) -> int | None:
    if value is None:
        return None
    number = _number(name, value)
    if number != int(number) or number < 1:
        what = f" number of {unit}" if unit else " whole number"
        raise RequestError(name, f"must be a positive{what}, not {value!r}")
    return int(number)


def _int_range(name: str, value: object, low: int, high: int) -> int:
    number = _number(name, value)
    if number != int(number) or not low <= number <= high:
        raise RequestError(name, f"must be a whole number from {low} to {high}, not {value!r}")
    return int(number)


def _float_range(name: str, value: object, low: float, high: float) -> float:
    number = _number(name, value)
    if not low <= number <= high:
        raise RequestError(name, f"must be between {low:g} and {high:g}, not {value!r}")
    return number


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise RequestError(name, f"must be one of {', '.join(choices)}, not {value!r}")
    return text


def _device(value: object) -> str:
    text = str(value).strip().lower()
    if not DEVICE_PATTERN.match(text):
        raise RequestError("device", f"must be auto, cpu, cuda, cuda:N or mps, not {value!r}")
    return text


def _format(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower().lstrip(".")
    if text not in WRITE_FORMATS:
        raise RequestError("format", f"must be one of png, jpg, webp, tiff, bmp, not {value!r}")
    return {"jpeg": "jpg", "tif": "tiff"}.get(text, text)


def _suffix(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    if not text or any(c in text for c in "/\\\0") or text.strip(".") == "":
        raise RequestError("suffix", f"must be a plain piece of a file name, not {value!r}")
    return text


def _video(value: Any) -> Any:
    """VideoRequest, or io.video.VideoOptions (the same four fields)."""
    if not all(hasattr(value, name) for name in ("codec", "crf", "preset", "pix_fmt")):
        raise RequestError("video", f"must be video options, not {type(value).__name__}")
    if value.crf is not None:
        _int_range("crf", value.crf, 0, 63)
    if not value.pix_fmt or not re.match(r"^[a-z0-9_]+$", str(value.pix_fmt)):
        raise RequestError("pix_fmt", f"must be a pixel format name, not {value.pix_fmt!r}")
    return value
