"""The memory forecast: what one image will cost, from the plan alone (pure maths, no model run).

The forecast counts the arrays the engine keeps alive at its worst moment (the decoded
input, the output being assembled, the float blending band, one tile's activations and
its result) and adds them to what the process already holds. The per-family activation
figures below were calibrated against measured peaks (benchmarks/memory_forecast.py):
the forecast must never be below the measured peak and at most 1.5x above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from upres.engine.plan import Plan
from upres.engine.tiles import tile_grid

# Peak activation bytes per crop pixel (input side) of one forward pass in fp32 at scale 4
# (the scale term below makes it 1.5x this), per family. Compact and ESRGAN are measured
# (benchmarks/memory_forecast.py --calibrate: 255 and 7,360 B/px at scale 4); the others
# are the planner's guesses, which run high.
ACTIVATION_BYTES_PER_PIXEL = {
    "Compact": 180,
    "ESRGAN": 5_000,
    "RealCUGAN": 10_000,
    "SwinIR": 30_000,
    "Swin2SR": 30_000,
    "HAT": 60_000,
    "DAT": 40_000,
}
UNKNOWN_ACTIVATION_BYTES_PER_PIXEL = 40_000
# A forward pass also holds a size-independent part (the convolution library's reordered
# copy of the weights and its scratch): measured 20 MB for Compact and 168 MB for ESRGAN,
# whose weights are 2.4 and 67 MB.
FIXED_ACTIVATION_WEIGHT_SHARE = 2.5
FIXED_ACTIVATION_MINIMUM = 32 * 1024 * 1024
# The first forward pass in a process loads compute kernels and thread pools for good.
FIRST_RUN_BYTES = 192 * 1024 * 1024
# Reduced precision under autocast keeps fp32 inputs and some fp32 layers: it halves
# activations only partly.
REDUCED_PRECISION_SHARE = 0.75
# The blending band grows by concatenation while the old buffer is still referenced, so
# for a moment it exists twice.
BAND_COPIES = 2
# A finished tile: the model's float output and the weighted product blended in.
TILE_RESULT_COPIES = 2
# Allocator slack and small temporaries not worth naming.
SLACK_BYTES = 48 * 1024 * 1024
SLACK_SHARE = 0.05


@dataclass(frozen=True)
class PassShape:
    """One model pass over one image: its input size and what the network turns it into."""

    height: int
    width: int
    in_channels: int  # channels the network sees
    out_channels: int
    scale: int
    plan: Plan
    family: str  # spandrel architecture id, e.g. "ESRGAN"
    runs: int = 1  # colour images through a grey model run once per channel
    last: bool = True  # its output is in the final dtype (else float32 for the next pass)
    alpha: bool = False  # an alpha channel's pass: the colour result is held meanwhile
    first: bool = True  # its input is the decoded image itself (no copy of its own)
    weight_bytes: int = 0  # the network's parameters


@dataclass(frozen=True)
class ImagePlan:
    """What a run of one image will do, shown by --dry-run and --json before anything runs."""

    device: str
    precision: str  # fp32 | fp16 | bf16
    tile: int  # core side in input pixels (of the first pass)
    tile_rows: int | None  # core height when lower than `tile` (wide images)
    tiles: int  # over every pass and channel run
    model_passes: int
    output_size: tuple[int, int]  # width, height
    forecast: MemoryForecast
    precision_reason: str = ""
    threads: dict | None = None  # CPU threads chosen and why (engine/cores.py); None: torch's

    def as_dict(self) -> dict:
        return {
            "device": self.device,
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "threads": self.threads,
            "tile": self.tile,
            "tile_rows": self.tile_rows,
            "tiles": self.tiles,
            "model_passes": self.model_passes,
            "output_size": list(self.output_size),
            "forecast_peak_host_bytes": self.forecast.host_bytes,
            "forecast_peak_device_bytes": self.forecast.device_bytes,
        }


@dataclass(frozen=True)
class MemoryForecast:
    """Predicted peaks for one image. host: resident memory of the whole process.
    device: accelerator memory allocated by torch; None when the device is the host."""

    host_bytes: int
    device_bytes: int | None


def tile_count(height: int, width: int, plan: Plan) -> int:
    """How many tiles the runner will infer for an image of this size (no OOM retries)."""
    rows = tile_grid(height, width, plan.tile, plan.overlap, plan.rules.multiple, plan.tile_rows)
    return sum(len(row) for row in rows)


def largest_crop(height: int, width: int, plan: Plan) -> tuple[int, int]:
    """(height, width) of the biggest crop the network sees, after padding to the multiple."""
    rows = tile_grid(height, width, plan.tile, plan.overlap, plan.rules.multiple, plan.tile_rows)
    m = plan.rules.multiple
    crop_h = max(row[0].crop_y.size for row in rows)
    crop_w = max(tile.crop_x.size for row in rows for tile in row)
    pad = lambda side: max(plan.rules.minimum, -(-side // m) * m)  # noqa: E731
    if plan.fixed_shape:
        return plan.crop_shape
    return pad(crop_h), pad(crop_w)


def activation_bytes(
    family: str, crop: tuple[int, int], scale: int, dtype: torch.dtype, weight_bytes: int = 0
) -> int:
    """Peak working memory of one forward pass over a crop; output-side layers grow with
    the scale squared, hence the same scale term as the planner's."""
    per_pixel = ACTIVATION_BYTES_PER_PIXEL.get(family, UNKNOWN_ACTIVATION_BYTES_PER_PIXEL)
    per_pixel *= max(scale, 1) ** 2 / 16 + 0.5
    if dtype != torch.float32:
        per_pixel *= REDUCED_PRECISION_SHARE
    fixed = max(FIXED_ACTIVATION_MINIMUM, FIXED_ACTIVATION_WEIGHT_SHARE * weight_bytes)
    return int(per_pixel * crop[0] * crop[1] + fixed)


def tile_result_bytes(shape: PassShape, crop: tuple[int, int]) -> int:
    s = shape.scale
    outputs = crop[0] * s * crop[1] * s * (shape.out_channels + 1) * 4 * TILE_RESULT_COPIES
    inputs = crop[0] * crop[1] * shape.in_channels * 4 * 2  # the crop and its tensor
    return outputs + inputs


def band_bytes(shape: PassShape, crop: tuple[int, int]) -> int:
    """The float blending band: one crop row of the output, values plus weights."""
    s = shape.scale
    return crop[0] * s * shape.width * s * (shape.out_channels + 1) * 4 * BAND_COPIES


def pass_working_bytes(shape: PassShape) -> int:
    """Host bytes a pass needs besides its input and output arrays (band, one tile)."""
    crop = largest_crop(shape.height, shape.width, shape.plan)
    tile = tile_result_bytes(shape, crop)
    if shape.plan.device.type == "cpu":
        dtype = shape.plan.dtype
        tile += activation_bytes(shape.family, crop, shape.scale, dtype, shape.weight_bytes)
    return band_bytes(shape, crop) + tile


def pass_device_bytes(shape: PassShape) -> int:
    """Accelerator bytes of one forward pass: a batch of crops, their activations and results."""
    crop = largest_crop(shape.height, shape.width, shape.plan)
    dtype = shape.plan.dtype
    per_crop = activation_bytes(shape.family, crop, shape.scale, dtype, shape.weight_bytes)
    per_crop += tile_result_bytes(shape, crop) // TILE_RESULT_COPIES
    return per_crop * shape.plan.batch


def array_bytes(height: int, width: int, channels: int, itemsize: int) -> int:
    return height * width * channels * itemsize


def forecast_image(
    passes: list[PassShape],
    *,
    input_bytes: int,
    output_size: tuple[int, int],
    output_channels: int,
    output_itemsize: int,
    resized: bool,
    sharpened: bool,
    baseline_bytes: int,
    peak_so_far_bytes: int = 0,
    device_baseline_bytes: int = 0,
) -> MemoryForecast:
    """Peak host (and device) memory for one image.

    passes: the model passes in order (an alpha channel's passes after the colour ones).
    input_bytes: the decoded image held throughout (float32 pixels and alpha).
    baseline_bytes: what the process holds now (interpreter, torch, the loaded weights).
    peak_so_far_bytes: the process's peak until now; the forecast is never below it.
    """
    width, height = output_size
    final = array_bytes(height, width, output_channels, output_itemsize)
    worst = 0
    for shape in passes:
        pass_in = 0 if shape.first else array_bytes(shape.height, shape.width, shape.in_channels, 4)
        out_h, out_w = shape.height * shape.scale, shape.width * shape.scale
        itemsize = output_itemsize if shape.last else 4
        pass_out = array_bytes(out_h, out_w, shape.out_channels, itemsize) * shape.runs
        held = final if shape.alpha else 0
        worst = max(worst, held + pass_in + pass_out + pass_working_bytes(shape))
    # After the passes: the model's result, its resize to the target, the sharpened copy
    # (sharpening works in strips: its float temporaries are small) and the encoder's copy.
    finishing = final * (2 + int(resized) + int(sharpened))
    working = input_bytes + max(worst, finishing)
    if passes and passes[0].plan.device.type == "cpu":
        working += FIRST_RUN_BYTES
    host = baseline_bytes + working * (1 + SLACK_SHARE) + SLACK_BYTES
    device = None
    if passes and passes[0].plan.device.type != "cpu":
        device = device_baseline_bytes + max(pass_device_bytes(shape) for shape in passes)
    return MemoryForecast(host_bytes=int(max(host, peak_so_far_bytes)), device_bytes=device)


# -- what the process holds now, and its peak (measured, for the forecast's baseline and the
#    report's "measured" column) ----------------------------------------------------------


def resident_bytes() -> int:
    """Resident memory of this process now."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def process_peak_bytes() -> int:
    """Peak resident memory of this process so far (what the OOM killer would have seen)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB else


def device_allocated_bytes(device: torch.device) -> int:
    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else 0


def device_peak_bytes(device: torch.device) -> int | None:
    """Peak accelerator memory allocated by torch in this process; None on the host."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
