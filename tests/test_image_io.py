"""Decode/encode: bit depth, grey, alpha, orientation, ICC/EXIF, errors, atomic writes."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms

import upres.io.image as image_io
from upres.errors import BadInputError
from upres.io.image import (
    Image,
    decode_bytes,
    encode_bytes,
    fill_transparent_colour,
    image_from_array,
    image_from_pil,
    image_to_array,
    image_to_pil,
    read_image,
    write_image,
)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
RNG = np.random.default_rng(1234)


def _rgb8(h: int = 24, w: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _rgb16(h: int = 24, w: int = 32, channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 65536, (h, w, channels), dtype=np.uint16)


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif_bytes(orientation: int) -> bytes:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    return exif.tobytes()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _raw_png(arr: np.ndarray, colour_type: int) -> bytes:
    """Minimal PNG writer for layouts no library here writes (16-bit grey+alpha)."""
    h, w = arr.shape[:2]
    rows = arr.astype(">u2").reshape(h, -1).tobytes()
    stride = len(rows) // h
    raw = b"".join(b"\x00" + rows[i * stride : (i + 1) * stride] for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def _as_uint(values: np.ndarray, bits: int) -> np.ndarray:
    return np.rint(values * (65535.0 if bits == 16 else 255.0)).astype(np.int64)


# --------------------------------------------------------------------------- round trips


def test_rgb8_png_round_trip(tmp_path: Path) -> None:
    arr = _rgb8()
    PILImage.fromarray(arr).save(tmp_path / "in.png")
    img = read_image(tmp_path / "in.png")
    assert img.pixels.shape == (24, 32, 3) and img.pixels.dtype == np.float32
    assert img.bit_depth == 8 and img.alpha is None and img.format == "PNG"
    assert img.source == tmp_path / "in.png"
    assert np.array_equal(_as_uint(img.pixels, 8), arr)
    out = write_image(img, tmp_path / "out.png")
    assert out == tmp_path / "out.png"
    back = PILImage.open(out)
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), arr)


def test_rgb16_png_keeps_every_bit(tmp_path: Path) -> None:
    arr = _rgb16()
    arr[0, 0] = (1, 257, 65534)  # values that 8 bits cannot represent
    cv2.imwrite(str(tmp_path / "in.png"), arr[:, :, ::-1])
    img = read_image(tmp_path / "in.png")
    assert img.bit_depth == 16 and img.pixels.shape == (24, 32, 3)
    assert np.array_equal(_as_uint(img.pixels, 16), arr)
    write_image(img, tmp_path / "out.png")
    back = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back[:, :, ::-1], arr)


def test_rgba16_png_round_trip(tmp_path: Path) -> None:
    arr = _rgb16(channels=4)
    cv2.imwrite(str(tmp_path / "in.png"), arr[:, :, [2, 1, 0, 3]])
    img = read_image(tmp_path / "in.png")
    assert img.bit_depth == 16 and img.pixels.shape[2] == 3
    assert np.array_equal(_as_uint(img.alpha, 16), arr[:, :, 3])
    assert np.array_equal(_as_uint(img.pixels, 16), arr[:, :, :3])
    write_image(img, tmp_path / "out.png")
    again = read_image(tmp_path / "out.png")
    assert np.array_equal(_as_uint(again.alpha, 16), arr[:, :, 3])


def test_grey16_png_round_trip(tmp_path: Path) -> None:
    arr = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
    arr[0, 0] = 1
    PILImage.fromarray(arr).save(tmp_path / "in.png")
    img = read_image(tmp_path / "in.png")
    assert img.is_grey and img.bit_depth == 16
    assert np.array_equal(_as_uint(img.pixels[:, :, 0], 16), arr)
    write_image(img, tmp_path / "out.png")
    back = PILImage.open(tmp_path / "out.png")
    assert back.mode.startswith("I;16") and np.array_equal(np.asarray(back), arr)


def test_grey_alpha16_png_is_read_at_16_bits(tmp_path: Path) -> None:
    arr = RNG.integers(0, 65536, (10, 12, 2), dtype=np.uint16)
    (tmp_path / "la16.png").write_bytes(_raw_png(arr, colour_type=4))
    img = read_image(tmp_path / "la16.png")
    assert img.is_grey and img.bit_depth == 16
    assert np.array_equal(_as_uint(img.pixels[:, :, 0], 16), arr[:, :, 0])
    assert np.array_equal(_as_uint(img.alpha, 16), arr[:, :, 1])


@pytest.mark.parametrize("channels", [1, 3])
def test_tiff16_round_trip(tmp_path: Path, channels: int) -> None:
    arr = _rgb16(channels=channels)
    cv2.imwrite(str(tmp_path / "in.tif"), arr[:, :, ::-1] if channels == 3 else arr[:, :, 0])
    img = read_image(tmp_path / "in.tif")
    assert img.bit_depth == 16 and img.pixels.shape[2] == channels and img.format == "TIFF"
    assert np.array_equal(_as_uint(img.pixels, 16), arr)
    write_image(img, tmp_path / "out.tiff")
    again = read_image(tmp_path / "out.tiff")
    assert again.bit_depth == 16 and np.array_equal(_as_uint(again.pixels, 16), arr)


def test_greyscale_stays_grey(tmp_path: Path) -> None:
    arr = RNG.integers(0, 256, (16, 16), dtype=np.uint8)
    PILImage.fromarray(arr).save(tmp_path / "grey.png")
    img = read_image(tmp_path / "grey.png")
    assert img.is_grey and img.pixels.shape == (16, 16, 1) and img.bit_depth == 8
    for suffix in (".png", ".jpg", ".tif", ".bmp"):
        write_image(img, tmp_path / f"out{suffix}")
        assert PILImage.open(tmp_path / f"out{suffix}").mode == "L", suffix
    assert np.array_equal(np.asarray(PILImage.open(tmp_path / "out.png")), arr)


def test_rgba_alpha_kept(tmp_path: Path) -> None:
    arr = np.dstack([_rgb8(), RNG.integers(0, 256, (24, 32), dtype=np.uint8)])
    PILImage.fromarray(arr).save(tmp_path / "in.png")
    img = read_image(tmp_path / "in.png")
    assert img.pixels.shape[2] == 3 and img.alpha is not None
    assert np.array_equal(_as_uint(img.alpha, 8), arr[:, :, 3])
    for suffix in (".png", ".tif"):
        write_image(img, tmp_path / f"out{suffix}")
        back = PILImage.open(tmp_path / f"out{suffix}")
        assert back.mode == "RGBA" and np.array_equal(np.asarray(back), arr), suffix
    write_image(img, tmp_path / "out.webp", quality=100)
    assert np.array_equal(np.asarray(PILImage.open(tmp_path / "out.webp"))[:, :, 3], arr[:, :, 3])


def test_la_grey_with_alpha(tmp_path: Path) -> None:
    arr = RNG.integers(0, 256, (12, 14, 2), dtype=np.uint8)
    PILImage.fromarray(arr, mode="LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    assert img.is_grey and np.array_equal(_as_uint(img.alpha, 8), arr[:, :, 1])
    write_image(img, tmp_path / "out.png")
    back = PILImage.open(tmp_path / "out.png")
    assert back.mode == "LA" and np.array_equal(np.asarray(back), arr)


def test_palette_with_transparency(tmp_path: Path) -> None:
    pal = PILImage.new("P", (4, 2))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    pal.save(tmp_path / "pal.png", transparency=1)
    img = read_image(tmp_path / "pal.png")
    assert img.pixels.shape == (2, 4, 3) and img.alpha is not None
    assert img.alpha[0, 0] == 1.0 and img.alpha[0, 1] == 0.0
    assert np.array_equal(img.pixels[0, 0], [1, 0, 0])
    pal.save(tmp_path / "opaque.gif")
    opaque = read_image(tmp_path / "opaque.gif")
    assert opaque.alpha is None and opaque.format == "GIF"


def test_bilevel_and_float_modes(tmp_path: Path) -> None:
    PILImage.new("1", (5, 3), 1).save(tmp_path / "bw.png")
    bw = read_image(tmp_path / "bw.png")
    assert bw.is_grey and float(bw.pixels.min()) == 1.0
    values = RNG.random((4, 6)).astype(np.float32)
    PILImage.fromarray(values, mode="F").save(tmp_path / "f.tif")
    f = read_image(tmp_path / "f.tif")
    assert f.is_grey and f.bit_depth == 16 and np.allclose(f.pixels[:, :, 0], values)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    PILImage.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    img = read_image(tmp_path / "cmyk.jpg")
    assert img.pixels.shape == (8, 8, 3)
    r, g, b = (_as_uint(img.pixels, 8)[4, 4]).tolist()
    assert r > 240 and g < 15 and b < 15  # cyan 0, magenta + yellow full: red


def test_exif_orientation_6_applied(tmp_path: Path) -> None:
    arr = _rgb8(10, 16)  # stored 16 wide, 10 high
    PILImage.fromarray(arr).save(tmp_path / "rot.png", exif=_exif_bytes(6))
    img = read_image(tmp_path / "rot.png")
    assert (img.width, img.height) == (10, 16)
    # Orientation 6: the stored picture must be turned 90 degrees clockwise to view it.
    assert np.array_equal(_as_uint(img.pixels, 8), np.rot90(arr, -1))
    kept = PILImage.Exif()
    kept.load(img.exif)
    assert kept[0x0112] == 1 and kept[0x010F] == "TestCam"
    write_image(img, tmp_path / "out.jpg")
    again = read_image(tmp_path / "out.jpg")
    assert (again.width, again.height) == (10, 16)  # not rotated a second time


@pytest.mark.skipif(not hasattr(cv2, "imencodeWithMetadata"), reason="needs OpenCV >= 4.12")
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_on_16bit_path_matches_pillow(tmp_path: Path, orientation: int) -> None:
    arr16 = _rgb16(6, 9)
    exif = _exif_bytes(orientation).removeprefix(b"Exif\x00\x00")
    ok, buf = cv2.imencodeWithMetadata(
        ".png", arr16[:, :, ::-1].copy(), [cv2.IMAGE_METADATA_EXIF], [np.frombuffer(exif, np.uint8)]
    )
    assert ok
    img16 = decode_bytes(buf.tobytes(), "o.png")
    high = (arr16 >> 8).astype(np.uint8)
    PILImage.fromarray(high).save(tmp_path / "o8.png", exif=_exif_bytes(orientation))
    img8 = read_image(tmp_path / "o8.png")
    assert img16.bit_depth == 16 and img16.pixels.shape == img8.pixels.shape
    assert np.array_equal(_as_uint(img16.pixels, 16) >> 8, _as_uint(img8.pixels, 8))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_icc_and_exif_kept_through_write(tmp_path: Path, suffix: str) -> None:
    icc = _srgb_icc()
    PILImage.fromarray(_rgb8()).save(tmp_path / "in.png", icc_profile=icc, exif=_exif_bytes(1))
    img = read_image(tmp_path / "in.png")
    assert img.icc_profile == icc
    write_image(img, tmp_path / f"out{suffix}")
    back = PILImage.open(tmp_path / f"out{suffix}")
    assert back.info.get("icc_profile") == icc
    assert back.getexif().get(0x010F) == "TestCam"


@pytest.mark.skipif(not hasattr(cv2, "imencodeWithMetadata"), reason="needs OpenCV >= 4.12")
def test_icc_kept_for_16bit_colour_png(tmp_path: Path) -> None:
    img = Image(pixels=_rgb16().astype(np.float32) / 65535, bit_depth=16, icc_profile=_srgb_icc())
    write_image(img, tmp_path / "out.png")
    again = read_image(tmp_path / "out.png")
    assert again.bit_depth == 16 and again.icc_profile == img.icc_profile


def test_jpeg_and_webp_quality(tmp_path: Path) -> None:
    smooth = np.linspace(0, 1, 64 * 64 * 3, dtype=np.float32).reshape(64, 64, 3)
    noise = RNG.random((64, 64, 3)).astype(np.float32) * 0.3
    img = Image(pixels=np.clip(smooth + noise, 0, 1))
    for fmt in ("jpeg", "webp"):
        low = encode_bytes(img, fmt, quality=20)
        default = encode_bytes(img, fmt)
        assert len(low) < len(default), fmt
    assert PILImage.open(io.BytesIO(encode_bytes(img, "jpg"))).format == "JPEG"
    lossless = decode_bytes(encode_bytes(img, "webp", quality=100))
    assert np.array_equal(_as_uint(lossless.pixels, 8), _as_uint(img.pixels, 8))
    with pytest.raises(ValueError, match="quality"):
        encode_bytes(img, "jpeg", quality=0)


def test_bmp_round_trip_and_alpha_on_white(tmp_path: Path) -> None:
    arr = _rgb8()
    PILImage.fromarray(arr).save(tmp_path / "in.bmp")
    img = read_image(tmp_path / "in.bmp")
    assert img.format == "BMP" and np.array_equal(_as_uint(img.pixels, 8), arr)
    write_image(img, tmp_path / "out.bmp")
    assert np.array_equal(np.asarray(PILImage.open(tmp_path / "out.bmp")), arr)
    clear = Image(pixels=np.zeros((4, 4, 3), np.float32), alpha=np.zeros((4, 4), np.float32))
    for fmt in ("bmp", "jpg"):
        back = decode_bytes(encode_bytes(clear, fmt))
        assert back.alpha is None and float(back.pixels.min()) > 0.98, fmt


def test_16bit_request_written_as_8bit_where_needed() -> None:
    img = Image(pixels=_rgb16().astype(np.float32) / 65535, bit_depth=16)
    for fmt in ("jpeg", "webp", "bmp"):
        assert decode_bytes(encode_bytes(img, fmt)).bit_depth == 8, fmt
    with pytest.raises(ValueError, match="gif"):
        encode_bytes(img, "gif")


def test_real_dataset_files_decode() -> None:
    png = DATASETS / "Set5" / "HR" / "baby.png"
    tif = DATASETS / "McMaster" / "1.tif"
    if not png.exists() or not tif.exists():
        pytest.skip("shared datasets not present")
    for path in (png, tif):
        img = read_image(path)
        assert img.pixels.ndim == 3 and img.pixels.shape[2] == 3 and img.bit_depth == 8
        assert float(img.pixels.min()) >= 0.0 and float(img.pixels.max()) <= 1.0


# --------------------------------------------------------------------------- errors


def _assert_bad(path: Path, text: str, **kwargs: object) -> None:
    with pytest.raises(BadInputError) as err:
        read_image(path, **kwargs)
    assert path.name in str(err.value)
    assert text in err.value.problem


def test_error_missing_and_empty_file(tmp_path: Path) -> None:
    _assert_bad(tmp_path / "nope.png", "not found")
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_bad(tmp_path / "empty.png", "empty")
    _assert_bad(tmp_path, "directory")


def test_error_text_file_named_png(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("this is not a picture\n")
    _assert_bad(tmp_path / "notes.png", "not an image")


def test_error_zero_sized_image(tmp_path: Path) -> None:
    header = struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")
    (tmp_path / "zero.png").write_bytes(data)
    with pytest.raises(BadInputError, match=r"zero\.png"):
        read_image(tmp_path / "zero.png")


def test_error_truncated_png(tmp_path: Path) -> None:
    real = DATASETS / "Set5" / "HR" / "bird.png"
    if real.exists():
        data = real.read_bytes()
    else:
        buf = io.BytesIO()
        PILImage.fromarray(_rgb8(64, 64)).save(buf, "PNG")
        data = buf.getvalue()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _assert_bad(tmp_path / "cut.png", "truncated")


def test_error_truncated_16bit_png(tmp_path: Path) -> None:
    _, buf = cv2.imencode(".png", _rgb16(64, 64))
    data = buf.tobytes()
    (tmp_path / "cut16.png").write_bytes(data[: len(data) // 2])
    _assert_bad(tmp_path / "cut16.png", "truncated")


def test_error_decompression_bomb(tmp_path: Path) -> None:
    PILImage.new("L", (300, 200)).save(tmp_path / "big.png")
    _assert_bad(tmp_path / "big.png", "60,000 pixels", max_pixels=50_000)
    assert read_image(tmp_path / "big.png", max_pixels=60_000).width == 300
    # Pillow's own bomb error must come out as BadInputError too.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(BadInputError, match=r"bomb\.png"):
        read_image(tmp_path / "bomb.png")
    with pytest.raises(BadInputError, match=r"upload\.png"):
        decode_bytes(bomb, "upload.png", max_pixels=1000)


# --------------------------------------------------------------------------- atomic writes


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if "upres-tmp" in p.name]


def test_atomic_write_success_creates_parents(tmp_path: Path) -> None:
    img = Image(pixels=np.full((4, 4, 3), 0.5, np.float32))
    out = write_image(img, tmp_path / "a" / "b" / "out.png")
    assert out.exists() and _leftovers(out.parent) == []
    write_image(img, out)  # overwrite goes through the same rename
    assert _leftovers(out.parent) == []


def test_atomic_write_failure_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    img = Image(pixels=np.full((4, 4, 3), 0.5, np.float32))
    target = tmp_path / "out.png"

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(image_io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        write_image(img, target)
    assert not target.exists() and _leftovers(tmp_path) == []

    target.write_bytes(b"old contents")
    with pytest.raises(OSError):
        write_image(img, target)
    assert target.read_bytes() == b"old contents" and _leftovers(tmp_path) == []


def test_atomic_write_failure_in_rename(tmp_path: Path, monkeypatch) -> None:
    img = Image(pixels=np.full((4, 4, 3), 0.5, np.float32))

    def broken_replace(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(image_io.os, "replace", broken_replace)
    with pytest.raises(PermissionError):
        write_image(img, tmp_path / "out.png")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- helpers


def test_fill_transparent_colour_uses_nearest_opaque_pixel() -> None:
    h, w = 20, 24
    pixels = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    spots = {(3, 4): (1, 0, 0), (15, 20): (0, 1, 0), (10, 2): (0, 0, 1)}
    for (y, x), colour in spots.items():
        pixels[y, x] = colour
        alpha[y, x] = 1.0
    alpha[0, 0] = 0.5 / 255  # nearly transparent: also refilled
    filled = fill_transparent_colour(pixels, alpha)
    coords = np.array(list(spots))
    for y in range(h):
        for x in range(w):
            if alpha[y, x] >= 1 / 255:
                assert np.array_equal(filled[y, x], pixels[y, x])
                continue
            dist = np.hypot(coords[:, 0] - y, coords[:, 1] - x)
            source = next(i for i, c in enumerate(spots.values()) if tuple(filled[y, x]) == c)
            assert dist[source] <= dist.min() + 0.6  # DIST_L2 mask 5 is near-exact
    assert fill_transparent_colour(pixels, np.zeros((h, w))) is pixels
    assert fill_transparent_colour(pixels, np.ones((h, w))) is pixels


def test_array_round_trips() -> None:
    cases = [
        RNG.integers(0, 256, (5, 6), dtype=np.uint8),
        RNG.integers(0, 65536, (5, 6, 3), dtype=np.uint16),
        RNG.integers(0, 256, (5, 6, 4), dtype=np.uint8),
        RNG.random((5, 6, 1)).astype(np.float32),
        RNG.random((5, 6, 3)),
    ]
    for arr in cases:
        img, dtype = image_from_array(arr)
        assert img.pixels.shape[2] in (1, 3) and img.pixels.dtype == np.float32
        assert (img.alpha is not None) == (arr.ndim == 3 and arr.shape[2] == 4)
        back = image_to_array(img, dtype)
        assert back.dtype == arr.dtype and back.shape == arr.shape
        if arr.dtype.kind == "u":
            assert np.array_equal(back, arr)
        else:
            assert np.allclose(back, arr, atol=1e-6)
    assert image_from_array(cases[1])[0].bit_depth == 16
    for bad in (np.zeros((0, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), np.full((2, 2), 255.0)):
        with pytest.raises(BadInputError):
            image_from_array(bad)


def test_pil_round_trips() -> None:
    grey16 = PILImage.fromarray(RNG.integers(0, 65536, (4, 5), dtype=np.uint16))
    for pil in (
        PILImage.new("L", (5, 4), 7),
        PILImage.new("LA", (5, 4), (7, 9)),
        PILImage.new("RGB", (5, 4), (1, 2, 3)),
        PILImage.new("RGBA", (5, 4), (1, 2, 3, 4)),
        grey16,
    ):
        back = image_to_pil(image_from_pil(pil))
        assert back.mode == pil.mode and np.array_equal(np.asarray(back), np.asarray(pil))
    rgb16 = Image(pixels=np.full((2, 2, 3), 1 / 65535, np.float32), bit_depth=16)
    assert image_to_pil(rgb16).mode == "RGB"


def test_bytes_round_trip() -> None:
    img = Image(pixels=_rgb8().astype(np.float32) / 255)
    data = encode_bytes(img, "png")
    again = decode_bytes(data, "upload.png")
    assert again.source is None and again.format == "PNG"
    assert np.array_equal(_as_uint(again.pixels, 8), _as_uint(img.pixels, 8))
    with pytest.raises(BadInputError, match="upload"):
        decode_bytes(b"", "upload")


@pytest.mark.skipif(not hasattr(cv2, "imwriteWithMetadata"), reason="needs OpenCV >= 4.12")
def test_a_consumed_huge_rgb_png_streams_through_libpng(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_io, "LARGE_PNG_PIXELS", 24 * 32)  # _rgb8() counts as huge
    used = []
    real = image_io._write_large_png
    monkeypatch.setattr(image_io, "_write_large_png", lambda *a: (used.append(True), real(*a))[1])
    icc = _srgb_icc()
    expected = _rgb8()
    # Without consume=True the caller's pixels are never touched: Pillow writes them.
    shared = expected.copy()
    img = Image(pixels=shared, bit_depth=8, icc_profile=icc, exif=_exif_bytes(1))
    write_image(img, tmp_path / "kept.png")
    assert not used and np.array_equal(shared, expected)
    write_image(img, tmp_path / "big.png", consume=True)
    assert used, "the libpng path was not taken"
    for name in ("kept.png", "big.png"):
        back = PILImage.open(tmp_path / name)
        assert back.mode == "RGB" and np.array_equal(np.asarray(back), expected), name
        assert back.info.get("icc_profile") == icc
        assert back.getexif().get(0x010F) == "TestCam"
    assert not list(tmp_path.glob(".*upres-tmp*"))
