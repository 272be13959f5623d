"""Side-by-side crops for looking at results: input (nearest-upscaled) | output | ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CROP_SIDE = 192  # in output pixels: big enough to judge texture, small enough to view at 1:1
GAP = 4
GAP_VALUE = 255


def centre_box(height: int, width: int, scale: int, side: int = CROP_SIDE) -> tuple[int, int, int]:
    """Top, left and side of a centred square on the ``scale`` grid, so the input crop is exact."""
    side = max(scale, min(side, height, width) // scale * scale)
    top = (height - side) // 2 // scale * scale
    left = (width - side) // 2 // scale * scale
    return top, left, side


def side_by_side(
    degraded: np.ndarray, output: np.ndarray, target: np.ndarray, scale: int
) -> np.ndarray:
    """One uint8 image with the three centred crops next to each other."""
    top, left, side = centre_box(target.shape[0], target.shape[1], scale)
    small = side // scale
    lr_crop = degraded[top // scale : top // scale + small, left // scale : left // scale + small]
    nearest = np.repeat(np.repeat(lr_crop, scale, axis=0), scale, axis=1)
    crops = [
        nearest,
        output[top : top + side, left : left + side],
        target[top : top + side, left : left + side],
    ]
    gap = np.full((side, GAP, *target.shape[2:]), GAP_VALUE, dtype=np.uint8)
    return np.concatenate([crops[0], gap, crops[1], gap, crops[2]], axis=1)


def save_side_by_side(
    folder: Path,
    name: str,
    degraded: np.ndarray,
    output: np.ndarray,
    target: np.ndarray,
    scale: int,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    Image.fromarray(side_by_side(degraded, output, target, scale)).save(path)
    return path
