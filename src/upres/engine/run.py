"""The runner obeys the plan: infer tile by tile, blend, and assemble in host memory.

Only the tile being inferred lives on the accelerator. Output rows are quantised to the
output dtype as soon as no later tile can touch them, so the full-size image never
exists as a float array (the float band is one tile row high).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from spandrel import ImageModelDescriptor

from upres.engine.plan import SMALLEST_TILE, Plan
from upres.engine.tiles import Span, Tile, axis_weights, tile_grid
from upres.errors import OutOfMemoryError
from upres.io.image import quantise

ProgressCallback = Callable[[int, int], None]  # (tiles done, tiles total)
FINISH_ROWS = 256  # output rows blended and quantised at a time


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def finish(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Blended float rows -> the output dtype (uint8/uint16 rounded, or float)."""
    if dtype == np.uint8 or dtype == np.uint16:
        return quantise(values, 16 if dtype == np.uint16 else 8)
    return values.astype(dtype, copy=False)


@dataclass
class TileRunner:
    """One call's worth of state: a runner is made per image, never shared."""

    descriptor: ImageModelDescriptor
    plan: Plan
    # The network in a given dtype; the owner caches copies so a shared model is never mutated.
    model_for: Callable[[torch.dtype], torch.nn.Module]
    progress: ProgressCallback | None = None
    dtype: torch.dtype = field(init=False)
    retries: int = field(default=0, init=False)
    tiles_run: int = field(default=0, init=False)
    fp32_fallbacks: int = field(default=0, init=False)
    batch: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        self.dtype = self.plan.dtype
        self.batch = self.plan.batch

    @property
    def scale(self) -> int:
        return self.descriptor.scale

    def run(self, pixels: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
        """H x W x C float32 in [0, 1] -> (H*s) x (W*s) x C' in `out_dtype`."""
        return self._tiled(pixels, self.plan.tile, out_dtype, top_level=True)

    # -- assembly -------------------------------------------------------------------

    def _tiled(
        self, pixels: np.ndarray, tile: int, out_dtype: np.dtype, top_level: bool
    ) -> np.ndarray:
        height, width = pixels.shape[:2]
        s = self.scale
        # Only the top level uses the plan's row height; an out-of-memory retry tiles its one
        # crop in squares.
        tile_rows = self.plan.tile_rows if top_level else None
        rows = tile_grid(
            height, width, tile, self.plan.overlap, self.plan.rules.multiple, tile_rows
        )
        total = sum(len(row) for row in rows)
        channels = self.descriptor.output_channels
        output = np.empty((height * s, width * s, channels), dtype=out_dtype)
        band = np.zeros((0, width * s, channels), dtype=np.float32)
        band_weight = np.zeros((0, width * s), dtype=np.float32)
        band_start = 0  # first output row held in the band
        done = 0
        for index, row in enumerate(rows):
            crop_stop = row[0].crop_y.stop * s
            grow_by = crop_stop - band_start - band.shape[0]
            if grow_by > 0:
                band = np.concatenate([band, np.zeros((grow_by, *band.shape[1:]), np.float32)])
                band_weight = np.concatenate(
                    [band_weight, np.zeros((grow_by, band_weight.shape[1]), np.float32)]
                )
            for group in self._groups(row, top_level):
                results = self._infer_group(pixels, group, tile, top_level)
                for spec, result in zip(group, results, strict=True):
                    self._blend(result, spec, (height, width), band, band_weight, band_start)
                done += len(group)
                if top_level and self.progress is not None:
                    self.progress(done, total)
            # Rows above the next row's context can no longer change: finish them.
            final_stop = (
                rows[index + 1][0].crop_y.start * s if index + 1 < len(rows) else height * s
            )
            count = final_stop - band_start
            # In slices, so the float temporaries stay a few rows high on huge images.
            for top in range(0, count, FINISH_ROWS):
                rows_done = slice(top, min(count, top + FINISH_ROWS))
                blended = band[rows_done] / np.maximum(band_weight[rows_done, :, None], 1e-12)
                output[band_start + rows_done.start : band_start + rows_done.stop] = finish(
                    blended, out_dtype
                )
            band, band_weight = band[count:], band_weight[count:]
            band_start = final_stop
        return output

    def _groups(self, row: list[Tile], top_level: bool) -> Iterator[list[Tile]]:
        """Consecutive tiles whose crops stack into one batch (same shape, at most `batch`).

        A generator, so a batch size lowered by out-of-memory applies to the next group.
        """
        padded_alike = self.plan.fixed_shape and top_level  # every crop padded to one shape
        group: list[Tile] = []
        for spec in row:
            same_shape = padded_alike or (
                group and tile_crop_shape(group[0]) == tile_crop_shape(spec)
            )
            if group and (not same_shape or len(group) >= self.batch):
                yield group
                group = []
            group.append(spec)
        if group:
            yield group

    def _infer_group(
        self, pixels: np.ndarray, group: list[Tile], tile: int, top_level: bool
    ) -> list[np.ndarray]:
        """Infer the crops of a group; with a fixed shape, each crop is first widened inward
        to the full crop side so that padding only ever happens at true image borders."""
        if not (self.plan.fixed_shape and top_level):
            return self._infer_crops([crop_of(pixels, spec) for spec in group], tile, top_level)
        height, width = pixels.shape[:2]
        (side_y, side_x), s = self.plan.crop_shape, self.scale
        multiple = self.plan.rules.multiple
        contexts = [
            (
                widen(spec.crop_y, side_y, height, multiple),
                widen(spec.crop_x, side_x, width, multiple),
            )
            for spec in group
        ]
        crops = [pixels[y.start : y.stop, x.start : x.stop] for y, x in contexts]
        results = self._infer_crops(crops, tile, top_level)
        return [
            result[
                (spec.crop_y.start - y.start) * s : (spec.crop_y.stop - y.start) * s,
                (spec.crop_x.start - x.start) * s : (spec.crop_x.stop - x.start) * s,
            ]
            for spec, (y, x), result in zip(group, contexts, results, strict=True)
        ]

    def _blend(
        self,
        result: np.ndarray,
        spec: Tile,
        image_size: tuple[int, int],
        band: np.ndarray,
        band_weight: np.ndarray,
        band_start: int,
    ) -> None:
        height, width = image_size
        s = self.scale
        feather = float(self.plan.overlap)
        weight_y = axis_weights(spec.core_y, spec.crop_y, height, feather, s)
        weight_x = axis_weights(spec.core_x, spec.crop_x, width, feather, s)
        weight = weight_y[:, None] * weight_x[None, :]
        rows = slice(spec.crop_y.start * s - band_start, spec.crop_y.stop * s - band_start)
        cols = slice(spec.crop_x.start * s, spec.crop_x.stop * s)
        band[rows, cols] += result * weight[:, :, None]
        band_weight[rows, cols] += weight

    # -- crops on the device --------------------------------------------------------

    def _infer_crops(self, crops: list[np.ndarray], tile: int, top_level: bool) -> list[np.ndarray]:
        """Run crops as one batch; on out-of-memory, halve the batch, then the tile."""
        try:
            return self._forward(crops, top_level)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
        self._release_cached_memory()
        self.retries += 1
        if self.plan.fixed_shape and top_level and self.batch > 1:
            # Every group is padded to the batch size: lower that, and run the crops in
            # groups of the new size (one crop alone would otherwise still be padded).
            self.batch //= 2
            return [
                output
                for start in range(0, len(crops), self.batch)
                for output in self._infer_crops(crops[start : start + self.batch], tile, True)
            ]
        if len(crops) > 1:
            self.batch = max(1, len(crops) // 2)  # later groups stay at the smaller size
            half = len(crops) // 2
            return self._infer_crops(crops[:half], tile, top_level) + self._infer_crops(
                crops[half:], tile, top_level
            )
        smaller = tile // 2 // self.plan.rules.multiple * self.plan.rules.multiple
        if smaller < max(SMALLEST_TILE, self.plan.rules.multiple):
            raise OutOfMemoryError(
                f"out of memory on {self.plan.device} even with {tile}px tiles;"
                " free memory, use --device cpu, or lower --tile"
            )
        return [self._tiled(crops[0], smaller, np.dtype(np.float32), top_level=False)]

    def _release_cached_memory(self) -> None:
        if self.plan.device.type == "cuda":
            torch.cuda.empty_cache()

    def _forward(self, crops: list[np.ndarray], top_level: bool) -> list[np.ndarray]:
        outputs = self._forward_as(crops, self.dtype, top_level)
        if self.dtype != torch.float32 and not all(np.isfinite(o).all() for o in outputs):
            # Half precision overflowed: redo these tiles and the rest of the image in fp32.
            self.fp32_fallbacks += 1
            self.dtype = torch.float32
            outputs = self._forward_as(crops, torch.float32, top_level)
        self.tiles_run += len(crops)  # counted once they succeed: OOM attempts are retries
        return [np.clip(output, 0.0, 1.0, out=output) for output in outputs]

    @torch.inference_mode()
    def _forward_as(
        self, crops: list[np.ndarray], dtype: torch.dtype, top_level: bool
    ) -> list[np.ndarray]:
        minimum: int | tuple[int, int] = self.plan.rules.minimum
        if self.plan.fixed_shape and top_level:
            minimum = tuple(max(self.plan.rules.minimum, side) for side in self.plan.crop_shape)
        tensors = [
            pad_to_rules(
                torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None],
                self.plan.rules.multiple,
                minimum,
            )
            for crop in crops
        ]
        if self.plan.fixed_shape and top_level:
            # A compiled graph is fixed in its batch size too: a short group (the end of a
            # row) is filled up with copies of its last crop, whose outputs are dropped.
            tensors += [tensors[-1]] * (self.batch - len(tensors))
        batch = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
        if self.plan.device.type == "cuda":
            batch = batch.pin_memory()  # lets the copy below run asynchronously
        # The fast path keeps fp32 weights under autocast: its inputs stay fp32.
        input_dtype = torch.float32 if self.plan.autocast else dtype
        batch = batch.to(self.plan.device, dtype=input_dtype, non_blocking=True)
        result = self.model_for(dtype)(batch)
        if isinstance(result, (tuple, list)):  # e.g. Swin2SR compressed-SR returns extras
            result = result[0]
        result = result.float().cpu().numpy()
        s = self.scale
        return [
            result[i, :, : crop.shape[0] * s, : crop.shape[1] * s].transpose(1, 2, 0)
            for i, crop in enumerate(crops)
        ]


def crop_of(pixels: np.ndarray, spec: Tile) -> np.ndarray:
    return pixels[spec.crop_y.start : spec.crop_y.stop, spec.crop_x.start : spec.crop_x.stop]


def widen(span: Span, side: int, length: int, multiple: int) -> Span:
    """Grow `span` toward `side` pixels, inward from the image border, as far as the image
    allows; the start stays on the window multiple, so at most multiple - 1 pixels are left
    to padding (as in the unwidened path)."""
    if span.size >= side:
        return span
    stop = min(length, span.start + side)
    start = -(-max(0, stop - side) // multiple) * multiple
    return Span(min(start, span.start), stop)


def tile_crop_shape(spec: Tile) -> tuple[int, int]:
    return spec.crop_y.size, spec.crop_x.size


def pad_to_rules(
    tensor: torch.Tensor, multiple: int, minimum: int | tuple[int, int]
) -> torch.Tensor:
    """Pad bottom/right to the model's multiple (and minimum, one side or (height, width))
    by reflection; cropped back later."""
    height, width = tensor.shape[-2:]
    min_h, min_w = minimum if isinstance(minimum, tuple) else (minimum, minimum)
    target_h = max(min_h, -(-height // multiple) * multiple)
    target_w = max(min_w, -(-width // multiple) * multiple)
    pad_h, pad_w = target_h - height, target_w - width
    if pad_h == 0 and pad_w == 0:
        return tensor
    # Reflection needs the pad to be smaller than the side; tiny inputs replicate instead.
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(tensor, (0, pad_w, 0, pad_h), mode=mode)
