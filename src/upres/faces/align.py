"""Face alignment and paste-back: pure geometry on numpy arrays.

A face is aligned by the similarity transform (rotation, uniform scale, shift) that
best maps its five landmarks onto the 512x512 FFHQ template the face models were trained
on. After restoration it goes back through the inverse transform, scaled to the output
image, and is blended in with a feathered mask, so no seam or colour step shows.
Only the face's bounding box in the output is touched, so a 40-face photo never needs
more than one face's worth of extra memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from upres.io.image import unit_float

FACE_SIZE = 512
# Eye centres, nose tip, mouth corners of the FFHQ-aligned 512x512 face (as facexlib and
# GFPGAN/CodeFormer use it).
FFHQ_TEMPLATE = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)
# The mask is 1 inside, falls to 0 over a band along the crop's edges (template pixels).
MASK_MARGIN = 24
MASK_SIGMA = 12.0


def face_transform(landmarks: np.ndarray) -> np.ndarray:
    """2x3 matrix taking input pixels to template pixels (robust least squares, LMedS)."""
    matrix, _ = cv2.estimateAffinePartial2D(
        np.asarray(landmarks, dtype=np.float32), FFHQ_TEMPLATE, method=cv2.LMEDS
    )
    if matrix is None:
        raise ValueError("landmarks too degenerate to align a face")
    return matrix


def aligned_face(pixels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The 512x512 aligned crop of an H x W x 3 float image (edges mirrored, not grey)."""
    return warp(pixels, matrix, (FACE_SIZE, FACE_SIZE), cv2.INTER_LANCZOS4, cv2.BORDER_REFLECT_101)


def feather_mask() -> np.ndarray:
    """512x512 float mask: 1 in the middle, a soft fall to 0 at the crop's edges."""
    mask = np.zeros((FACE_SIZE, FACE_SIZE), np.float32)
    mask[MASK_MARGIN:-MASK_MARGIN, MASK_MARGIN:-MASK_MARGIN] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), MASK_SIGMA)
    mask[mask < 1e-3] = 0.0  # exactly untouched outside
    mask[mask > 1 - 1e-3] = 1.0
    return mask


@dataclass(frozen=True)
class Placement:
    """Where a restored face lands in the output: a box and the template->box matrix."""

    x0: int
    y0: int
    x1: int
    y1: int
    matrix: np.ndarray  # 2x3, template pixels -> box pixels

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0


def placement(
    to_template: np.ndarray, input_size: tuple[int, int], output_size: tuple[int, int]
) -> Placement:
    """Where the template square falls in an output of `output_size` (width, height) made
    from an input of `input_size`; pixel centres map to pixel centres."""
    sx = output_size[0] / input_size[0]
    sy = output_size[1] / input_size[1]
    to_input = cv2.invertAffineTransform(to_template)
    # x_out = (x_in + 0.5) * s - 0.5
    to_output = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]], np.float64)
    matrix = compose(to_output, to_input)
    corners = np.array([[0, 0], [FACE_SIZE, 0], [0, FACE_SIZE], [FACE_SIZE, FACE_SIZE]], float)
    mapped = corners @ matrix[:, :2].T + matrix[:, 2]
    x0, y0 = np.floor(mapped.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(mapped.max(axis=0)).astype(int) + 2
    x0, y0 = max(int(x0), 0), max(int(y0), 0)
    x1, y1 = min(int(x1), output_size[0]), min(int(y1), output_size[1])
    shifted = matrix.copy()
    shifted[:, 2] -= (x0, y0)
    return Placement(x0, y0, x1, y1, shifted)


def paste_face(
    output: np.ndarray, face: np.ndarray, where: Placement, mask: np.ndarray, strength: float
) -> None:
    """Blend a restored 512x512 RGB float face into `output` (H x W x C, uint8, uint16 or
    float) in place, through `where`; `strength` 0 leaves the output as it was."""
    if where.empty or strength <= 0:
        return
    size = (where.x1 - where.x0, where.y1 - where.y0)
    face, matrix = shrink_first(face, where.matrix)
    mask_small, _ = shrink_first(mask, where.matrix)
    weights = warp(mask_small, matrix, size, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT)
    weights = np.clip(weights, 0.0, 1.0) * np.float32(strength)
    pasted = warp(face, matrix, size, cv2.INTER_LANCZOS4, cv2.BORDER_REPLICATE)
    pasted = np.clip(pasted, 0.0, 1.0)
    region = output[where.y0 : where.y1, where.x0 : where.x1]
    if region.shape[2] == 1:
        pasted = pasted @ np.array([0.299, 0.587, 0.114], np.float32)
        pasted = pasted[:, :, None]
    current = unit_float(region)
    blended = current + weights[:, :, None] * (pasted - current)
    touched = weights > 0
    region[touched] = from_unit(blended, region.dtype)[touched]


def shrink_first(image: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the face lands at less than half its 512 px, area-downsize it to twice its
    final size first: a plain warp would alias the restored detail, and each resampling
    softens, so the rest is left to one warp. The matrix is adjusted to match."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale >= 0.5:
        return image, matrix
    side = max(8, round(FACE_SIZE * scale * 2))
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    factor = side / FACE_SIZE
    # small pixel centres -> template pixels: x_t = (x_s + 0.5) / factor - 0.5
    from_small = np.array(
        [[1 / factor, 0, 0.5 / factor - 0.5], [0, 1 / factor, 0.5 / factor - 0.5]], np.float64
    )
    return small, compose(matrix, from_small)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer(inner(x)) for 2x3 affine matrices."""
    full = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return full[:2]


def warp(
    image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], flags: int, border: int
) -> np.ndarray:
    warped = cv2.warpAffine(
        image, matrix.astype(np.float64), size, flags=flags, borderMode=border, borderValue=0
    )
    if image.ndim == 3 and warped.ndim == 2:
        warped = warped[:, :, None]
    return warped


def from_unit(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    values = np.clip(values, 0.0, 1.0)
    if np.dtype(dtype).kind in "ui":
        return np.rint(values * np.float32(np.iinfo(dtype).max)).astype(dtype)
    return values.astype(dtype)
