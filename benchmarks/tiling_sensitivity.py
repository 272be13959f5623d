"""How much tiling changes each offline model's output: tiled vs whole-image PSNR.

    PYTHONPATH=src python benchmarks/tiling_sensitivity.py                  # every offline model
    PYTHONPATH=src python benchmarks/tiling_sensitivity.py --models dat-light-x4 realcugan-se-x2
    PYTHONPATH=src python benchmarks/tiling_sensitivity.py --write benchmarks/RESULTS.md

Each model upscales a few real photos (centre crops of Kodak24 images) twice or more in one
process: once as a single tile covering the image (what the papers score) and once per
(tile, overlap) setting, all in fp32 on the CPU so that only tiling differs. The table gives
the PSNR between the tiled and the whole-image result (uint8, as written to disk; "identical"
when every pixel agrees) over all photos together, the worst photo's PSNR and the largest
pixel difference. A model with a global operation (a mean or attention over the whole input)
is marked: no overlap can make its tiles agree with the whole image.

`--write FILE` replaces this benchmark's section of FILE (from its heading to the next
``## `` heading) with the new table; without it the section is printed.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

import upres  # noqa: E402
from upres.engine.plan import global_operation  # noqa: E402
from upres.metrics.datasets import datasets_root  # noqa: E402
from upres.metrics.quality import psnr  # noqa: E402

HEADING = "## Tiling sensitivity (tiled vs whole-image output)"
DATE = "2026-11-30"
MACHINE = "2-core Xeon with AMX, 24 GB, no GPU, shared/busy"
# Every offline model: the architectures first (Real-CUGAN by one model per edition and
# scale), then the remaining Real-CUGAN strengths, so an interrupted run has the most kinds.
CUGAN_FIRST = ("se-x2", "pro-x2", "se-x3", "pro-x3", "se-x4")
CUGAN_REST = (
    *(f"se-x2-{strength}" for strength in ("conservative", "denoise1x", "denoise2x", "denoise3x")),
    *(
        f"{model}-{strength}"
        for model in CUGAN_FIRST[2:]
        for strength in ("conservative", "denoise3x")
    ),
    *(f"pro-x2-{strength}" for strength in ("conservative", "denoise3x")),
)
OFFLINE_MODELS = (
    "realesr-animevideov3-x4",
    *(f"realcugan-{model}" for model in CUGAN_FIRST),
    "dat-light-x2",
    "dat-light-x3",
    "dat-light-x4",
    "realesrgan-x4plus-anime",
    "realesrgan-x4plus",
    "realsr-df2k-x4",
    *(f"realcugan-{model}" for model in CUGAN_REST),
)
PHOTOS = ("kodim05", "kodim23")  # motorbikes, parrots
CROP = 192
# A 192-pixel side is cut into two 96-pixel cores by every tile from 96 to 191 px, as this
# CPU's automatic tile for DAT-light x4 (189 px) cuts it.
TILE = 128
OVERLAPS = (32, 64)  # the default overlap, and the larger one the planner gives global models
WHOLE = 4096  # a tile larger than any crop: one tile covers the image


@dataclass
class Setting:
    tile: int
    overlap: int

    @property
    def label(self) -> str:
        return f"tile {self.tile}, overlap {self.overlap}"


@dataclass
class Row:
    model: str
    architecture: str
    global_op: str
    mean_psnr: dict[str, float]
    worst_psnr: dict[str, float]
    max_diff: dict[str, int]
    whole_seconds: float


def photos(crop: int) -> list[np.ndarray]:
    root = datasets_root()
    if root is None:
        raise SystemExit("benchmark datasets not found (set UPRES_DATASETS)")
    images = []
    for stem in PHOTOS:
        with Image.open(root / "Kodak24" / f"{stem}.png") as image:
            rgb = np.asarray(image.convert("RGB"))
        top, left = (rgb.shape[0] - crop) // 2, (rgb.shape[1] - crop) // 2
        images.append(np.ascontiguousarray(rgb[top : top + crop, left : left + crop]))
    return images


def run(upscaler: upres.Upscaler, image: np.ndarray, setting: Setting) -> np.ndarray:
    # One loaded model serves every setting; tile and overlap are read per call.
    upscaler.tile, upscaler.tile_overlap = setting.tile, setting.overlap
    return np.asarray(upscaler(image))


def measure(model: str, images: list[np.ndarray], settings: list[Setting]) -> Row:
    upscaler = upres.load(model, device="cpu", precision="fp32")
    assert isinstance(upscaler, upres.Upscaler)
    wholes, seconds = [], 0.0
    for image in images:
        started = time.perf_counter()
        wholes.append(run(upscaler, image, Setting(WHOLE, 0)))
        seconds += time.perf_counter() - started
    pooled, worsts, diffs = {}, {}, {}
    for setting in settings:
        scores, squared, largest = [], [], 0
        for image, whole in zip(images, wholes, strict=True):
            tiled = run(upscaler, image, setting)
            scores.append(psnr(tiled, whole))
            difference = tiled.astype(np.int64) - whole.astype(np.int64)
            squared.append(float(np.mean(difference.astype(np.float64) ** 2)))
            largest = max(largest, int(np.abs(difference).max()))
        mse = float(np.mean(squared))  # the photos are the same size
        pooled[setting.label] = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
        worsts[setting.label] = min(scores)
        diffs[setting.label] = largest
    found = global_operation(upscaler.model.descriptor)
    return Row(
        model=model,
        architecture=upscaler.model.descriptor.architecture.name,
        global_op=found or "",
        mean_psnr=pooled,
        worst_psnr=worsts,
        max_diff=diffs,
        whole_seconds=seconds / len(images),
    )


def decibels(value: float) -> str:
    return "identical" if math.isinf(value) else f"{value:.2f}"


def markdown_row(row: Row, settings: list[Setting]) -> str:
    cells = [row.model, row.architecture, row.global_op or "no"]
    for setting in settings:
        label = setting.label
        cells.append(
            f"{decibels(row.mean_psnr[label])} / {decibels(row.worst_psnr[label])}"
            f" / {row.max_diff[label]}"
        )
    cells.append(f"{row.whole_seconds:.1f}")
    return "| " + " | ".join(cells) + " |"


def section(rows: list[Row], settings: list[Setting], command: str) -> str:
    columns = " | ".join(f"{s.label}: PSNR / worst photo (dB) / max diff" for s in settings)
    lines = [
        HEADING,
        "",
        f"Date: {DATE}; machine: {MACHINE}.",
        f"Command: `{command}`",
        "",
        f"Inputs: centre {CROP}x{CROP} crops of Kodak24 {', '.join(PHOTOS)} (real photos). Each"
        f" model runs them whole (one tile) and tiled with {TILE}-px tiles, which cut a"
        f" {CROP}-px side into two 96-px cores exactly as this CPU's automatic tile for"
        " DAT-light x4 (189 px) does, at the default overlap (32) and at 64, in fp32 on"
        " the CPU. PSNR is between the tiled and the whole-image output (uint8, all"
        " channels, over all photos; then the worst photo's); max diff is in grey levels."
        " Higher is less sensitive; 'identical' means every pixel agrees.",
        "",
        f"| model | architecture | global operation | {columns} | s per photo, whole |",
        "|---|---|---|" + "---:|" * len(settings) + "---:|",
        *(markdown_row(row, settings) for row in rows),
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of `path` (or append it) and leave the rest alone."""
    lines = path.read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == HEADING]
    if not starts:
        path.write_text("".join(lines).rstrip("\n") + "\n\n" + text)
        return
    start = starts[0]
    stop = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = "".join(lines[stop:])
    path.write_text("".join(lines[:start]) + text + ("\n" + tail if tail else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(OFFLINE_MODELS))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--write", type=Path, help="put the section into this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = [Setting(TILE, overlap) for overlap in OVERLAPS]
    images = photos(CROP)
    command = shlex.join(["python", "benchmarks/tiling_sensitivity.py", *sys.argv[1:]])
    rows = []
    for model in args.models:
        rows.append(measure(model, images, settings))
        # Each row as it lands, so an interrupted run keeps what it measured.
        print(markdown_row(rows[-1], settings), file=sys.stderr, flush=True)
        if args.write is not None:
            write_section(args.write, section(rows, settings, f"PYTHONPATH=src {command}"))
    print(section(rows, settings, f"PYTHONPATH=src {command}"))


if __name__ == "__main__":
    main()
