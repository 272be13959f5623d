"""DAT-light x4 with its fused native attention kernel against torch's path, side by side.

    PYTHONPATH=src python benchmarks/dat_native.py [--sizes 64 128] [--rounds 4] [--threads 2]

One process, the bench's DAT-light (random weights) on `upres bench`'s image, one tile,
rounds interleaved (native, torch, native, torch...; the first round is a warm-up), best of
the rounds in ms per call, for the default precision and fp32. Only the spatial attention's
kernel differs between the two columns (engine/fast/native against windows.py's slices);
the last column is the two outputs' PSNR (float images, peak 1).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from upres.api import Upscaler  # noqa: E402
from upres.bench.measure import bench_image, descriptor_from, psnr  # noqa: E402
from upres.bench.models import select  # noqa: E402
from upres.engine.allocator import keep_freed_memory  # noqa: E402
from upres.engine.fast import native  # noqa: E402
from upres.models.loader import LoadedModel  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    if native.library() is None:
        sys.exit(f"the native kernel is not available here: {native.state()}")
    torch.manual_seed(0)
    network = select(["DAT"])[0].build().eval()
    supports = native.supports
    print(f"torch {torch.__version__}, {args.threads} threads; ms per call, best of {args.rounds}")
    print("| input | precision | native kernel | torch's path | native / torch | PSNR |")
    print("|---|---|---:|---:|---:|---:|")
    for side in args.sizes:
        image = bench_image(side, side)
        for precision in ("auto", "fp32"):
            model = LoadedModel(descriptor_from(network), "DAT-light x4", None, Path("random"))
            upscaler = Upscaler(model, device="cpu", precision=precision, tile=side, tile_overlap=0)
            best = {"native": math.inf, "torch": math.inf}
            outputs = {}
            for round_ in range(args.rounds + 1):
                for path in best:
                    native.supports = supports if path == "native" else (lambda *a: False)
                    started = time.perf_counter()
                    outputs[path] = upscaler(image)
                    if round_:  # round 0 warms both up
                        best[path] = min(best[path], time.perf_counter() - started)
            native.supports = supports
            dtype = str(upscaler.dtype).removeprefix("torch.")
            ratio = best["native"] / best["torch"]
            agree = psnr(np.asarray(outputs["native"]), np.asarray(outputs["torch"]))
            print(
                f"| {side} px | {dtype} | {best['native'] * 1000:.1f} | {best['torch'] * 1000:.1f}"
                f" | {ratio:.2f} | {agree:.1f} dB |"
            )


if __name__ == "__main__":
    main()
