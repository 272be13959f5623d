"""The runner obeys the plan: infer tile by tile, blend, and assemble in host memory.

Only the tile being inferred lives on the accelerator. Output rows are quantised to the
output dtype as soon as no later tile can touch them, so the full-size image never
exists as a float array (the float band is one tile row high).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from spandrel import ImageModelDescriptor

from upres.engine.plan import SMALLEST_TILE, Plan
from upres.engine.tiles import Tile, axis_weights, tile_grid
from upres.errors import OutOfMemoryError
from upres.io.image import quantise

ProgressCallback = Callable[[int, int], None]  # (tiles done, tiles total)


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

    def __post_init__(self) -> None:
        self.dtype = self.plan.dtype

    @property
    def scale(self) -> int:
        return self.descriptor.scale

    def run(self, pixels: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
        """H x W x C float32 in [0, 1] -> (H*s) x (W*s) x C' in `out_dtype`."""
        return self._tiled(pixels, self.plan.tile, out_dtype, report=True)

    # -- assembly -------------------------------------------------------------------

    def _tiled(
        self, pixels: np.ndarray, tile: int, out_dtype: np.dtype, report: bool
    ) -> np.ndarray:
        height, width = pixels.shape[:2]
        s = self.scale
        rows = tile_grid(height, width, tile, self.plan.overlap, self.plan.rules.multiple)
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
            for tile_spec in row:
                self._add_tile(pixels, tile_spec, tile, band, band_weight, band_start)
                done += 1
                if report and self.progress is not None:
                    self.progress(done, total)
            # Rows above the next row's context can no longer change: finish them.
            final_stop = (
                rows[index + 1][0].crop_y.start * s if index + 1 < len(rows) else height * s
            )
            count = final_stop - band_start
            finished = band[:count] / np.maximum(band_weight[:count, :, None], 1e-12)
            output[band_start:final_stop] = finish(finished, out_dtype)
            band, band_weight = band[count:], band_weight[count:]
            band_start = final_stop
        return output

    def _add_tile(
        self,
        pixels: np.ndarray,
        spec: Tile,
        tile: int,
        band: np.ndarray,
        band_weight: np.ndarray,
        band_start: int,
    ) -> None:
        height, width = pixels.shape[:2]
        s = self.scale
        crop = pixels[spec.crop_y.start : spec.crop_y.stop, spec.crop_x.start : spec.crop_x.stop]
        result = self._infer_crop(crop, tile)
        feather = float(self.plan.overlap)
        weight_y = axis_weights(spec.core_y, spec.crop_y, height, feather, s)
        weight_x = axis_weights(spec.core_x, spec.crop_x, width, feather, s)
        weight = weight_y[:, None] * weight_x[None, :]
        rows = slice(spec.crop_y.start * s - band_start, spec.crop_y.stop * s - band_start)
        cols = slice(spec.crop_x.start * s, spec.crop_x.stop * s)
        band[rows, cols] += result * weight[:, :, None]
        band_weight[rows, cols] += weight

    # -- one crop on the device -----------------------------------------------------

    def _infer_crop(self, crop: np.ndarray, tile: int) -> np.ndarray:
        """Run one crop; on out-of-memory, tile this crop alone at half the size."""
        try:
            return self._forward(crop)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
        self._release_cached_memory()
        smaller = tile // 2 // self.plan.rules.multiple * self.plan.rules.multiple
        if smaller < max(SMALLEST_TILE, self.plan.rules.multiple):
            raise OutOfMemoryError(
                f"out of memory on {self.plan.device} even with {tile}px tiles;"
                " free memory, use --device cpu, or lower --tile"
            )
        self.retries += 1
        return self._tiled(crop, smaller, np.dtype(np.float32), report=False)

    def _release_cached_memory(self) -> None:
        if self.plan.device.type == "cuda":
            torch.cuda.empty_cache()

    def _forward(self, crop: np.ndarray) -> np.ndarray:
        self.tiles_run += 1
        output = self._forward_as(crop, self.dtype)
        if self.dtype != torch.float32 and not np.isfinite(output).all():
            # Half precision overflowed: redo this tile and the rest of the image in fp32.
            self.fp32_fallbacks += 1
            self.dtype = torch.float32
            output = self._forward_as(crop, torch.float32)
        return np.clip(output, 0.0, 1.0, out=output)

    @torch.inference_mode()
    def _forward_as(self, crop: np.ndarray, dtype: torch.dtype) -> np.ndarray:
        height, width = crop.shape[:2]
        tensor = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
        tensor = pad_to_rules(tensor, self.plan.rules.multiple, self.plan.rules.minimum)
        tensor = tensor.to(self.plan.device, dtype=dtype, non_blocking=True)
        result = self.model_for(dtype)(tensor)
        if isinstance(result, (tuple, list)):  # e.g. Swin2SR compressed-SR returns extras
            result = result[0]
        s = self.scale
        result = result[0, :, : height * s, : width * s].float().cpu()
        return result.permute(1, 2, 0).numpy()


def pad_to_rules(tensor: torch.Tensor, multiple: int, minimum: int) -> torch.Tensor:
    """Pad bottom/right to the model's multiple (and minimum) by reflection; cropped back later."""
    height, width = tensor.shape[-2:]
    target_h = max(minimum, -(-height // multiple) * multiple)
    target_w = max(minimum, -(-width // multiple) * multiple)
    pad_h, pad_w = target_h - height, target_w - width
    if pad_h == 0 and pad_w == 0:
        return tensor
    # Reflection needs the pad to be smaller than the side; tiny inputs replicate instead.
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(tensor, (0, pad_w, 0, pad_h), mode=mode)
