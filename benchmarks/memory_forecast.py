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
    ("realesr-animevideov3-x4", "Compact", 3000, 400),
    ("realesr-animevideov3-x4", "Compact", 2048, 1536),
    ("realesrgan-x4plus", "ESRGAN", 128, 128),
    ("realesrgan-x4plus", "ESRGAN", 384, 288),
    ("realesrgan-x4plus", "ESRGAN", 512, 384),
    ("realesrgan-x4plus", "ESRGAN", 800, 600),
]
QUICK = [POINTS[0], POINTS[2], POINTS[5], POINTS[6]]
CALIBRATE = """
import sys, torch, upres
from upres.engine.forecast import resident_bytes
torch.set_num_threads(int(sys.argv[3]))
model = upres.load(sys.argv[1], device="cpu")
network = model._model_for(model.dtype)
side = int(sys.argv[2])
with torch.inference_mode():
    network(torch.rand(1, 3, 64, 64))  # kernels and thread pools load on the first pass
    crop = torch.rand(1, 3, side, side)
    before = resident_bytes()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # restart the peak (VmHWM) from the current size
    output = network(crop)
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(peak - before - output.numel() * 4)
"""


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


def calibrate(threads: int) -> None:
    """Activation bytes of one forward pass at two crop sizes, per model: the slope is the
    per-pixel figure and the intercept the fixed part in engine/forecast.py (Linux only)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for model in dict.fromkeys(point[0] for point in POINTS):
        sizes = {}
        for side in (256, 512):
            command = [sys.executable, "-c", CALIBRATE, model, str(side), str(threads)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            sizes[side] = int(done.stdout.split()[-1])
        slope = (sizes[512] - sizes[256]) / (512**2 - 256**2)
        fixed = sizes[256] - slope * 256**2
        print(f"{model}: {slope:,.0f} B per crop pixel at scale 4, fixed {fixed / MB:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four points instead of eight")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--family", help="only this family's points (Compact, ESRGAN)")
    parser.add_argument(
        "--calibrate", action="store_true", help="measure one forward pass's activations"
    )
    args = parser.parse_args()
    if args.calibrate:
        calibrate(args.threads)
        return
    points = QUICK if args.quick else POINTS
    points = [point for point in points if args.family in (None, point[1])]
    print("| model | family | input | tile | tiles | forecast | measured peak | ratio | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst_low, worst_high = float("inf"), 0.0
    with tempfile.TemporaryDirectory() as name:
        for model, family, width, height in points:
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
