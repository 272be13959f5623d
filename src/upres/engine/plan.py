"""The planner decides: device, precision and tile size, from the model and free memory.

The runner (run.py) obeys the plan and only shrinks a tile when memory runs out anyway.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Literal

import psutil
import torch
from spandrel import ImageModelDescriptor

from upres.settings import setting

Precision = Literal["auto", "fp32", "fp16", "bf16"]

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}

DEFAULT_OVERLAP = 32
SMALLEST_TILE = 32  # OOM retries halve a tile down to this, then give up
LARGEST_TILE = 2048  # bigger tiles gain nothing and make one allocation huge
BAND_BYTES = 256 * 1024 * 1024  # host memory for the float blending band of one tile row
# On a CPU the tile's activations share host memory with the output being assembled.
CPU_TILE_BYTES = 2 * 1024 * 1024 * 1024
CPU_TILE_ASPECT = 2  # widest band-limited tile on a CPU, in tile heights
MAX_BATCH = 8  # tiles per forward pass; more only delays the first finished row
# Share of the free memory a tile may plan to use: activations are estimates and the
# allocator fragments, so leave room.
MEMORY_SHARE = 0.5

# Peak working memory per input pixel in fp32 at scale 4, measured roughly per family;
# attention models keep per-window score matrices and wide MLPs alive.
BYTES_PER_PIXEL_FP32 = {
    "Compact": 4_000,
    "ESRGAN": 14_000,
    "RealCUGAN": 10_000,
    "SwinIR": 30_000,
    "Swin2SR": 30_000,
    "HAT": 60_000,
    "DAT": 40_000,
}
UNKNOWN_BYTES_PER_PIXEL_FP32 = 40_000


@dataclass(frozen=True)
class SizeRules:
    """What the model demands of an input's height and width."""

    multiple: int
    minimum: int


@dataclass(frozen=True)
class Plan:
    device: torch.device
    dtype: torch.dtype
    tile: int  # core size in input pixels; >= the image side means one tile
    overlap: int
    rules: SizeRules
    # Core height when it must be lower than `tile`: on a wide image the float blending band
    # (one tile row of the output) would otherwise dominate host memory. None: square.
    tile_rows: int | None = None
    batch: int = 1  # tiles of the same shape stacked into one forward pass
    # Pad every crop to one shape (tile + 2 * overlap) so a compiled graph is reused.
    fixed_shape: bool = False
    # Fast path: weights stay fp32 and autocast computes in `dtype`, so inputs go in as fp32.
    autocast: bool = False

    @property
    def crop_shape(self) -> tuple[int, int]:
        """(height, width) of a full crop: core plus context, on the window multiple."""
        m = self.rules.multiple
        height = self.tile_rows or self.tile
        return (
            -(-(height + 2 * self.overlap) // m) * m,
            -(-(self.tile + 2 * self.overlap) // m) * m,
        )


def resolve_device(requested: str = "auto") -> torch.device:
    """auto: CUDA, else MPS, else the CPU. A named device that is not there is a ValueError
    in one line, before anything is loaded (torch's own text names drivers and builds)."""
    if requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise ValueError(
                f"device must be auto, cpu, cuda, cuda:N or mps, not {requested!r}"
            ) from None
        problem = missing_device(device)
        if problem:
            raise ValueError(problem)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def missing_device(device: torch.device) -> str | None:
    """Why `device` cannot be used here, or None."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            how = "" if torch.version.cuda else " (this torch is built without CUDA)"
            return f"device {device}: no CUDA GPU is available here{how}; use cpu or auto"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"device {device}: there are {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return f"device {device}: Apple's MPS is not available here; use cpu or auto"
    return None


@functools.cache
def cpu_has_native_bf16() -> bool:
    """AMX bf16 tiles (Intel Sapphire Rapids and later): bf16 matmuls several times fp32's speed.

    Without them oneDNN emulates bf16 and gains little, so fp32 stays the CPU default.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in info)
    except OSError:
        return False


def choose_precision(
    descriptor: ImageModelDescriptor,
    device: torch.device,
    requested: str = "auto",
    autocast: bool = False,
) -> torch.dtype:
    """On an accelerator bf16/fp16 only where the descriptor says it works; on a CPU fp32,
    or bf16 under autocast (the fast path) when the CPU computes bf16 natively.

    An explicit request the model cannot honour falls back to fp32 rather than producing
    black images (SwinIR-family outputs overflow in fp16).
    """
    if requested == "auto":
        requested = (setting("UPRES_PRECISION") or "auto").lower()
    if requested not in ("auto", *DTYPES):
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, not {requested!r}")
    if requested == "auto" and device.type == "cpu":
        native = autocast and descriptor.supports_bfloat16 and cpu_has_native_bf16()
        return torch.bfloat16 if native else torch.float32
    if requested == "fp32":
        return torch.float32
    bf16_ok = descriptor.supports_bfloat16 and (
        device.type != "cuda" or torch.cuda.is_bf16_supported()
    )
    if requested == "bf16":
        return torch.bfloat16 if bf16_ok else torch.float32
    if requested == "fp16":
        return torch.float16 if descriptor.supports_half else torch.float32
    if descriptor.supports_half and device.type != "cpu":
        return torch.float16
    return torch.bfloat16 if bf16_ok else torch.float32


def size_rules(descriptor: ImageModelDescriptor) -> SizeRules:
    """Multiple and minimum side, including the attention window that Swin-family models pad to."""
    requirements = descriptor.size_requirements
    multiple = requirements.multiple_of
    window = getattr(descriptor.model, "window_size", None)
    if isinstance(window, int) and window > 1:
        multiple = math.lcm(multiple, window)
    minimum = max(requirements.minimum, multiple)
    return SizeRules(multiple=multiple, minimum=minimum)


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


def bytes_per_input_pixel(descriptor: ImageModelDescriptor, dtype: torch.dtype) -> float:
    family = descriptor.architecture.id
    per_pixel = BYTES_PER_PIXEL_FP32.get(family, UNKNOWN_BYTES_PER_PIXEL_FP32)
    per_pixel *= max(descriptor.scale, 1) ** 2 / 16 + 0.5  # output-side buffers grow with scale
    if dtype != torch.float32:
        per_pixel /= 2
    return per_pixel


def auto_tile_size(
    descriptor: ImageModelDescriptor, device: torch.device, dtype: torch.dtype
) -> int:
    budget = free_memory_bytes(device) * MEMORY_SHARE
    if device.type == "cpu":
        budget = min(budget, CPU_TILE_BYTES)
    side = int(math.sqrt(budget / bytes_per_input_pixel(descriptor, dtype)))
    return max(SMALLEST_TILE, min(LARGEST_TILE, side))


def band_limited_tile(descriptor: ImageModelDescriptor, image_width: int, overlap: int) -> int:
    """The tallest tile whose float blending band (in host memory, one tile row of the
    output, values plus weights) stays within BAND_BYTES: a wide image's band, not its
    tiles, is what would otherwise dominate host memory."""
    s = max(descriptor.scale, 1)
    bytes_per_output_row = image_width * s * (descriptor.output_channels + 1) * 4
    rows = BAND_BYTES // bytes_per_output_row // s
    return max(SMALLEST_TILE, int(rows - 2 * overlap))


def on_multiple(side: int, multiple: int) -> int:
    """Cores on window multiples keep every crop a whole number of windows."""
    return max(multiple, side // multiple * multiple)


def tiles_per_batch(
    descriptor: ImageModelDescriptor,
    device: torch.device,
    dtype: torch.dtype,
    crop_shape: tuple[int, int],
) -> int:
    """How many crops fit one forward pass; 1 on the CPU, where stacking gains nothing."""
    if device.type == "cpu":
        return 1
    budget = free_memory_bytes(device) * MEMORY_SHARE
    area = crop_shape[0] * crop_shape[1]
    fits = int(budget // (area * bytes_per_input_pixel(descriptor, dtype)))
    return max(1, min(MAX_BATCH, fits))


def parse_tile(value: str | int | None) -> int | None:
    """`auto` (or None) -> None, meaning planned from memory; otherwise a positive integer."""
    if value is None:
        value = setting("UPRES_TILE_SIZE") or "auto"
    if isinstance(value, int):
        tile = value
    elif str(value).strip().lower() == "auto":
        return None
    else:
        try:
            tile = int(value)
        except ValueError:
            raise ValueError(f"tile must be 'auto' or a number of pixels, not {value!r}") from None
    if tile <= 0:
        raise ValueError(f"tile must be positive, not {tile}")
    return tile


def make_plan(
    descriptor: ImageModelDescriptor,
    device: torch.device,
    *,
    tile: str | int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    precision: str = "auto",
    batch: int | None = 1,
    fixed_shape: bool = False,
    autocast: bool = False,
    image_width: int | None = None,
) -> Plan:
    """`batch=None` plans the number of tiles per forward pass from free memory."""
    rules = size_rules(descriptor)
    dtype = choose_precision(descriptor, device, precision, autocast)
    chosen = parse_tile(tile)
    rows = None
    if chosen is None:
        chosen = auto_tile_size(descriptor, device, dtype)
        if image_width is not None:
            rows = band_limited_tile(descriptor, image_width, max(0, overlap))
            rows = on_multiple(rows, rules.multiple) if rows < chosen else None
        if rows is not None and device.type == "cpu":
            # On a CPU the tile's activations share host memory with the band: keep the
            # short tiles at most twice as wide as high.
            chosen = min(chosen, CPU_TILE_ASPECT * rows)
    plan = Plan(
        device=device,
        dtype=dtype,
        tile=on_multiple(chosen, rules.multiple),
        overlap=max(0, overlap),
        rules=rules,
        tile_rows=rows,
        fixed_shape=fixed_shape,
        autocast=autocast,
    )
    if batch is None:
        batch = tiles_per_batch(descriptor, device, dtype, plan.crop_shape)
    return dataclasses.replace(plan, batch=max(1, batch))
