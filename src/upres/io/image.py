"""Image decode/encode that keeps what users care about.

Bit depth (8/16), greyscale, alpha, EXIF orientation (applied on read), ICC profile.
Outputs are written to a temporary name in the destination folder and renamed.

Pillow does the decoding and encoding, except for 16-bit colour, which Pillow can only
hold as 8 bits per channel: those PNG/TIFF files go through OpenCV.

Write policy (see `write_image`):
- PNG and TIFF keep 16 bits; JPEG, WebP and BMP are always 8 bits.
- JPEG quality defaults to 95 (chroma subsampling off at 90 and above, so upscaled colour
  edges stay sharp); WebP quality defaults to 95, and quality 100 means lossless WebP.
- Alpha is written to PNG, WebP and TIFF. JPEG and BMP cannot carry it usefully, so the
  image is composited onto white first (transparent areas become white, not black).
- WebP has no greyscale mode: grey images come back as RGB with equal channels.
- ICC profile and EXIF are written to PNG, JPEG, WebP and TIFF (not BMP). 16-bit colour
  TIFF (and 16-bit grey+alpha TIFF) is written by OpenCV, which cannot store ICC/EXIF in
  TIFF, so those two are dropped there; 16-bit colour PNG keeps them when the installed
  OpenCV has `imencodeWithMetadata` (OpenCV >= 4.12).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps, UnidentifiedImageError

from upres.errors import BadInputError

_EXIF_ORIENTATION = 0x0112
_EXIF_HEADER = b"Exif\x00\x00"
# Below this alpha a pixel is invisible in an 8-bit output (it would be stored as 0).
_TRANSPARENT = 1.0 / 255.0


@dataclass
class Image:
    """A decoded image, ready for the engine.

    pixels: H x W x C float32 in [0, 1]; C is 1 (greyscale) or 3 (RGB), never 4.
    alpha:  H x W float32 in [0, 1], or None when the image is opaque.
    bit_depth: 8 or 16; the output keeps it.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    icc_profile: bytes | None = None
    exif: bytes | None = None
    source: Path | None = None
    format: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def is_grey(self) -> bool:
        return self.pixels.shape[2] == 1


# --------------------------------------------------------------------------- reading


def read_image(path: str | Path, *, max_pixels: int | None = None) -> Image:
    """Decode an image file; raise BadInputError for anything that is not a usable image.

    max_pixels: refuse images with more pixels than this, checked from the header
    before any pixel data is decoded (decompression-bomb guard).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInputError(path, "file not found") from None
    except IsADirectoryError:
        raise BadInputError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise BadInputError(path, "permission denied") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read file: {exc.strerror or exc}") from None
    image = _decode(data, path, max_pixels)
    image.source = path
    return image


def decode_bytes(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> Image:
    """Decode an in-memory image (an upload); `name` only labels error messages."""
    return _decode(bytes(data), name, max_pixels)


def _decode(data: bytes, label: str | Path, max_pixels: int | None) -> Image:
    if not data:
        raise BadInputError(label, "file is empty (0 bytes)")
    pil = _open_header(data, label, max_pixels)
    decoded = _decode_16bit_colour(data, pil) if _is_16bit_colour(pil) else None
    if decoded is not None:
        pixels, alpha, bit_depth = decoded
        icc = pil.info.get("icc_profile")
        exif = pil.info.get("exif")  # read by _orientation, even when stored after the pixels
    else:  # Pillow; also the fallback when OpenCV cannot decode a 16-bit file (8 bits then)
        _load(pil, label)
        exif = pil.info.get("exif")  # before exif_transpose, which drops the orientation tag
        upright = _exif_transpose(pil)
        pixels, alpha, bit_depth, icc = _arrays_from_pil(upright, label)
    return Image(
        pixels=pixels,
        alpha=alpha,
        bit_depth=bit_depth,
        icc_profile=icc or None,
        exif=_exif_without_orientation(exif),
        format=pil.format,
        info=_kept_info(pil),
    )


def _open_header(data: bytes, label: str | Path, max_pixels: int | None) -> PILImage.Image:
    """Open lazily (header only) and check the size before any pixels are decoded."""
    try:
        pil = PILImage.open(io.BytesIO(data))
    except PILImage.DecompressionBombError as exc:
        raise BadInputError(label, f"image is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise BadInputError(label, "not an image file (unknown or unsupported format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInputError(label, f"corrupt image header ({exc})") from None
    width, height = pil.size
    if width <= 0 or height <= 0:
        raise BadInputError(label, f"image has zero size ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise BadInputError(
            label,
            f"image is {width}x{height} = {width * height:,} pixels, "
            f"more than the limit of {max_pixels:,} pixels",
        )
    return pil


def _load(pil: PILImage.Image, label: str | Path) -> None:
    """Force a full decode so truncated files fail here, not half-way through a job."""
    try:
        pil.load()
    except PILImage.DecompressionBombError as exc:
        raise BadInputError(label, f"image is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise BadInputError(label, f"image data is truncated or corrupt ({exc})") from None


def _raw_mode(pil: PILImage.Image) -> str:
    """The decoder's raw mode, e.g. 'RGB;16B' (available before load())."""
    if not pil.tile:
        return ""
    args = pil.tile[0].args
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _is_16bit_colour(pil: PILImage.Image) -> bool:
    # Pillow stores these as 8 bits per channel (16-bit grey+alpha PNG opens as RGBA);
    # opaque 16-bit grey is mode "I;16" and handled by Pillow itself.
    return pil.mode in ("RGB", "RGBA", "LA") and ";16" in _raw_mode(pil)


def _decode_16bit_colour(
    data: bytes, pil: PILImage.Image
) -> tuple[np.ndarray, np.ndarray | None, int] | None:
    """(pixels, alpha, bit_depth) via OpenCV, or None when OpenCV cannot decode the data."""
    grey = _raw_mode(pil).startswith("LA")  # ask before getexif(), which may load the image
    # IMREAD_UNCHANGED keeps 16 bits and alpha but ignores EXIF orientation: apply it here.
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:  # corrupt, or a layout OpenCV lacks: Pillow's full decode will tell
        return None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    # Pillow's PNG getexif() decodes the whole image to look for an eXIf chunk after the
    # pixel data; skip that second decode when the bytes cannot contain one.
    if pil.format != "PNG" or b"eXIf" in data:
        arr = _orient_array(arr, _orientation(pil))
    scale = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0
    bit_depth = 16 if arr.dtype == np.uint16 else 8
    channels = arr.shape[2]
    alpha = None
    if channels in (2, 4):
        alpha = _to_float(arr[:, :, -1], scale)
        arr = arr[:, :, :-1]
    if grey or arr.shape[2] == 1:
        pixels = _to_float(arr[:, :, :1], scale)  # grey+alpha comes back as equal B, G, R
    else:
        pixels = _to_float(arr[:, :, 2::-1], scale)  # BGR -> RGB
    return pixels, alpha, bit_depth


def _to_float(arr: np.ndarray, scale: float) -> np.ndarray:
    out = np.array(arr, dtype=np.float32, order="C")  # always a copy: never scale the caller's
    if scale != 1.0:
        out /= np.float32(scale)
    return out


def _orientation(pil: PILImage.Image) -> int:
    try:
        value = int(pil.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # malformed EXIF must not make a readable image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _orient_array(arr: np.ndarray, orientation: int) -> np.ndarray:
    """numpy version of ImageOps.exif_transpose for arrays Pillow cannot hold (H x W x C)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def _exif_transpose(pil: PILImage.Image) -> PILImage.Image:
    try:
        return ImageOps.exif_transpose(pil) or pil
    except Exception:  # malformed EXIF: keep the pixels as stored rather than fail
        return pil


def _exif_without_orientation(exif: bytes | None) -> bytes | None:
    """EXIF with orientation reset to 1, since the pixels are already upright."""
    if not exif:
        return None
    try:
        parsed = PILImage.Exif()
        parsed.load(exif)
        if _EXIF_ORIENTATION in parsed:
            parsed[_EXIF_ORIENTATION] = 1
        out = parsed.tobytes()
    except Exception:  # unparseable EXIF is dropped rather than copied with a wrong rotation
        return None
    return out if len(out) > len(_EXIF_HEADER) + 8 else None


def _kept_info(pil: PILImage.Image) -> dict:
    info: dict = {"mode": pil.mode}
    if "dpi" in pil.info:
        with contextlib.suppress(TypeError, ValueError):
            info["dpi"] = tuple(float(v) for v in pil.info["dpi"])
    return info


def _arrays_from_pil(
    pil: PILImage.Image, label: str | Path = "<image>"
) -> tuple[np.ndarray, np.ndarray | None, int, bytes | None]:
    """(pixels, alpha, bit_depth, icc_profile) from a loaded Pillow image of any mode."""
    icc = pil.info.get("icc_profile")
    mode = pil.mode
    has_transparency = pil.info.get("transparency") is not None
    if mode == "CMYK":
        pil, icc = _cmyk_to_rgb(pil, icc)
        mode = "RGB"
    elif mode in ("P", "PA"):
        pil = pil.convert("RGBA" if has_transparency or mode == "PA" else "RGB")
    elif mode in ("L", "RGB") and has_transparency:
        pil = pil.convert("LA" if mode == "L" else "RGBA")
    elif mode == "1":
        pil = pil.convert("L")
    elif mode == "La":
        pil = pil.convert("LA")
    elif mode == "RGBa":
        pil = pil.convert("RGBA")
    elif mode in ("RGBX", "YCbCr", "HSV", "LAB"):
        try:
            pil = pil.convert("RGB")
        except ValueError as exc:
            raise BadInputError(label, f"unsupported colour mode {mode} ({exc})") from None
    mode = pil.mode

    if mode.startswith("I;16"):
        return _to_float(np.asarray(pil)[:, :, None], 65535.0), None, 16, icc
    if mode == "I":
        return _int32_grey(np.asarray(pil)), None, 16, icc
    if mode == "F":
        return _float_grey(np.asarray(pil)), None, 16, icc
    if mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(pil)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        alpha = _to_float(arr[:, :, -1], 255.0) if mode in ("LA", "RGBA") else None
        colour = arr[:, :, :1] if mode in ("L", "LA") else arr[:, :, :3]
        return _to_float(colour, 255.0), alpha, 8, icc
    raise BadInputError(label, f"unsupported colour mode {mode}")


def _cmyk_to_rgb(pil: PILImage.Image, icc: bytes | None) -> tuple[PILImage.Image, bytes | None]:
    """CMYK -> sRGB through the embedded profile when there is one, else Pillow's formula."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            target = ImageCms.createProfile("sRGB")
            # The pixels are now sRGB; writing no profile means sRGB to every viewer.
            return ImageCms.profileToProfile(pil, source, target, outputMode="RGB"), None
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass
    # Without a usable CMYK profile the old profile would describe the wrong space.
    return pil.convert("RGB"), None


def _int32_grey(arr: np.ndarray) -> np.ndarray:
    """32-bit integer grey: treat as 16-bit if it fits, else scale by the image maximum."""
    arr = arr.astype(np.float64)
    arr = np.clip(arr, 0, None)
    peak = float(arr.max()) if arr.size else 0.0
    scale = 65535.0 if peak <= 65535 else peak
    return (arr / scale).astype(np.float32)[:, :, None]


def _float_grey(arr: np.ndarray) -> np.ndarray:
    """Float grey: kept when already in [0, 1]; otherwise negatives clip and it scales by max."""
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    arr = np.clip(arr, 0, None)
    peak = float(arr.max()) if arr.size else 0.0
    if peak > 1.0:
        arr = arr / np.float32(peak)
    return np.ascontiguousarray(arr, dtype=np.float32)[:, :, None]


# --------------------------------------------------------------------------- writing

# name -> (Pillow format, file suffix, can hold 16 bits, can hold alpha)
_FORMATS: dict[str, tuple[str, str, bool, bool]] = {
    "png": ("PNG", ".png", True, True),
    "jpeg": ("JPEG", ".jpg", False, False),
    "jpg": ("JPEG", ".jpg", False, False),
    "webp": ("WEBP", ".webp", False, True),
    "tiff": ("TIFF", ".tif", True, True),
    "tif": ("TIFF", ".tif", True, True),
    "bmp": ("BMP", ".bmp", False, False),
}
DEFAULT_JPEG_QUALITY = 95
DEFAULT_WEBP_QUALITY = 95
SUPPORTED_WRITE_FORMATS = tuple(sorted(_FORMATS))


def write_image(
    image: Image,
    path: str | Path,
    *,
    format: str | None = None,
    quality: int | None = None,
    consume: bool = False,
) -> Path:
    """Encode and write atomically (temp file in the same folder, fsync, rename).

    format: "png", "jpg"/"jpeg", "webp", "tiff"/"tif" or "bmp"; default from the suffix.
    quality: 1-100 for JPEG (default 95) and WebP (default 95; 100 = lossless); ignored
    by the lossless formats. Returns the final path. Parent folders are created.
    consume: the caller will not use `image.pixels` again (nor does anyone else), so a huge
    8-bit PNG may be written straight from them, channels reordered in place.
    """
    path = Path(path)
    if format is None and not path.suffix:
        raise ValueError(f"{path}: no format given and the file name has no suffix")
    name = _format_name(format if format is not None else path.suffix)
    pixels = _validated_pixels(image)  # fail before a temporary file exists
    path.parent.mkdir(parents=True, exist_ok=True)
    large_png = name == "png" and path.suffix.lower() == ".png"
    if consume and large_png and _streams_through_libpng(image, pixels):
        atomic_write(path, lambda tmp: _write_large_png(image, pixels, tmp))
        return path
    atomic_write(path, lambda tmp: _encode_to_file(image, name, tmp, quality))
    return path


def _encode_to_file(image: Image, name: str, tmp: Path, quality: int | None) -> None:
    with open(tmp, "wb") as handle:
        encode_into(image, name, handle, quality)


# Above this many pixels, Pillow's internal copy (4 bytes per RGB pixel) of an 8-bit RGB
# image costs more memory than the image itself; libpng (through OpenCV) writes the rows
# straight from our array instead.
LARGE_PNG_PIXELS = 32_000_000


def _streams_through_libpng(image: Image, pixels: np.ndarray) -> bool:
    return (
        pixels.shape[0] * pixels.shape[1] >= LARGE_PNG_PIXELS
        and image.bit_depth == 8
        and pixels.dtype == np.uint8
        and pixels.shape[2] == 3
        and image.alpha is None
        and pixels.flags.writeable
        and pixels.flags.c_contiguous
        and hasattr(cv2, "imwriteWithMetadata")
    )


def _write_large_png(image: Image, pixels: np.ndarray, tmp: Path) -> None:
    """OpenCV wants BGR: reorder the consumed pixels in place (in slices, so no second
    full-size array exists) and write. DPI is not written on this path."""
    _swap_red_blue(pixels)
    kinds, chunks = _cv2_metadata(image)
    if not cv2.imwriteWithMetadata(
        str(tmp), pixels, kinds, chunks, [cv2.IMWRITE_PNG_COMPRESSION, 6]
    ):
        raise OSError(f"{tmp}: OpenCV could not write the PNG")


def _swap_red_blue(pixels: np.ndarray, rows: int = 256) -> None:
    for top in range(0, pixels.shape[0], rows):
        block = pixels[top : top + rows]
        block[:, :, [0, 2]] = block[:, :, [2, 0]]


def encode_bytes(image: Image, format: str, quality: int | None = None) -> bytes:
    """Encode to bytes in the given format (same rules as `write_image`)."""
    buf = io.BytesIO()
    encode_into(image, format, buf, quality)
    return buf.getvalue()


def encode_into(image: Image, format: str, handle: BinaryIO, quality: int | None = None) -> None:
    """Encode into an open binary file; streaming keeps a second copy of a huge output out
    of memory."""
    name = _format_name(format)
    pil_format, _, keeps_16, keeps_alpha = _FORMATS[name]
    if quality is not None and not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be between 1 and 100, got {quality}")
    pixels = _validated_pixels(image)
    alpha = image.alpha if keeps_alpha else None
    if image.alpha is not None and not keeps_alpha:
        pixels = _composite_on_white(pixels, image.alpha)
    bits = 16 if image.bit_depth == 16 and keeps_16 else 8
    if bits == 16 and (pixels.shape[2] == 3 or alpha is not None):
        handle.write(_encode_16bit_colour(image, pixels, alpha, pil_format))
        return
    pil = _pil_from_arrays(pixels, alpha, bits)
    pil.save(handle, format=pil_format, **_save_options(image, pil_format, quality))


def _format_name(format: str) -> str:
    name = format.lower().lstrip(".")
    if name not in _FORMATS:
        shown = ", ".join(SUPPORTED_WRITE_FORMATS)
        raise ValueError(f"cannot write image format {format!r}; use one of: {shown}")
    return name


def _validated_pixels(image: Image) -> np.ndarray:
    pixels = np.asarray(image.pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3) or 0 in pixels.shape:
        raise ValueError(f"pixels must be H x W x 1 or H x W x 3, got shape {pixels.shape}")
    return pixels


def _composite_on_white(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = np.clip(unit_float(alpha), 0, 1)[:, :, None]
    return unit_float(pixels) * a + (1.0 - a)


def unit_float(values: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in [0, 1]; float arrays pass through as float32."""
    values = np.asarray(values)
    if values.dtype.kind in "ui":
        return values.astype(np.float32) / np.float32(np.iinfo(values.dtype).max)
    return values.astype(np.float32, copy=False)


def quantise(values: np.ndarray, bits: int) -> np.ndarray:
    """Float [0, 1] -> uint8 (bits=8) or uint16 (bits=16), rounded and clipped; NaN -> 0.

    Already-quantised arrays (the engine assembles its output as integers to save
    memory) pass through, or are rescaled between 8 and 16 bits.
    """
    dtype, peak = (np.uint16, 65535.0) if bits == 16 else (np.uint8, 255.0)
    values = np.asarray(values)
    if values.dtype == dtype:
        return values
    if values.dtype.kind in "ui":
        values = unit_float(values)
    clean = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(clean, 0.0, 1.0) * np.float32(peak)).astype(dtype)


def _pil_from_arrays(pixels: np.ndarray, alpha: np.ndarray | None, bits: int) -> PILImage.Image:
    """Pillow image in L / LA / RGB / RGBA (8-bit) or I;16 (16-bit grey, no alpha)."""
    if bits == 16:
        return PILImage.fromarray(quantise(pixels[:, :, 0], 16))  # mode I;16
    colour = quantise(pixels, 8)
    if alpha is not None:
        colour = np.dstack([colour, quantise(alpha, 8)])
    if colour.shape[2] == 1:
        return PILImage.fromarray(colour[:, :, 0])  # mode L
    return PILImage.fromarray(colour)  # LA, RGB or RGBA by channel count


def _save_options(image: Image, pil_format: str, quality: int | None) -> dict:
    options: dict = {}
    if pil_format != "BMP":
        if image.icc_profile:
            options["icc_profile"] = image.icc_profile
        if image.exif:
            options["exif"] = image.exif
    dpi = image.info.get("dpi")
    if dpi and pil_format in ("PNG", "JPEG", "TIFF"):
        options["dpi"] = dpi
    if pil_format == "JPEG":
        q = DEFAULT_JPEG_QUALITY if quality is None else int(quality)
        options["quality"] = q
        if q >= 90:
            options["subsampling"] = 0  # 4:4:4: no colour bleeding on sharp upscaled edges
    elif pil_format == "WEBP":
        q = DEFAULT_WEBP_QUALITY if quality is None else int(quality)
        if q == 100:
            options["lossless"] = True
        options["quality"] = q
    elif pil_format == "TIFF":
        options["compression"] = "tiff_adobe_deflate"  # lossless, widely readable
    return options


def _encode_16bit_colour(
    image: Image, pixels: np.ndarray, alpha: np.ndarray | None, pil_format: str
) -> memoryview:
    """16-bit RGB(A), or 16-bit grey+alpha as RGBA: Pillow has no such modes, OpenCV does."""
    colour = quantise(pixels, 16)
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)  # OpenCV cannot write 2-channel grey+alpha
    bgr = colour[:, :, ::-1]
    if alpha is not None:
        bgr = np.dstack([bgr, quantise(alpha, 16)])
    bgr = np.ascontiguousarray(bgr)
    ext = ".png" if pil_format == "PNG" else ".tif"
    kinds, chunks = _cv2_metadata(image) if ext == ".png" else ([], [])
    if kinds:
        ok, buf = cv2.imencodeWithMetadata(ext, bgr, kinds, chunks)
    else:  # OpenCV's TIFF writer cannot store ICC/EXIF: they are lost for this case
        ok, buf = cv2.imencode(ext, bgr)
    if not ok:
        raise OSError(f"OpenCV could not encode a 16-bit {pil_format} image")
    return buf.data


def _cv2_metadata(image: Image) -> tuple[list[int], list[np.ndarray]]:
    if not hasattr(cv2, "imencodeWithMetadata"):  # OpenCV < 4.12: ICC/EXIF are lost
        return [], []
    kinds: list[int] = []
    chunks: list[np.ndarray] = []
    if image.exif:
        exif = image.exif.removeprefix(_EXIF_HEADER)  # PNG eXIf holds the bare TIFF block
        kinds.append(cv2.IMAGE_METADATA_EXIF)
        chunks.append(np.frombuffer(exif, np.uint8))
    if image.icc_profile:
        kinds.append(cv2.IMAGE_METADATA_ICCP)
        chunks.append(np.frombuffer(image.icc_profile, np.uint8))
    return kinds, chunks


def atomic_write(path: Path, data: bytes | Callable[[Path], None]) -> None:
    """Readers see either the old file or the complete new one, never a partial file.

    `data` is the bytes, or a function that writes the temporary file it is given.
    """
    tmp, fd = _create_temp(path)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
            fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
            with os.fdopen(fd, "rb+") as handle:
                os.fsync(handle.fileno())
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _create_temp(path: Path) -> tuple[Path, int]:
    # os.open with 0o666 (not mkstemp's 0o600) so the final file gets the usual umask perms.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.stem}.upres-tmp-{secrets.token_hex(4)}{path.suffix}")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX only; best effort)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- helpers

_INT_DTYPES = {"uint8": (8, 255.0), "uint16": (16, 65535.0)}


def image_from_array(arr: np.ndarray) -> tuple[Image, str]:
    """Wrap a numpy image: H x W or H x W x C (C = 1, 2 grey+alpha, 3, 4 RGBA).

    uint8 and uint16 keep their bit depth; float arrays are taken as [0, 1] (small
    overshoots are clipped) and get bit_depth 16 so their precision is not thrown away.
    Returns the Image and the dtype name to hand back to `image_to_array`.
    """
    arr = np.asarray(arr)
    dtype = arr.dtype.name
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise BadInputError(
            "<array>", f"expected an H x W or H x W x 1/3/4 array, got shape {arr.shape}"
        )
    if 0 in arr.shape[:2]:
        raise BadInputError("<array>", f"array has zero size {arr.shape}")
    values = arr[:, :, None] if arr.ndim == 2 else arr
    if dtype in _INT_DTYPES:
        bit_depth, scale = _INT_DTYPES[dtype]
        floats = _to_float(values, scale)
    elif arr.dtype.kind == "f":
        bit_depth, floats = 16, _checked_float_array(values)
    else:
        raise BadInputError(
            "<array>", f"unsupported dtype {dtype}; use uint8, uint16 or float in [0, 1]"
        )
    channels = floats.shape[2]
    alpha = np.ascontiguousarray(floats[:, :, -1]) if channels in (2, 4) else None
    pixels = np.ascontiguousarray(floats[:, :, : 1 if channels <= 2 else 3])
    info = {"array_ndim": arr.ndim}
    return Image(pixels=pixels, alpha=alpha, bit_depth=bit_depth, info=info), dtype


def _checked_float_array(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise BadInputError("<array>", "float array contains NaN or infinite values")
    peak, floor = float(values.max()), float(values.min())
    if floor < -0.5 or (floor < 0.0 and peak <= 0.0):
        # Small undershoots (a model's ringing) are clipped; a [-1, 1] or all-negative
        # array would silently come back near black.
        raise BadInputError(
            "<array>",
            f"float array has values down to {floor:g}; expected [0, 1]"
            " (from [-1, 1]? use (x + 1) / 2)",
        )
    if peak > 2.0:
        raise BadInputError(
            "<array>",
            f"float array has values up to {peak:g}; expected [0, 1] (divide by 255?)",
        )
    return np.clip(values.astype(np.float32), 0.0, 1.0)


def image_to_array(
    image: Image, dtype: str | np.dtype = "float32", *, squeeze: bool | None = None
) -> np.ndarray:
    """Back to numpy: alpha (if any) appended as the last channel, in `dtype`.

    squeeze: return H x W for opaque grey images; by default, when the Image came from a
    2-D array (`image.info["array_ndim"] == 2`).
    """
    dtype = np.dtype(dtype)
    stacked = image.pixels if image.pixels.ndim == 3 else image.pixels[:, :, None]
    if image.alpha is not None:
        stacked = np.dstack([stacked, image.alpha])
    if dtype.name in _INT_DTYPES:
        out = quantise(stacked, _INT_DTYPES[dtype.name][0])
    elif dtype.kind == "f":
        out = unit_float(stacked).astype(dtype, copy=False)
    else:
        raise ValueError(f"unsupported dtype {dtype.name}; use uint8, uint16 or a float type")
    if squeeze is None:
        squeeze = image.info.get("array_ndim") == 2
    if squeeze and out.shape[2] == 1:
        out = out[:, :, 0]
    return out


def image_from_pil(pil: PILImage.Image) -> Image:
    """Wrap a Pillow image of any mode. Pixels are taken as they are: no EXIF rotation."""
    try:
        pil.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInputError("<PIL image>", f"image data is truncated or corrupt ({exc})") from None
    pixels, alpha, bit_depth, icc = _arrays_from_pil(pil, "<PIL image>")
    return Image(
        pixels=pixels,
        alpha=alpha,
        bit_depth=bit_depth,
        icc_profile=icc or None,
        exif=_exif_without_orientation(pil.info.get("exif")),
        format=pil.format,
        info=_kept_info(pil),
    )


def image_to_pil(image: Image) -> PILImage.Image:
    """L, LA, RGB, RGBA or I;16 (16-bit opaque grey). 16-bit colour becomes 8-bit: Pillow
    has no 16-bit RGB mode. ICC and EXIF go into `.info`."""
    pixels = _validated_pixels(image)
    bits = 16 if image.bit_depth == 16 and pixels.shape[2] == 1 and image.alpha is None else 8
    pil = _pil_from_arrays(pixels, image.alpha, bits)
    if image.icc_profile:
        pil.info["icc_profile"] = image.icc_profile
    if image.exif:
        pil.info["exif"] = image.exif
    return pil


def fill_transparent_colour(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Give invisible pixels (alpha < 1/255) the colour of the nearest visible pixel.

    Transparent areas often store black; an upscaler mixes that into the visible edge and
    leaves a dark fringe. Returns a new array, or `pixels` itself when there is nothing to
    fill (no invisible pixels, or no visible ones).
    """
    invisible = np.asarray(alpha) < _TRANSPARENT
    if not invisible.any() or invisible.all():
        return pixels
    # distanceTransform measures to the nearest zero pixel, so visible pixels are the
    # zeros; DIST_LABEL_PIXEL labels each zero pixel 1..N in row-major order.
    _, labels = cv2.distanceTransformWithLabels(
        invisible.astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    ys, xs = np.nonzero(~invisible)  # row-major, matching the label order
    nearest = labels[invisible] - 1
    out = pixels.copy()
    out[invisible] = pixels[ys[nearest], xs[nearest]]
    return out
