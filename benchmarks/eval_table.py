"""Markdown table of PSNR/SSIM on Set5, Set14 and B100 next to published numbers.

    PYTHONPATH=src python benchmarks/eval_table.py                       # bicubic x2, x3, x4
    PYTHONPATH=src python benchmarks/eval_table.py --models bicubic realesrgan-x4plus

Each model runs at its own scale (bicubic at every --bicubic-scales). Scores follow SwinIR's
Python protocol; for sets with single-channel files (Set14's bridge) a second row scores them
the MATLAB way (--matlab-grey), which is how the published bicubic rows were computed. Every
row carries the `upres eval` command that reproduces it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    from upres.metrics import evaluate, resolve_dataset
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from upres.metrics import evaluate, resolve_dataset
from upres.metrics.datasets import is_greyscale_file

DEFAULT_DATASETS = ("Set5", "Set14", "B100")

# (model, dataset, scale) -> (PSNR-Y, SSIM-Y). Only numbers we are sure of: the bicubic rows
# repeated in EDSR, RCAN, SwinIR, HAT and DAT papers, and DAT-light's own Set5 rows.
PUBLISHED: dict[tuple[str, str, int], tuple[float, float]] = {
    ("bicubic", "Set5", 2): (33.66, 0.9299),
    ("bicubic", "Set5", 3): (30.39, 0.8682),
    ("bicubic", "Set5", 4): (28.42, 0.8104),
    ("bicubic", "Set14", 2): (30.24, 0.8688),
    ("bicubic", "Set14", 3): (27.55, 0.7742),
    ("bicubic", "Set14", 4): (26.00, 0.7027),
    ("bicubic", "B100", 2): (29.56, 0.8431),
    ("bicubic", "B100", 3): (27.21, 0.7385),
    ("bicubic", "B100", 4): (25.96, 0.6675),
    # DAT paper (Chen et al., ICCV 2023), lightweight SR table.
    ("dat-light-x2", "Set5", 2): (38.24, 0.9614),
    ("dat-light-x4", "Set5", 4): (32.57, 0.8991),
}


@dataclass
class Row:
    model: str
    dataset: str
    scale: int
    psnr_y: float
    ssim_y: float
    seconds: float
    command: str


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["bicubic"], help="bicubic and/or model names"
    )
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    parser.add_argument("--bicubic-scales", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--machine", default=f"{os.cpu_count()}-core CPU", help="for the header")
    return parser.parse_args()


def eval_command(
    model: str, dataset: str, scale: int | None, device: str, matlab_grey: bool
) -> str:
    words = ["upres", "eval", "-m", model, "--dataset", dataset]
    if scale is not None:
        words += ["--scale", str(scale)]
    if device != "auto":
        words += ["--device", device]
    if matlab_grey:
        words.append("--matlab-grey")
    return shlex.join(words)


def has_grey_files(dataset: str) -> bool:
    return any(is_greyscale_file(path) for path in resolve_dataset(dataset).images())


def run_one(model: str, dataset: str, scale: int | None, device: str, matlab_grey: bool) -> Row:
    result = evaluate(model, dataset, scale=scale, device=device, matlab_grey=matlab_grey)
    return Row(
        model=model,
        dataset=result.dataset,
        scale=result.spec.scale,
        psnr_y=result.mean["psnr_y"],
        ssim_y=result.mean["ssim_y"],
        seconds=result.seconds,
        command=eval_command(model, dataset, scale, device, matlab_grey),
    )


def collect(args: argparse.Namespace) -> list[Row]:
    rows = []
    for model in args.models:
        scales = args.bicubic_scales if model == "bicubic" else [None]
        for dataset in args.datasets:
            protocols = [False, True] if has_grey_files(dataset) else [False]
            for scale in scales:
                for matlab_grey in protocols:
                    rows.append(run_one(model, dataset, scale, args.device, matlab_grey))
                    # Each row as it lands, so a long run interrupted keeps what it measured.
                    print(markdown_row(rows[-1]), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[Row]) -> str:
    header = (
        "| model | set | scale | PSNR-Y | SSIM-Y | published PSNR-Y / SSIM-Y | ΔPSNR-Y"
        " | seconds | command |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---|"
    )
    return "\n".join([header, *(markdown_row(row) for row in rows)])


def markdown_row(row: Row) -> str:
    published = PUBLISHED.get((row.model, row.dataset, row.scale))
    reference = f"{published[0]:.2f} / {published[1]:.4f}" if published else ""
    delta = f"{row.psnr_y - published[0]:+.3f}" if published else ""
    return (
        f"| {row.model} | {row.dataset} | x{row.scale} | {row.psnr_y:.3f} | {row.ssim_y:.4f}"
        f" | {reference} | {delta} | {row.seconds:.1f} | `{row.command}` |"
    )


def main() -> None:
    args = parse_args()
    rows = collect(args)
    command = shlex.join(["python", "benchmarks/eval_table.py", *sys.argv[1:]])
    print(f"Date: {datetime.date.today().isoformat()}; machine: {args.machine}")
    print(f"Command: `PYTHONPATH=src {command}`\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
