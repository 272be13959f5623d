"""Tiling maths, pure and model-free: the grid, the context crops and the blending weights.

A tile has a *core* (the input region it is responsible for) and a *crop* (the core
grown by `overlap` pixels of context on each side, clipped at the image border).
Neighbouring tiles are cross-faded over a band `feather` pixels wide centred on their
shared core boundary. The weights form a partition of unity, so where two tiles agree
the blend reproduces their value exactly; a convolutional model whose receptive radius
is at most `overlap - feather / 2` therefore gives the untiled result. (The runner still
divides by the summed weights, which keeps cores narrower than `feather` correct.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    """A half-open interval [start, stop) along one axis, in input pixels."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Tile:
    core_y: Span
    core_x: Span
    crop_y: Span
    crop_x: Span


def split_axis(length: int, tile: int, align: int = 1) -> list[Span]:
    """Cut [0, length) into near-equal cores of at most `tile`, starting on multiples of `align`."""
    if length <= tile:
        return [Span(0, length)]
    count = math.ceil(length / tile)
    step = max(align, math.ceil(length / count / align) * align)
    starts = list(range(0, length, step))
    return [Span(start, min(start + step, length)) for start in starts]


def grow(span: Span, margin: int, length: int) -> Span:
    return Span(max(0, span.start - margin), min(length, span.stop + margin))


def tile_grid(
    height: int,
    width: int,
    tile: int,
    overlap: int,
    align: int = 1,
    tile_rows: int | None = None,
) -> list[list[Tile]]:
    """Rows of tiles covering the image; each tile's crop carries `overlap` px of context.

    Cores are `tile` wide and `tile_rows` (default `tile`) high."""
    rows = []
    for core_y in split_axis(height, tile_rows or tile, align):
        crop_y = grow(core_y, overlap, height)
        rows.append(
            [
                Tile(core_y, core_x, crop_y, grow(core_x, overlap, width))
                for core_x in split_axis(width, tile, align)
            ]
        )
    return rows


def axis_weights(core: Span, crop: Span, length: int, feather: float, scale: int) -> np.ndarray:
    """Blend weights along one axis for the tile's output (crop size * scale samples).

    1 inside the core, a linear ramp of `feather` input pixels centred on each inner core
    boundary, 0 beyond it. Image borders get no ramp.
    """
    centres = (np.arange(crop.size * scale, dtype=np.float64) + 0.5) / scale + crop.start
    weights = np.ones_like(centres)
    if feather <= 0:
        weights[(centres < core.start) | (centres >= core.stop)] = 0.0
        return weights.astype(np.float32)
    if core.start > 0:
        weights *= np.clip((centres - core.start) / feather + 0.5, 0.0, 1.0)
    if core.stop < length:
        weights *= np.clip((core.stop - centres) / feather + 0.5, 0.0, 1.0)
    return weights.astype(np.float32)
