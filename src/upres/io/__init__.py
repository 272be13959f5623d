"""Decoding and encoding: files and in-memory objects to `Image` and back."""

from upres.io.image import Image, read_image, write_image

__all__ = ["Image", "read_image", "write_image"]
