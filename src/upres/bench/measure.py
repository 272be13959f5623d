"""Time the reference ("stock") path and the fast path of each model in the same run.

Stock is what ComfyUI and chaiNNer do: the spandrel module as loaded, fp32, 256-px tiles one
at a time. Fast is upres's default: accelerated modules, the planned precision, tile size
and batch. Both run through the same tiler on the same image, so the ratio is the engine's.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch
from spandrel import ImageModelDescriptor, ModelLoader
from torch.utils.flop_counter import FlopCounterMode

from upres.api import Upscaler
from upres.bench.models import BenchModel
from upres.models.loader import LoadedModel

STOCK_TILE = 256
FLOP_COUNT_SIDE = 32  # FLOPs per pixel are counted on a small input (windowed models: linear)


@dataclass
class PathResult:
    mpx_s: float
    seconds: float
    peak_mem_mb: float
    precision: str
    tile: int
    batch: int


@dataclass
class ModelResult:
    name: str
    params_m: float
    flops_per_px: float
    stock: PathResult
    fast: PathResult
    agreement_db: float  # PSNR between the two paths' outputs
    fraction_of_peak: float  # fast path's achieved FLOP/s over the device's measured peak

    @property
    def speedup(self) -> float:
        return self.fast.mpx_s / self.stock.mpx_s

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "stock_mpx_s": self.stock.mpx_s,
            "fast_mpx_s": self.fast.mpx_s,
            "speedup": self.speedup,
            "peak_mem_mb": self.fast.peak_mem_mb,
            "stock_peak_mem_mb": self.stock.peak_mem_mb,
            "fast_precision": self.fast.precision,
            "fast_tile": self.fast.tile,
            "fast_batch": self.fast.batch,
            "params_m": self.params_m,
            "flops_per_px": self.flops_per_px,
            "agreement_db": self.agreement_db,
            "fraction_of_peak": self.fraction_of_peak,
        }


@dataclass
class BenchReport:
    device: str
    device_name: str
    threads: int
    size: tuple[int, int]
    quick: bool
    peak_tflops: dict[str, float] = field(default_factory=dict)
    models: list[ModelResult] = field(default_factory=list)
    native_attention: str | None = None  # on a CPU: DAT's fused kernel (engine/fast/native)

    def to_json(self) -> dict:
        return {
            "native_attention": self.native_attention,
            "device": self.device,
            "device_name": self.device_name,
            "threads": self.threads,
            "input": list(self.size),
            "quick": self.quick,
            "peak_tflops": self.peak_tflops,
            "models": [m.to_json() for m in self.models],
        }


def bench_image(height: int, width: int) -> np.ndarray:
    """A deterministic photo-like test image: gradients, edges and fine texture."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, 0.5 + 0.4 * np.sin((x + y) / 9.0)], axis=2)
    texture = rng.normal(0, 0.05, (height, width, 3)).astype(np.float32)
    return np.clip(base * 0.8 + 0.1 + texture, 0, 1).astype(np.float32)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {psutil.cpu_count(logical=False) or '?'} cores"


def gemm_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """The device's compute-bound limit as measured: a large square matmul in `dtype`,
    after a warm-up (AMX and cuBLAS set themselves up on first use), best of 6."""
    side_on_cpu = 2048 if dtype == torch.float32 else 4096  # fp32 is slow: a smaller one
    n = 8192 if device.type == "cuda" else side_on_cpu
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(6):
        synchronise(device)
        started = time.perf_counter()
        torch.matmul(a, b)
        synchronise(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e12


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def descriptor_from(network: torch.nn.Module) -> ImageModelDescriptor:
    descriptor = ModelLoader().load_from_state_dict(network.state_dict())
    assert isinstance(descriptor, ImageModelDescriptor)
    return descriptor


def flops_per_pixel(network: torch.nn.Module) -> float:
    side = FLOP_COUNT_SIDE
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(torch.rand(1, 3, side, side))
    return counter.get_total_flops() / side**2


class PeakMemory:
    """Peak memory while a block runs: allocated device memory on CUDA; on a CPU the
    process's peak resident size (Python, torch and the model included)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        process = psutil.Process()

        def sample() -> None:
            peak = process.memory_info().rss
            while not self._stop.wait(0.005):
                peak = max(peak, process.memory_info().rss)
            self.peak_mb = peak / 1e6

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 1e6
            return
        self._stop.set()
        self._thread.join()


def time_path(upscaler: Upscaler, image: np.ndarray, repeats: int) -> tuple[PathResult, np.ndarray]:
    upscaler(image)  # warm-up at the same size: kernels chosen, caches filled
    best, output = math.inf, None
    with PeakMemory(upscaler.device) as memory:
        for _ in range(repeats):
            started = time.perf_counter()
            output = upscaler(image)
            best = min(best, time.perf_counter() - started)
    height, width = image.shape[:2]
    plan = upscaler._plan(upscaler.tile, image_width=width)  # the plan the runs used
    result = PathResult(
        mpx_s=height * width / 1e6 / best,
        seconds=best,
        peak_mem_mb=memory.peak_mb,
        precision=str(upscaler.dtype).removeprefix("torch."),
        tile=min(plan.tile, max(height, width)),
        batch=plan.batch,
    )
    return result, output


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - other) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def bench_model(
    spec: BenchModel, device: torch.device, image: np.ndarray, repeats: int, peak: dict
) -> ModelResult:
    torch.manual_seed(0)
    network = spec.build().eval()
    params = sum(p.numel() for p in network.parameters()) / 1e6
    flops = flops_per_pixel(network)

    def loaded() -> LoadedModel:  # a fresh module per path: the fast path swaps classes
        return LoadedModel(descriptor_from(network), spec.name, None, Path("random-weights"))

    stock = Upscaler(loaded(), device=str(device), precision="fp32", tile=STOCK_TILE, fast=False)
    stock_result, stock_output = time_path(stock, image, repeats)
    del stock
    gc.collect()  # the stock model's memory must not count against the fast path
    fast = Upscaler(loaded(), device=str(device), fast=True)
    fast_result, fast_output = time_path(fast, image, repeats)
    del fast
    dtype = fast_result.precision
    if dtype not in peak:
        peak[dtype] = gemm_peak_tflops(device, getattr(torch, dtype))
    achieved = fast_result.mpx_s * 1e6 * flops / 1e12
    return ModelResult(
        name=spec.name,
        params_m=params,
        flops_per_px=flops,
        stock=stock_result,
        fast=fast_result,
        agreement_db=psnr(stock_output, fast_output),
        fraction_of_peak=achieved / peak[dtype],
    )
