"""Decoding and encoding: files and in-memory objects to `Image` and back.

`upres.io.image` needs NumPy, Pillow and OpenCV; its names are imported on first use so
that `upres.io.paths` (what the command line reads first) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upres.io.image import Image, read_image, write_image

__all__ = ["Image", "read_image", "write_image"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import upres.io.image

        return getattr(upres.io.image, name)
    raise AttributeError(f"module 'upres.io' has no attribute {name!r}")
