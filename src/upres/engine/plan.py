"""The planner decides: device, precision and tile size, from the model and free memory.

The runner (run.py) obeys the plan and only shrinks a tile when memory runs out anyway.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import weakref
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
PRECISION_NAMES = {dtype: name for name, dtype in DTYPES.items()}

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
# A model with global operations that has to be tiled gets this many times the overlap: each
# tile then sees more of the image its statistics should be taken over.
GLOBAL_OVERLAP_FACTOR = 2

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

# Modules that compute over the whole input, found by class name (in the module's class
# hierarchy, so the fast path's subclasses count too); pooling to one pixel is caught below.
GLOBAL_MODULES = {
    "SEBlock": "squeeze-excitation averages over the whole input",  # Real-CUGAN
    "Adaptive_Channel_Attention": "channel attention over the whole input",  # DAT
}
GLOBAL_POOLING = "channel attention pools over the whole input"  # HAT, RCAN, ...


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
    # One tile covers the image (known only when the plan was made for an image's size).
    whole_image: bool = False
    global_operation: str | None = None  # what in the model depends on the whole input
    why: str = ""  # how the tile was chosen, in words, for reports

    def summary(self) -> dict[str, object]:
        """How the image was tiled, for reports and --json."""
        return {
            "tile": self.tile,
            "tile_rows": self.tile_rows,
            "overlap": self.overlap,
            "whole_image": self.whole_image,
            "global_operation": self.global_operation,
            "why": self.why,
        }

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


# bf16 dot products in hardware: AMX tiles (Intel Sapphire Rapids on) or AVX-512 BF16
# (Intel Cooper Lake, AMD Zen 4 on). On a 2-core Zen 4 without AMX the fast path ran
# 1.2-2.0x faster in bf16 than in fp32 on every family, at 52-67 dB from fp32.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bf16 dot products natively; without that, oneDNN converts
    to fp32 and gains nothing, so fp32 stays the CPU default."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as info:
            return any(
                line.startswith("flags") and not NATIVE_BF16_FLAGS.isdisjoint(line.split())
                for line in info
            )
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


def precision_reason(
    dtype: torch.dtype, device: torch.device, requested: str, autocast: bool
) -> str:
    """Why `choose_precision` gave `dtype`, in a few words for --dry-run and --json."""
    name = PRECISION_NAMES[dtype]
    if requested == "auto":
        requested = (setting("UPRES_PRECISION") or "auto").lower()
    if requested != "auto":
        how = "as asked" if name == requested else f"{requested} asked, not supported by the model"
        return f"{name}: {how}"
    if device.type != "cpu":
        return f"{name}: the model's best on {device.type}"
    if not autocast:
        return f"{name}: the reference path (--no-fast) runs in fp32"
    if dtype == torch.bfloat16:
        return f"{name}: this CPU computes bf16 natively (AMX or AVX-512 BF16)"
    if cpu_has_native_bf16():
        return f"{name}: the model does not support bf16"
    return f"{name}: this CPU has no native bf16 (no AMX or AVX-512 BF16)"


def size_rules(descriptor: ImageModelDescriptor) -> SizeRules:
    """Multiple and minimum side, including the attention window that Swin-family models pad to."""
    requirements = descriptor.size_requirements
    multiple = requirements.multiple_of
    window = getattr(descriptor.model, "window_size", None)
    if isinstance(window, int) and window > 1:
        multiple = math.lcm(multiple, window)
    minimum = max(requirements.minimum, multiple)
    return SizeRules(multiple=multiple, minimum=minimum)


def global_operation(descriptor: ImageModelDescriptor) -> str | None:
    """What in the network depends on the whole input (None when nothing does).

    Such a model gives a tile a different result than the whole image gives the same
    pixels, however wide the overlap: its statistics are taken over what it is shown.
    Found once per network (walking a transformer's modules takes milliseconds per plan).
    """
    network = descriptor.model
    if network not in _global_operations:
        _global_operations[network] = find_global_operation(network)
    return _global_operations[network]


_global_operations: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def find_global_operation(network: torch.nn.Module) -> str | None:
    modules = list(network.modules())
    for module in modules:
        for cls in type(module).__mro__:
            if cls.__name__ in GLOBAL_MODULES:
                return GLOBAL_MODULES[cls.__name__]
    pools = (torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d)
    for module in modules:
        if isinstance(module, pools) and module.output_size in (1, (1, 1)):
            return GLOBAL_POOLING
    return None


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


def whole_image_fits(
    descriptor: ImageModelDescriptor,
    device: torch.device,
    dtype: torch.dtype,
    height: int,
    width: int,
) -> bool:
    """Whether the image fits as one tile in the share of free memory a tile may use.

    Unlike the automatic tile this is not capped on a CPU: the cap keeps room for
    assembling huge outputs, and an image that is one tile has no blending band beyond
    its own output (which must stay within BAND_BYTES like any tile row).
    """
    m = size_rules(descriptor).multiple
    padded_height, padded_width = -(-height // m) * m, -(-width // m) * m
    activations = padded_height * padded_width * bytes_per_input_pixel(descriptor, dtype)
    band_rows = band_limited_tile(descriptor, width, overlap=0)
    return activations <= free_memory_bytes(device) * MEMORY_SHARE and height <= band_rows


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
    image_height: int | None = None,
    prefer_whole: bool = False,
) -> Plan:
    """`batch=None` plans the number of tiles per forward pass from free memory.

    With an automatic tile and the image's size known, a model with global operations
    (or any model when `prefer_whole`, as evaluation asks) runs as one tile whenever the
    whole image fits in memory; a global model that does not fit gets a larger overlap.
    """
    graph_shape = getattr(descriptor.model, "fixed_input_shape", None)
    if graph_shape is not None:  # an ONNX graph with fixed sides: every crop is that shape
        return fixed_graph_plan(descriptor, device, graph_shape, overlap)
    rules = size_rules(descriptor)
    dtype = choose_precision(descriptor, device, precision, autocast)
    chosen = parse_tile(tile)
    found = global_operation(descriptor)
    overlap = max(0, overlap)
    size_known = image_width is not None and image_height is not None
    why = f"{chosen}-px tiles as asked" if chosen is not None else "tile planned from free memory"
    rows = None
    if chosen is None and size_known and (found or prefer_whole):
        assert image_width is not None and image_height is not None
        reason = found or "whole image asked for"
        if whole_image_fits(descriptor, device, dtype, image_height, image_width):
            side = max(image_height, image_width)
            chosen = -(-side // rules.multiple) * rules.multiple
            why = f"one tile: {reason}, and the whole image fits in memory"
        elif found:
            overlap *= GLOBAL_OVERLAP_FACTOR
            why = (
                f"tiled with a {GLOBAL_OVERLAP_FACTOR}x overlap ({overlap} px): {found}, and"
                " the whole image does not fit in memory, so the result differs slightly"
                " from the whole-image one"
            )
        else:
            why = "tiled: the whole image does not fit in memory"
    if chosen is None:
        chosen = auto_tile_size(descriptor, device, dtype)
        if image_width is not None:
            rows = band_limited_tile(descriptor, image_width, overlap)
            rows = on_multiple(rows, rules.multiple) if rows < chosen else None
        if rows is not None and device.type == "cpu":
            # On a CPU the tile's activations share host memory with the band: keep the
            # short tiles at most twice as wide as high.
            chosen = min(chosen, CPU_TILE_ASPECT * rows)
    core = on_multiple(chosen, rules.multiple)
    whole = size_known and core >= max(image_width or 0, image_height or 0)
    whole = whole and (rows is None or rows >= (image_height or 0))
    if found and parse_tile(tile) is not None and not whole:
        why += f"; {found}, so the result differs slightly from the whole-image one"
    plan = Plan(
        device=device,
        dtype=dtype,
        tile=core,
        overlap=overlap,
        rules=rules,
        tile_rows=rows,
        fixed_shape=fixed_shape,
        autocast=autocast,
        whole_image=whole,
        global_operation=found,
        why=why,
    )
    if batch is None:
        batch = tiles_per_batch(descriptor, device, dtype, plan.crop_shape)
    return dataclasses.replace(plan, batch=max(1, batch))


def fixed_graph_plan(
    descriptor: ImageModelDescriptor,
    device: torch.device,
    shape: tuple[int, int],
    overlap: int = DEFAULT_OVERLAP,
) -> Plan:
    """Crops of exactly the graph's (height, width), as --compile pads to one shape; the
    context shrinks on small graphs so that each crop keeps at least half its side as core."""
    overlap = max(0, min(overlap, min(shape) // 4))
    tile_rows, tile = shape[0] - 2 * overlap, shape[1] - 2 * overlap
    return Plan(
        device=device,
        dtype=torch.float32,  # the graph computes in the precision it was saved in
        tile=tile,
        overlap=overlap,
        rules=SizeRules(multiple=1, minimum=1),
        tile_rows=tile_rows if tile_rows != tile else None,
        fixed_shape=True,
    )
