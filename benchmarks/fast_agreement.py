"""Does the fast path compute the reference's image? Real checkpoints, real photo crop.

    PYTHONPATH=src python benchmarks/fast_agreement.py [MODEL ...]

For each model: the reference path (the checkpoint's own modules, fp32) against the fast
path in fp32 and in bf16, PSNR on float outputs in [0, 1] (target: >= 80 dB in fp32, >= 50
dB in bf16/fp16), and the CPU time of each, one warm-up then the best of 2 runs.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import upres  # noqa: E402

COMIC = ROOT.parent / "shared" / "datasets" / "Set14" / "HR" / "comic.png"
DEFAULT_MODELS = ["realesrgan-x4plus", "realesr-animevideov3-x4", "dat-light-x4", "realcugan-se-x2"]


def timed(upscaler, image: np.ndarray) -> tuple[np.ndarray, float]:
    upscaler(image)
    best, out = math.inf, image
    for _ in range(2):
        started = time.perf_counter()
        out = upscaler(image)
        best = min(best, time.perf_counter() - started)
    return out.astype(np.float64), best


def main() -> None:
    models = sys.argv[1:] or DEFAULT_MODELS
    with PILImage.open(COMIC) as image:
        crop = np.asarray(image.convert("RGB"), dtype=np.float32)[:96, :96] / 255
    print("| model | path | seconds | speedup | PSNR vs reference fp32 (dB) |")
    print("|---|---|---:|---:|---:|")
    for name in models:
        reference, ref_s = timed(upres.load(name, device="cpu", precision="fp32", fast=False), crop)
        print(f"| {name} | reference fp32 | {ref_s:.2f} | 1.00x | - |")
        for precision in ("fp32", "bf16"):
            upscaler = upres.load(name, device="cpu", precision=precision)
            out, seconds = timed(upscaler, crop)
            mse = float(np.mean((out - reference) ** 2))
            db = math.inf if mse == 0 else 10 * math.log10(1 / mse)
            dtype = str(upscaler.dtype).removeprefix("torch.")
            print(f"| {name} | fast {dtype} | {seconds:.2f} | {ref_s / seconds:.2f}x | {db:.1f} |")


if __name__ == "__main__":
    main()
