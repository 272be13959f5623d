"""The memory forecast against the measured peak, over image sizes and model families.

    PYTHONPATH=src python benchmarks/memory_forecast.py [--quick] [--threads 2]

Each point is a fresh `upres upscale --json` process (decode, plan, infer, assemble, PNG
encode) on a real photo resized to the point's size. The forecast is the one the run
printed in its JSON before it ran; the measured peak is the child's peak resident size as
the kernel reports it (os.wait4). The forecast passes when it is never below the measured
peak and at most 1.5x above it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The training photos live in ../shared/train beside the checkout (or $UPRES_TRAIN).
TRAIN = [ROOT.parent / "shared" / "train", ROOT.parent.parent / "shared" / "train"]
PHOTOS = Path(os.environ.get("UPRES_TRAIN", next((p for p in TRAIN if p.is_dir()), TRAIN[0])))
PHOTOS = PHOTOS / "photos"
MB = 1024 * 1024

# (model, family, width, height): both families from small to tile-saturating sizes, and
# a wide image whose tiles are band-limited.
POINTS = [
    ("realesr-animevideov3-x4", "Compact", 128, 128),
    ("realesr-animevideov3-x4", "Compact", 640, 480),
    ("realesr-animevideov3-x4", "Compact", 1280, 960),
    ("realesr-animevideov3-x4", "Compact", 2048, 1536),
    ("realesr-animevideov3-x4", "Compact", 3000, 400),
    ("realesrgan-x4plus", "ESRGAN", 128, 128),
    ("realesrgan-x4plus", "ESRGAN", 512, 384),
    ("realesrgan-x4plus", "ESRGAN", 800, 600),
]
QUICK = [POINTS[0], POINTS[2], POINTS[5], POINTS[6]]


def photo(width: int, height: int) -> np.ndarray:
    """A real photo (not noise: PNG encoding and nothing else depends on content) at this size."""
    source = sorted(PHOTOS.glob("*.jpg"))[0]
    pixels = cv2.imread(str(source), cv2.IMREAD_COLOR)
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)


def measure(model: str, width: int, height: int, threads: int, folder: Path) -> dict:
    """One fresh process: its JSON row and its peak resident size."""
    source, result = folder / f"in_{width}x{height}.png", folder / "out.png"
    cv2.imwrite(str(source), photo(width, height))
    command = [
        sys.executable, "-m", "upres", "upscale", str(source), "-o", str(result),
        "-m", model, "--device", "cpu", "--threads", str(threads), "--json", "--overwrite",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stdout = child.stdout.read() if child.stdout else b""
    _pid, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}")
    row = json.loads(stdout)["images"][0]
    return {
        "row": row,
        "peak": usage.ru_maxrss * 1024,  # KiB on Linux
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four points instead of eight")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("| model | family | input | tile | tiles | forecast | measured peak | ratio | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst_low, worst_high = float("inf"), 0.0
    with tempfile.TemporaryDirectory() as name:
        for model, family, width, height in QUICK if args.quick else POINTS:
            point = measure(model, width, height, args.threads, Path(name))
            plan = point["row"]["plan"]
            forecast = plan["forecast_peak_host_bytes"]
            ratio = forecast / point["peak"]
            worst_low, worst_high = min(worst_low, ratio), max(worst_high, ratio)
            tile = f"{plan['tile']}x{plan['tile_rows']}" if plan["tile_rows"] else plan["tile"]
            print(
                f"| {model} | {family} | {width}x{height} | {tile} | {plan['tiles']} |"
                f" {forecast / MB:,.0f} MB | {point['peak'] / MB:,.0f} MB | {ratio:.2f} |"
                f" {point['seconds']:.0f} s |",
                flush=True,
            )
    verdict = "PASS" if worst_low >= 1.0 and worst_high <= 1.5 else "FAIL"
    print(f"\nforecast / measured: {worst_low:.2f} .. {worst_high:.2f}", end=" ")
    print(f"(target 1.00 .. 1.50): {verdict}")


if __name__ == "__main__":
    main()
