"""Image quality scores as the published SR/restoration tables compute them.

Definitions follow SwinIR's ``utils/util_calculate_psnr_ssim.py`` (the same as BasicSR's):
- inputs are uint8 images (or floats on the 0..255 scale): H x W, H x W x 1 or H x W x 3 RGB;
- ``crop_border`` pixels are dropped from every edge before scoring;
- ``y_only`` scores the BT.601 luma of an RGB image (MATLAB ``rgb2ycbcr``), kept unrounded in
  float64; a single-channel image is scored as it is;
- SSIM and PSNR-B of a multi-channel image are the means over its channels.
"""

from __future__ import annotations

import cv2
import numpy as np

PEAK = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
JPEG_BLOCK = 8

# MATLAB rgb2ycbcr, Y row, for R, G, B in 0..1 (the result is then in 16..235 for 0..255 input).
BT601_Y_WEIGHTS = np.array([65.481, 128.553, 24.966])
BT601_Y_OFFSET = 16.0


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """Y of an RGB image on the 0..255 scale: ``16 + (65.481 R + 128.553 G + 24.966 B) / 255``.

    Returns float64 in 16..235, unrounded (MATLAB rounds only when its input is uint8).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {rgb.shape}")
    return BT601_Y_OFFSET + rgb.astype(np.float64) @ BT601_Y_WEIGHTS / PEAK


def psnr(a: np.ndarray, b: np.ndarray, crop_border: int = 0, y_only: bool = False) -> float:
    """Peak signal-to-noise ratio in dB over all scored channels (inf for identical images)."""
    first, second = prepare_pair(a, b, crop_border, y_only)
    mse = float(np.mean((first - second) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(PEAK**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, crop_border: int = 0, y_only: bool = False) -> float:
    """Structural similarity (Wang et al. 2004) averaged over channels.

    11 x 11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, float64, and only the
    'valid' part of the filtered maps, as in the authors' MATLAB code and BasicSR/SwinIR.
    """
    first, second = prepare_pair(a, b, crop_border, y_only)
    if min(first.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels after cropping")
    per_channel = [
        ssim_single_channel(first[..., c], second[..., c]) for c in range(first.shape[2])
    ]
    return float(np.mean(per_channel))


def ssim_single_channel(first: np.ndarray, second: np.ndarray) -> float:
    """Mean SSIM map of two H x W float64 images."""
    c1 = (SSIM_K1 * PEAK) ** 2
    c2 = (SSIM_K2 * PEAK) ** 2
    mu1 = gaussian_valid(first)
    mu2 = gaussian_valid(second)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = gaussian_valid(first * first) - mu1_sq
    sigma2_sq = gaussian_valid(second * second) - mu2_sq
    sigma12 = gaussian_valid(first * second) - mu1_mu2
    numerator = (2 * mu1_mu2 + c1) * (2 * sigma12 + c2)
    denominator = (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2)
    return float(np.mean(numerator / denominator))


def gaussian_valid(channel: np.ndarray) -> np.ndarray:
    """Gaussian-window local mean, keeping only positions where the window fits inside the image."""
    kernel = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA)
    half = SSIM_WINDOW // 2
    # Separable filtering equals the reference's 2-D window to ~1e-13 and is 3x faster. The
    # border mode is irrelevant: the pixels it affects are cropped away.
    return cv2.sepFilter2D(channel, -1, kernel, kernel)[half:-half, half:-half]


def psnr_b(
    restored: np.ndarray, reference: np.ndarray, crop_border: int = 0, y_only: bool = False
) -> float:
    """PSNR-B (Yim & Bovik 2011): PSNR with ``restored``'s blocking effect factor added to the MSE.

    The argument order matters: the blocking effect factor is measured on the first image (the
    restored output), as in SwinIR's ``calculate_psnrb(output, img_gt, ...)``. Pixels are on the
    0..1 scale for the MSE; a multi-channel image gives the mean of the per-channel values.
    """
    first, second = prepare_pair(restored, reference, crop_border, y_only)
    first /= PEAK
    second /= PEAK
    per_channel = []
    for c in range(first.shape[2]):
        mse = float(np.mean((first[..., c] - second[..., c]) ** 2))
        total = mse + blocking_effect_factor(first[..., c])
        per_channel.append(float("inf") if total == 0 else float(10.0 * np.log10(1.0 / total)))
    return float(np.mean(per_channel))


def blocking_effect_factor(channel: np.ndarray) -> float:
    """How much stronger the steps across 8 x 8 block edges are than the steps inside blocks.

    Follows SwinIR's ``_blocking_effect_factor`` exactly, including its pair counts
    (``H * (W // 8 - 1)``), which assume sides that are multiples of 8.
    """
    height, width = channel.shape
    edge_cols, inner_cols = block_edge_positions(width)
    edge_rows, inner_rows = block_edge_positions(height)
    steps_right = np.diff(channel, axis=1) ** 2  # steps_right[:, j] = (x[:, j] - x[:, j+1])^2
    steps_down = np.diff(channel, axis=0) ** 2
    edge_sum = steps_right[:, edge_cols].sum() + steps_down[edge_rows, :].sum()
    inner_sum = steps_right[:, inner_cols].sum() + steps_down[inner_rows, :].sum()

    edge_pairs = height * (width // JPEG_BLOCK - 1) + width * (height // JPEG_BLOCK - 1)
    inner_pairs = height * (width - 1) + width * (height - 1) - edge_pairs
    if edge_pairs <= 0 or inner_pairs <= 0:
        return 0.0  # too small to have block edges; the reference would divide by zero here
    edge_mean = edge_sum / edge_pairs
    inner_mean = inner_sum / inner_pairs
    if edge_mean <= inner_mean:
        return 0.0
    scaler = np.log2(JPEG_BLOCK) / np.log2(min(height, width))
    return float(scaler * (edge_mean - inner_mean))


def block_edge_positions(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices j of neighbour pairs (j, j+1) that straddle a block edge, and the other pairs."""
    pairs = np.arange(length - 1)
    on_edge = pairs % JPEG_BLOCK == JPEG_BLOCK - 1
    return pairs[on_edge], pairs[~on_edge]


def prepare_pair(
    a: np.ndarray, b: np.ndarray, crop_border: int, y_only: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 H x W x C, border-cropped, reduced to Y when asked and possible."""
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} and {b.shape}")
    return prepare_one(a, crop_border, y_only), prepare_one(b, crop_border, y_only)


def prepare_one(image: np.ndarray, crop_border: int, y_only: bool) -> np.ndarray:
    pixels = image.astype(np.float64)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    pixels = crop_borders(pixels, crop_border)
    if y_only and pixels.shape[2] == 3:
        pixels = rgb_to_y(pixels)[..., None]
    return pixels


def crop_borders(image: np.ndarray, border: int) -> np.ndarray:
    """Drop ``border`` pixels from each edge (nothing when border is 0)."""
    if border < 0:
        raise ValueError(f"crop_border must be >= 0, not {border}")
    if border == 0:
        return image
    if min(image.shape[:2]) <= 2 * border:
        raise ValueError(f"cannot crop {border} pixels from each edge of a {image.shape[:2]} image")
    return image[border:-border, border:-border, ...]
