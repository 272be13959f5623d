"""What the service refuses, and how: every refusal is a 4xx JSON answer naming the problem.

Refusals carry the limit's name and value (`{"error": "input_too_large", "limit":
"max_input_pixels", "value": 16777216, "detail": "..."}`) so a client can act on them
without parsing prose.
"""

from __future__ import annotations

import io
import math
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
        return body | {"detail": self.detail} | self.extra


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


class BodyLimitMiddleware:
    """Stops reading an upload as soon as it is over the limit, before it is all spooled."""

    def __init__(self, app: ASGIApp, limit: int, max_upload_bytes: int) -> None:
        self.app = app
        self.limit = limit
        self.max_upload_bytes = max_upload_bytes

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
        replied = False

        async def counted() -> dict:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                over = True
                return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict) -> None:
            nonlocal replied
            if not over:
                await send(message)
            elif not replied:  # whatever the app says about a cut body, the answer is 413
                replied = True
                await self._refuse(send)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not replied:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        error = limit_error(
            413,
            "upload_too_large",
            "max_upload_bytes",
            self.max_upload_bytes,
            f"the upload is larger than the limit of {self.max_upload_bytes:,} bytes",
        )
        response = JSONResponse(error.body(), status_code=413, headers={"Connection": "close"})
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}
