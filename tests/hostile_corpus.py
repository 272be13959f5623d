"""Builds a corpus of hostile and odd inputs: what a careless or malicious user sends.

`build(root)` writes it and returns what each entry should do: `valid` inputs must be
upscaled and written, `bad` ones refused with one line naming them, and `blocked` ones are
fine images whose result cannot be written (a read-only folder, an output that is a folder).
Run it as a script to look at the corpus: `python tests/hostile_corpus.py /tmp/corpus`.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# Output limit for corpus runs: every valid entry fits, the declared-huge header does not.
MAX_OUTPUT_PIXELS = 50_000_000
NON_UTF8_GOOD = os.fsdecode(b"caf\xe9-latin1.png")
NON_UTF8_BAD = os.fsdecode(b"\xff\xfe-broken.png")


@dataclass
class Corpus:
    root: Path
    valid: list[Path] = field(default_factory=list)
    bad: list[Path] = field(default_factory=list)
    blocked: list[Path] = field(default_factory=list)  # fine inputs, unwritable result
    read_only: Path | None = None  # the folder whose result cannot be written
    # Every path to give the CLI: the corpus folder, plus what a folder scan does not see.
    arguments: list[Path] = field(default_factory=list)

    @property
    def inputs(self) -> list[Path]:
        return self.valid + self.bad + self.blocked


def rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, non-trivial picture (gradients and a disc), H x W x 3 uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2) < (min(width, height) / 3) ** 2
    picture = np.stack(
        [x * 255 / max(1, width - 1), y * 255 / max(1, height - 1), disc * 200.0], axis=2
    )
    picture += rng.normal(0, 4, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


def encoded(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds a few bytes of pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to claim width x height."""
    data = bytearray(encoded(Image.fromarray(rgb(16, 16)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(encoded(Image.fromarray(rgb(8, 8)).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    image = data.find(b"\x2c")  # the image descriptor
    data[image + 5 : image + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def tiff_declaring(width: int, height: int) -> bytes:
    """A baseline TIFF whose tags claim width x height over a one-strip body of 12 bytes."""
    entries = [
        (256, 4, 1, width),  # ImageWidth (LONG)
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: black is zero
        (273, 4, 1, 8),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 12),  # StripByteCounts: the 12 bytes there are
    ]
    body = b"\0" * 12
    ifd_offset = 8 + len(body)
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", ifd_offset) + body + ifd


def webp_declaring(width: int, height: int) -> bytes:
    """A lossless WebP (VP8L) header claiming width x height (at most 16384 a side)."""
    bits = (width - 1) | ((height - 1) << 14)
    vp8l = b"\x2f" + struct.pack("<I", bits) + b"\0" * 16
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def animation(frames: int, format: str, size: int = 12) -> bytes:
    images = [Image.fromarray(rgb(size, size, seed=i)) for i in range(frames)]
    options: dict = {"save_all": True, "append_images": images[1:], "duration": 80, "loop": 0}
    if format == "WEBP":
        options["lossless"] = True
    return encoded(images[0], format, **options)


def build(root: Path) -> Corpus:
    """Write the corpus under root/corpus; return what each entry is expected to do."""
    folder = root / "corpus"
    folder.mkdir(parents=True)
    corpus = Corpus(root=folder)

    def valid(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        corpus.valid.append(folder / name)

    def bad(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        corpus.bad.append(folder / name)

    picture = Image.fromarray(rgb(20, 14))
    png = encoded(picture, "PNG")
    jpeg = encoded(picture, "JPEG", quality=90)
    formats = {
        "png": png,
        "jpg": jpeg,
        "gif": encoded(picture.convert("P"), "GIF"),
        "webp": encoded(picture, "WEBP", quality=90),
        "tif": encoded(picture, "TIFF"),
        "bmp": encoded(picture, "BMP"),
    }

    # -- valid, if odd ------------------------------------------------------------
    valid("plain.png", png)
    valid("photo.jpg", jpeg)
    valid("lossy.webp", formats["webp"])
    valid("scan.tif", formats["tif"])
    valid("paint.bmp", formats["bmp"])
    valid("one-frame.gif", formats["gif"])
    valid("grey.png", encoded(picture.convert("L"), "PNG"))
    valid("grey-alpha.png", encoded(picture.convert("LA"), "PNG"))
    rgba = picture.convert("RGBA")
    rgba.putalpha(Image.fromarray((rgb(20, 14)[:, :, 0] > 100).astype(np.uint8) * 255))
    valid("rgba.png", encoded(rgba, "PNG"))
    palette = picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    valid("palette-transparent.png", encoded(palette, "PNG", transparency=0))
    grey16 = rgb(20, 14)[:, :, 0].astype(np.uint16) * 257
    valid("grey16.png", encoded(Image.fromarray(grey16), "PNG"))
    ok, rgb16 = cv2.imencode(".png", (rgb(20, 14).astype(np.uint16) * 257)[:, :, ::-1])
    assert ok
    valid("colour16.png", rgb16.tobytes())
    valid("cmyk.jpg", encoded(picture.convert("CMYK"), "JPEG", quality=90))
    valid("one-pixel.png", encoded(Image.fromarray(rgb(1, 1)), "PNG"))
    valid("wide-strip.png", encoded(Image.fromarray(rgb(300, 1)), "PNG"))
    valid("tall-strip.png", encoded(Image.fromarray(rgb(2, 200)), "PNG"))
    valid("png-named.jpg", png)
    valid("jpeg-named.png", jpeg)
    valid("animated.gif", animation(3, "GIF"))
    valid("animated.webp", animation(3, "WEBP"))
    valid("animated-apng.png", animation(2, "PNG"))
    valid("one-frame-anim.webp", animation(1, "WEBP"))
    valid("spaces and [brackets].png", png)
    valid(NON_UTF8_GOOD, png)

    # -- bad: each must be refused with one line naming it -----------------------
    for suffix, data in formats.items():
        bad(f"truncated.{suffix}", data[: max(16, len(data) // 2)])
    bad("bomb.png", png_header_only(100_000, 100_000))
    bad("bomb.jpg", jpeg_declaring(65_000, 65_000))
    bad("bomb.gif", gif_declaring(65_535, 65_535))
    bad("bomb.tif", tiff_declaring(100_000, 100_000))
    bad("bomb.webp", webp_declaring(16_384, 16_384))
    bad("big-header.png", png_header_only(12_000, 12_000))  # over the output limit at x2
    bad("zero-width.png", png_header_only(0, 10))
    bad("empty.png", b"")
    bad("text.png", b"this is not an image at all\n" * 4)
    bad("random.jpg", np.random.default_rng(1).integers(0, 256, 500, np.uint8).tobytes())
    bad("html.webp", b"<html><body>404 Not Found</body></html>")
    bad(NON_UTF8_BAD, png[:40])
    (folder / "folder-named.png").mkdir()
    corpus.bad.append(folder / "folder-named.png")
    (folder / "dangling.png").symlink_to(folder / "no-such-target.png")
    corpus.bad.append(folder / "dangling.png")
    os.mkfifo(folder / "pipe.png")
    corpus.bad.append(folder / "pipe.png")
    unreadable = folder / "unreadable.png"
    unreadable.write_bytes(png)
    unreadable.chmod(0)
    corpus.bad.append(unreadable)
    missing = folder / "missing.png"
    corpus.bad.append(missing)

    # -- fine inputs whose result cannot be written ------------------------------
    valid_blocked = folder / "blocked.png"
    valid_blocked.write_bytes(png)
    (folder / "blocked_x2.png").mkdir()  # where its result would go
    corpus.bad.append(folder / "blocked_x2.png")  # a folder named like an image, too
    corpus.blocked.append(valid_blocked)
    read_only = folder / "read-only"
    read_only.mkdir()
    (read_only / "inside.png").write_bytes(png)
    corpus.blocked.append(read_only / "inside.png")
    read_only.chmod(0o555)
    corpus.read_only = read_only

    corpus.arguments = [folder, read_only / "inside.png", missing]
    return corpus


def output_of(source: Path, tag: str = "x2") -> Path:
    """Where the CLI writes a result beside its input (stills from GIF become PNG)."""
    suffix = source.suffix.lower()
    animated = source.name.startswith("animated") or source.name == "one-frame-anim.webp"
    if suffix == ".gif" and not animated:
        suffix = ".png"
    return source.with_name(f"{source.stem}_{tag}{suffix}")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus-out")
    built = build(target)
    print(f"{len(built.valid)} valid, {len(built.bad)} bad, {len(built.blocked)} blocked")
    print(f"in {built.root}")
