"""What the service refuses, and how: every refusal is a 4xx JSON answer naming the problem.

Refusals carry the limit's name and value (`{"error": "input_too_large", "limit":
"max_input_pixels", "value": 16777216, "detail": "..."}`) so a client can act on them
without parsing prose.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import re
import warnings
from dataclasses import dataclass, field

from fastapi.responses import JSONResponse
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from starlette.types import ASGIApp, Receive, Scope, Send

from upres.errors import BadInputError
from upres.server.config import ServeConfig


@dataclass
class ServiceError(Exception):
    """An answer other than success: status, a stable error code, and a sentence."""

    status: int
    error: str
    detail: str
    limit: str | None = None
    value: int | float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def body(self) -> dict:
        body: dict = {"error": self.error, "code": self.error}
        if self.limit is not None:
            body |= {"limit": self.limit, "value": self.value}
        return scrubbed(body | {"detail": self.detail} | self.extra)


# An absolute path of two or more parts (POSIX or Windows); not the path part of a URL.
_PATH = re.compile(r"(?<![\w:/.\\])(?:[A-Za-z]:)?(?:[\\/][^\s\\/'\"]+){2,}[\\/]?")


_OWN_ROUTES = ("/v1/", "/healthz", "/metrics")


def without_paths(text: str) -> str:
    """A sentence with every filesystem path cut to its last part: the server's folders,
    cache and user names are nobody else's business."""

    def last_part(match: re.Match[str]) -> str:
        path = match.group(0)
        if path.startswith(_OWN_ROUTES):  # the service's own routes are not files
            return path
        return re.split(r"[\\/]", path.rstrip("\\/"))[-1]

    return _PATH.sub(last_part, text)


def scrubbed(value: object) -> object:
    """`without_paths` applied to every string in an answer (dicts and lists walked)."""
    if isinstance(value, str):
        return without_paths(value)
    if isinstance(value, dict):
        return {key: scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrubbed(item) for item in value]
    return value


def limit_error(
    status: int, error: str, limit: str, value: int | float, detail: str
) -> ServiceError:
    return ServiceError(status, error, detail, limit=limit, value=value)


def check_upload_size(size: int, config: ServeConfig) -> None:
    if size > config.max_upload_bytes:
        raise limit_error(
            413,
            "upload_too_large",
            "max_upload_bytes",
            config.max_upload_bytes,
            f"the upload is larger than the limit of {config.max_upload_bytes:,} bytes",
        )
    if size == 0:
        raise ServiceError(400, "empty_file", "the uploaded file is empty (0 bytes)")


def header_size(data: bytes, name: str) -> tuple[int, int]:
    """(width, height) from the image header alone: no pixel data is decoded here."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked next; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as pil:
                return pil.size
    except PILImage.DecompressionBombError:
        # Pillow refuses far beyond any limit we allow: report it as ours.
        return (1 << 31, 1 << 31)
    except UnidentifiedImageError:
        raise unsupported_format(name) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ServiceError(400, "bad_image", f"{name}: corrupt image header ({exc})") from None


# Container signatures of the videos `upres upscale` takes: the service does not.
_VIDEO_MAGIC = ((4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (8, b"AVI "))
# Animated formats the service gives back in their own format: PIL name -> result suffix.
ANIMATED_RESULT = {"GIF": "gif", "WEBP": "webp", "PNG": "png"}
MAX_FRAMES = 1000


def refuse_video(data: bytes, name: str) -> None:
    """A 415 that says why, instead of "not an image", for a video upload."""
    if any(data[offset : offset + len(magic)] == magic for offset, magic in _VIDEO_MAGIC):
        raise ServiceError(
            415,
            "video_not_accepted",
            f"{name}: a video; the service upscales still and animated images (GIF, WebP,"
            " PNG). Videos: `upres upscale clip.mp4 -o big.mp4` on the command line",
        )


def animation_format(data: bytes, name: str) -> str | None:
    """The result suffix of an animated upload (gif, webp, png), or None for a still."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as pil:
                if pil.format not in ANIMATED_RESULT:
                    return None
                frames = int(getattr(pil, "n_frames", 1))
                result = ANIMATED_RESULT[pil.format]
    except (OSError, SyntaxError, ValueError, EOFError, PILImage.DecompressionBombError):
        return None  # the still-image checks say what is wrong with it
    if frames > MAX_FRAMES:
        raise limit_error(
            413, "too_many_frames", "max_frames", MAX_FRAMES, f"{name} has {frames} frames"
        )
    return result if frames > 1 else None


def unsupported_format(name: str) -> ServiceError:
    return ServiceError(
        415,
        "unsupported_format",
        f"{name}: not an image this service can read (PNG, JPEG, WebP, TIFF, BMP, GIF)",
    )


def check_input_pixels(size: tuple[int, int], limit: int, limit_name: str, hint: str = "") -> None:
    width, height = size
    if width * height > limit:
        raise limit_error(
            413,
            "input_too_large",
            limit_name,
            limit,
            f"the image is {width}x{height} = {width * height:,} pixels, more than the limit"
            f" of {limit:,} pixels{hint}",
        )


def planned_output(
    size: tuple[int, int], scale: float, max_input_size: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(model input size after the Smart-Safe downsize, output size), as the engine computes."""
    width, height = size
    longest = max(width, height)
    if max_input_size and longest > max_input_size:
        ratio = max_input_size / longest
        width, height = max(1, round(width * ratio)), max(1, round(height * ratio))
    return (width, height), (round(width * scale), round(height * scale))


def check_output_pixels(output: tuple[int, int], scale: float, config: ServeConfig) -> None:
    width, height = output
    if width * height <= config.max_output_pixels:
        return
    largest = math.sqrt(config.max_output_pixels / (width * height)) * scale
    raise limit_error(
        422,
        "output_too_large",
        "max_output_pixels",
        config.max_output_pixels,
        f"the result would be {width}x{height} = {width * height:,} pixels, more than the"
        f" limit of {config.max_output_pixels:,}; a scale of at most {largest:.2f} fits",
    )


def bad_image(error: BadInputError) -> ServiceError:
    """A decode failure of the upload, as 415 (not an image) or 400 (broken image)."""
    if error.problem.startswith("not an image file"):
        return unsupported_format(error.source or "upload")
    if "more than the limit" in error.problem or "too large to decode" in error.problem:
        return ServiceError(413, "input_too_large", str(error))
    return ServiceError(400, "bad_image", str(error))


BODY_TIMEOUT_ENV = "UPRES_SERVE_BODY_TIMEOUT"
DEFAULT_BODY_TIMEOUT = 30.0  # seconds between two parts of a request body


def body_read_timeout() -> float:
    value = os.environ.get(BODY_TIMEOUT_ENV, "").strip()
    try:
        return float(value) if value else DEFAULT_BODY_TIMEOUT
    except ValueError:
        return DEFAULT_BODY_TIMEOUT


class BodyLimitMiddleware:
    """Stops reading an upload as soon as it is over the limit, before it is all spooled."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        max_upload_bytes: int,
        body_timeout: float | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.max_upload_bytes = max_upload_bytes
        # A client that declares more than it sends must not hold a connection for ever.
        self.body_timeout = body_timeout if body_timeout is not None else body_read_timeout()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0
        over = False
        stalled = False
        body_done = False
        replied = False

        async def counted() -> dict:
            nonlocal received, over, stalled, body_done
            if over:
                return {"type": "http.disconnect"}
            if body_done:  # later reads only wait for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                over = stalled = True
                return {"type": "http.disconnect"}
            received += len(message.get("body", b""))
            body_done = message["type"] != "http.request" or not message.get("more_body")
            if received > self.limit:
                over = True
                return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict) -> None:
            nonlocal replied
            if not over:
                await send(message)
            elif not replied:  # whatever the app says about a cut body, the answer is ours
                replied = True
                await self._refuse(send, stalled)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not replied:
            await self._refuse(send, stalled)

    async def _refuse(self, send: Send, stalled: bool = False) -> None:
        if stalled:
            error = limit_error(
                408,
                "body_timeout",
                "body_read_timeout",
                self.body_timeout,
                f"the request body did not arrive within {self.body_timeout:g} s",
            )
        else:
            error = limit_error(
                413,
                "upload_too_large",
                "max_upload_bytes",
                self.max_upload_bytes,
                f"the upload is larger than the limit of {self.max_upload_bytes:,} bytes",
            )
        response = JSONResponse(
            error.body(), status_code=error.status, headers={"Connection": "close"}
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}
