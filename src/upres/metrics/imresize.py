"""MATLAB ``imresize(img, scale, 'bicubic')``, vectorised with numpy.

Hand-written because no maintained Python library reproduces MATLAB's imresize bit-for-bit,
and every published SR table was made with it (LR inputs and the bicubic baseline).

What is reproduced:
- the cubic kernel with a = -0.5 (Keys), widened by 1/scale when downscaling (antialiasing);
- MATLAB's ``contributions``: sample centres ``u = x/scale + 0.5*(1 - 1/scale)``, taps from
  ``floor(u - width/2)``, normalised weights, indices mirrored at the borders with the edge pixel
  repeated (``[1:n, n:-1:1]``), and columns whose weights are all zero dropped;
- output size ``ceil(in * scale)``; rows are resized before columns (MATLAB's order for equal
  scales);
- for uint8 input, MATLAB's uint8 arithmetic: each pass is rounded half away from zero and
  saturated to 0..255 before the next one, and the result is uint8. That intermediate rounding is
  what makes the output match MATLAB exactly rather than within a grey level.

Float input (any range: the operation is linear) is resized in float64 without rounding and
returned in its own dtype, like MATLAB on double images.
"""

from __future__ import annotations

import math

import numpy as np

CUBIC_SUPPORT = 4.0  # the a = -0.5 cubic is non-zero on (-2, 2)


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, as in MATLAB's imresize."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    near = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return near + far


def contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and source indices (0-based) for each output sample along one axis.

    Returns two (out_length, taps) arrays; this follows MATLAB's ``contributions`` line by line.
    """
    kernel_width = CUBIC_SUPPORT
    antialias = scale < 1
    if antialias:
        kernel_width /= scale
    out_positions = np.arange(1, out_length + 1, dtype=np.float64)
    centres = out_positions / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(centres - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distances = centres[:, None] - indices
    weights = scale * cubic(scale * distances) if antialias else cubic(distances)
    weights /= weights.sum(axis=1, keepdims=True)

    # Symmetric boundary: index i (1-based, possibly <1 or >n) reads mirror[(i-1) mod 2n].
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]

    used = np.any(weights != 0, axis=0)
    return weights[:, used], indices[:, used]


def resize_along_axis(
    image: np.ndarray, axis: int, out_length: int, scale: float, round_to_uint8: bool
) -> np.ndarray:
    """One separable pass, summing taps in order like MATLAB's mex (loops over taps, not pixels)."""
    weights, indices = contributions(image.shape[axis], out_length, scale)
    moved = np.moveaxis(image, axis, 0)
    trailing = (1,) * (moved.ndim - 1)
    result = np.zeros((out_length, *moved.shape[1:]), dtype=np.float64)
    for tap in range(weights.shape[1]):
        result += weights[:, tap].reshape(-1, *trailing) * moved[indices[:, tap]]
    if round_to_uint8:
        result = round_half_away_and_saturate(result)
    return np.moveaxis(result, 0, axis)


def round_half_away_and_saturate(values: np.ndarray) -> np.ndarray:
    """MATLAB's double-to-uint8 conversion (round half away from zero, clamp), kept in float64."""
    return np.clip(np.floor(values + 0.5), 0.0, 255.0)


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """MATLAB's ``ceil(scale .* size)``."""
    return math.ceil(height * scale), math.ceil(width * scale)


def imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize an H x W or H x W x C image by ``scale`` with MATLAB's bicubic imresize.

    uint8 in, uint8 out (MATLAB's per-pass rounding); float in, same float dtype out (no rounding).
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, not {scale}")
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an H x W or H x W x C image, got shape {image.shape}")
    is_uint8 = image.dtype == np.uint8
    if not (is_uint8 or np.issubdtype(image.dtype, np.floating)):
        raise TypeError(f"expected uint8 or floating-point pixels, got {image.dtype}")

    out_height, out_width = output_size(image.shape[0], image.shape[1], scale)
    pixels = image.astype(np.float64)
    pixels = resize_along_axis(pixels, 0, out_height, scale, round_to_uint8=is_uint8)
    pixels = resize_along_axis(pixels, 1, out_width, scale, round_to_uint8=is_uint8)
    return pixels.astype(image.dtype)
