"""How a ground-truth image becomes a benchmark input, as the published protocols do it.

- SR: MATLAB bicubic downscale of the HR image cropped to a multiple of the scale.
- Denoising (SwinIR ``main_test_swinir.py``): ``np.random.seed(0)`` before every image, then
  ``img + np.random.normal(0, sigma/255, img.shape)`` on float32 pixels in [0, 1], no clipping.
  The reference draws the noise for BGR channel order (it reads with OpenCV); we reverse it onto
  RGB so each pixel gets the same noise value as there. Every image therefore starts from seed 0.
- JPEG (same script): ``cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, q])`` on the BGR
  image (or the grey one) and ``cv2.imdecode``. Grey JPEG tasks on colour files use the rounded
  BT.601 Y channel, as the reference does.
"""

from __future__ import annotations

import cv2
import numpy as np

from upres.metrics.imresize import imresize
from upres.metrics.quality import BT601_Y_OFFSET, BT601_Y_WEIGHTS

NOISE_SEED = 0


def crop_to_multiple(image: np.ndarray, scale: int) -> np.ndarray:
    """Drop the last rows and columns so both sides divide by ``scale``."""
    height = image.shape[0] // scale * scale
    width = image.shape[1] // scale * scale
    return image[:height, :width, ...]


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The LR input for x``scale`` SR: MATLAB ``imresize(hr, 1/scale, 'bicubic')`` on uint8."""
    return imresize(crop_to_multiple(hr, scale), 1.0 / scale)


def add_gaussian_noise(clean: np.ndarray, sigma: float, seed: int = NOISE_SEED) -> np.ndarray:
    """Noisy float64 image in [0, 1] units, unclipped, reproducing SwinIR's noise field exactly.

    ``RandomState(seed).normal`` gives the same numbers as ``np.random.seed(seed)`` followed by
    ``np.random.normal`` without touching numpy's global state.
    """
    pixels = clean.astype(np.float32) / 255.0
    noise = np.random.RandomState(seed).normal(0.0, sigma / 255.0, pixels.shape)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        noise = noise[..., ::-1]  # drawn as B, G, R in the reference
    return pixels + noise


def to_uint8(unit_pixels: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 the way the reference stores outputs: clamp, scale, round."""
    return np.round(np.clip(unit_pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode with OpenCV's JPEG at ``quality``; grey stays grey, RGB stays RGB."""
    grey = image.ndim == 2
    encoded_order = image if grey else np.ascontiguousarray(image[..., ::-1])
    ok, encoded = cv2.imencode(".jpg", encoded_order, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the image as JPEG")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    return decoded if grey else np.ascontiguousarray(decoded[..., ::-1])


def rounded_luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 BT.601 Y of an RGB uint8 image, computed like SwinIR's ``bgr2ycbcr(img, y_only=True)``.

    Same arithmetic as there (float32 pixels in [0, 1], float64 dot product in B, G, R order,
    numpy rounding) so that values on a .5 boundary round the same way.
    """
    unit_bgr = rgb[..., ::-1].astype(np.float32) / 255.0
    luma = unit_bgr @ BT601_Y_WEIGHTS[::-1] + BT601_Y_OFFSET
    return np.round(luma).astype(np.uint8)
