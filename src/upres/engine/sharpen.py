"""Sharpening on a scale people can see, without halos.

`sharpen` runs from 0 (off) to 1 (strong). It is an unsharp mask whose amount and radius
both grow with the value (an upscaled image's detail is several output pixels wide, so a
fixed 1.5 px radius barely touches it), followed by overshoot control: every pixel is
clamped to the range of its original neighbourhood, so edges get steeper but never gain
the bright or dark rims (halos) a plain unsharp mask draws beside them.

Applied in strips of rows, so its float temporaries stay small on huge outputs.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

STRIP_ROWS = 512


def sharpen_curve(value: float) -> tuple[float, float]:
    """(amount, sigma in output pixels) for a sharpen value in [0, 1].

    Amount 0.3 -> 1.8, 1.0 -> 6; radius 0.3 -> 2.4 px, 1.0 -> 4.5 px. Amounts this strong
    are safe because the clamp below removes what would otherwise be halos.
    """
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"sharpen must be between 0 and 1, not {value}")
    return 6.0 * value, 1.5 + 3.0 * value


def clamp_radius(sigma: float) -> int:
    """The neighbourhood whose range bounds a sharpened pixel: about the blur's own reach."""
    return max(1, math.ceil(sigma))


def sharpen(pixels: np.ndarray, value: float) -> np.ndarray:
    """A sharpened copy of H x W x C pixels (uint8, uint16 or float32 in [0, 1])."""
    amount, sigma = sharpen_curve(value)
    if amount == 0:
        return pixels.copy()
    radius = clamp_radius(sigma)
    margin = math.ceil(4 * sigma) + radius + 1  # the Gaussian's reach plus the clamp's
    result = np.empty_like(pixels)
    height = pixels.shape[0]
    for top in range(0, height, STRIP_ROWS):
        bottom = min(height, top + STRIP_ROWS)
        start, stop = max(0, top - margin), min(height, bottom + margin)
        strip = _sharpen_float(_as_float(pixels[start:stop]), amount, sigma, radius)
        result[top:bottom] = _like(strip[top - start : bottom - start], pixels.dtype)
    return result


def _sharpen_float(values: np.ndarray, amount: float, sigma: float, radius: int) -> np.ndarray:
    blurred = _keep_channels(cv2.GaussianBlur(values, (0, 0), sigma), values)
    sharpened = values + amount * (values - blurred)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    low = _keep_channels(cv2.erode(values, kernel), values)
    high = _keep_channels(cv2.dilate(values, kernel), values)
    np.clip(sharpened, low, high, out=sharpened)
    return sharpened


def _as_float(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "ui":
        return values.astype(np.float32) / np.float32(np.iinfo(values.dtype).max)
    return values.astype(np.float32)


def _like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.dtype(dtype).kind in "ui":
        top = np.iinfo(dtype).max
        return np.rint(np.clip(values, 0.0, 1.0) * top).astype(dtype)
    return np.clip(values, 0.0, 1.0).astype(dtype, copy=False)


def _keep_channels(result: np.ndarray, like: np.ndarray) -> np.ndarray:
    """OpenCV drops a trailing channel axis of 1; put it back."""
    return result.reshape(like.shape)
