"""Peak host memory to upscale a 4000x3000 image x4 with a Compact model, end to end.

    PYTHONPATH=src python benchmarks/memory_4k.py [--model realesr-animevideov3-x4]

Runs `upres upscale` in a child process (decode, plan, infer, assemble, PNG encode) and
reads the child's peak resident size from the kernel. The target is twice the output's
size plus 1 GB; the ratio printed is peak / target (below 1 passes).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from upres.bench.measure import bench_image  # noqa: E402

MB = 1024 * 1024
PILImage.MAX_IMAGE_PIXELS = None  # the 192-megapixel result is ours, not a decompression bomb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesr-animevideov3-x4", help="a Compact model")
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        source, result = Path(folder) / "in.png", Path(folder) / "out.png"
        pixels = (bench_image(args.height, args.width) * 255).round().astype(np.uint8)
        PILImage.fromarray(pixels).save(source, compress_level=1)
        del pixels
        command = [
            sys.executable, "-c", "from upres.cli.main import run; run()",
            "upscale", str(source), "-o", str(result), "-m", args.model,
            "--device", args.device,
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(
            command,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
        with PILImage.open(result) as written:
            width, height = written.size
        output_bytes = width * height * 3
    target = 2 * output_bytes + 1024 * MB
    print(f"| {args.model} | {args.width}x{args.height} -> {width}x{height} | "
          f"{output_bytes / MB:.0f} MB | {peak / MB:.0f} MB | {target / MB:.0f} MB | "
          f"{peak / target:.2f} | {seconds:.0f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
