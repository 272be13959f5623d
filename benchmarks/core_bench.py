"""Core engine figures: default-model CPU time, and tiled-vs-whole agreement.

    PYTHONPATH=src python benchmarks/core_bench.py [--repeats 3] [--device cpu]

Prints one markdown table; every figure comes from this run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny real-architecture builders live there

import upres  # noqa: E402
from conftest import DATASETS, descriptor_of, tiny_compact, tiny_swinir  # noqa: E402
from upres.engine.plan import make_plan  # noqa: E402
from upres.engine.run import TileRunner  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def photo_crop(size: int) -> np.ndarray:
    with PILImage.open(DATASETS / "Set14" / "HR" / "comic.png") as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return np.ascontiguousarray(array[:size, :size])


def run_engine(descriptor, pixels, tile, overlap=32, device="cpu"):
    plan = make_plan(descriptor, torch.device(device), tile=tile, overlap=overlap, precision="fp32")
    network = descriptor.model.to(device)
    return TileRunner(descriptor, plan, lambda dtype: network).run(pixels, np.dtype(np.float32))


def agreement(name: str, descriptor, pixels, tile, overlap) -> str:
    whole = run_engine(descriptor, pixels, tile=100_000)
    tiled = run_engine(descriptor, pixels, tile=tile, overlap=overlap)
    whole8 = np.rint(whole * 255).astype(int)
    tiled8 = np.rint(tiled * 255).astype(int)
    size = f"{pixels.shape[1]}x{pixels.shape[0]}"
    return (
        f"| {name} | {size} | {tile} / {overlap} | {psnr(whole, tiled):.2f} |"
        f" {np.abs(whole8 - tiled8).max()} | {np.mean(whole8 != tiled8) * 100:.3f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    upscaler = upres.load(device=args.device)
    pixels = (photo_crop(128) * 255).round().astype(np.uint8)
    upscaler(pixels)  # warm-up
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        upscaler(pixels)
        seconds.append(time.perf_counter() - started)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print()
    print("| model | input | runs | min s | median s | max s |")
    print("|---|---|---:|---:|---:|---:|")
    print(
        f"| {upscaler.name} (x4, fp32) | 128x128 | {args.repeats} | {min(seconds):.2f} |"
        f" {statistics.median(seconds):.2f} | {max(seconds):.2f} |"
    )
    print()
    print(
        "| model | input | tile / overlap | PSNR tiled vs whole (dB) | max diff (of 255) |"
        " pixels that differ |"
    )
    print("|---|---|---|---:|---:|---:|")
    image = photo_crop(256)
    print(
        agreement(
            "tiny Compact x2 (random init, receptive radius 6)",
            descriptor_of(tiny_compact()),
            image,
            64,
            16,
        )
    )
    print(
        agreement(
            "tiny SwinIR x2 (random init, window 8)", descriptor_of(tiny_swinir()), image, 64, 32
        )
    )
    print(
        agreement(
            "realesrgan-x4plus (pretrained)", upscaler.model.descriptor, image[:160, :160], 64, 32
        )
    )


if __name__ == "__main__":
    main()
