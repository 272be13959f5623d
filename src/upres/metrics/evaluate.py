"""Run a model over a benchmark set and score it the way published tables do.

Per image: PSNR and SSIM on Y (BT.601, unrounded) and on all channels, plus PSNR-B for JPEG;
``scale`` pixels are cropped from each border for SR, none for denoise/jpeg. The means are plain
averages of the per-image values, as in the tables. For greyscale evaluation the "Y" and "RGB"
columns both score the single grey channel.

PSNR-B follows SwinIR's JPEG protocol: ``psnr_b`` on all channels (RGB for colour sets, which
is what the colour JPEG tables report; the grey channel for grey sets) and, for colour sets,
``psnr_b_y`` on Y as well.

Project models run each image whole (see ``runners``); the result records how each image was
tiled, the device, the precision, where each LR input came from and the library versions, so
that a table can be reproduced elsewhere.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from upres.metrics.crops import save_side_by_side
from upres.metrics.datasets import resolve_dataset
from upres.metrics.quality import psnr, psnr_b, ssim
from upres.metrics.runners import Restored, Runner, make_runner
from upres.metrics.tasks import (
    EvaluationError,
    ImagePair,
    TaskSpec,
    dataset_is_grey,
    load_pair,
    make_spec,
)

METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
JPEG_METRICS = ("psnr_b",)
COLOUR_JPEG_METRICS = ("psnr_b", "psnr_b_y")
VERSIONED = ("upres", "torch", "spandrel", "numpy", "opencv-python-headless", "opencv-python")


@dataclass
class ImageScore:
    name: str
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float
    psnr_b: float | None = None  # all channels (RGB, or the grey channel)
    psnr_b_y: float | None = None  # colour JPEG only: on Y
    lr_source: str = ""  # where the model's input came from
    # How the model ran on this image: None for one tile covering it (and for baselines),
    # else the tile and overlap it had to use.
    tiling: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


Progress = Callable[[int, int, ImageScore], None]  # (done, total, the image just scored)


@dataclass
class EvalResult:
    model: str
    dataset: str
    spec: TaskSpec
    rows: list[ImageScore] = field(default_factory=list)
    seconds: float = 0.0
    device: str | None = None
    precision: str | None = None
    architecture: str | None = None
    limit: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def metric_names(self) -> tuple[str, ...]:
        if self.spec.task != "jpeg":
            return METRICS
        return (*METRICS, *(JPEG_METRICS if self.spec.grey else COLOUR_JPEG_METRICS))

    @property
    def mean(self) -> dict[str, float]:
        """Average of each metric over the images."""
        return {
            metric: float(np.mean([getattr(row, metric) for row in self.rows]))
            for metric in self.metric_names
        }

    @property
    def whole_images(self) -> bool:
        """Every image ran as one tile (always true for the baselines)."""
        return all(row.tiling is None for row in self.rows)

    def lr_sources(self) -> dict[str, int]:
        """How many inputs came from each kind of source (shipped file, imresize, ...)."""
        counts: dict[str, int] = {}
        for row in self.rows:
            kind = "shipped LR file" if row.lr_source.startswith("shipped") else row.lr_source
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON form; infinite PSNRs (identical images) become null."""
        spec = self.spec
        return json_safe(
            {
                "model": self.model,
                "dataset": self.dataset,
                "scale": spec.scale,
                "task": spec.task,
                "sigma": spec.sigma,
                "quality": spec.quality,
                "grey": spec.grey,
                "matlab_grey": spec.matlab_grey,
                "crop_border": spec.crop_border,
                "limit": self.limit,
                "architecture": self.architecture,
                "device": self.device,
                "precision": self.precision,
                "whole_images": self.whole_images,
                "lr_sources": self.lr_sources(),
                "versions": versions(),
                "warnings": self.warnings,
                "mean": self.mean,
                "images": [row.as_dict() for row in self.rows],
                "seconds": round(self.seconds, 3),
            }
        )


def versions() -> dict[str, str]:
    """Python and the libraries a score depends on, as installed."""
    found = {"python": platform.python_version()}
    for package in VERSIONED:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def evaluate(
    model: str,
    dataset: str | Path,
    scale: int | None = None,
    task: str = "sr",
    sigma: float | None = None,
    quality: int | None = None,
    device: str = "auto",
    tile: int | None = None,
    save_crops: Path | None = None,
    grey: bool | None = None,
    matlab_grey: bool = False,
    progress: Progress | None = None,
    limit: int | None = None,
    save_images: Path | None = None,
) -> EvalResult:
    """Score ``model`` (a project model, ``bicubic`` or ``identity``) on ``dataset``.

    scale: SR factor; None takes the model's own. sigma (default 25) and quality (default 10)
    apply to denoise and jpeg. grey: None decides from the files (grey sets such as Set12,
    BSD68 and classic5 are evaluated in grey, colour sets in colour). matlab_grey (SR): score
    single-channel files of colour sets (Set14's bridge) on their grey values like the MATLAB
    scripts behind the published bicubic rows, instead of on Y of three equal channels.
    tile: None runs every image whole (one tile) where memory allows; a number forces tiles.
    limit: only the first ``limit`` images (by name). save_images: write each full output
    there as ``<image>_<tag>.png`` (e.g. ``baby_x4.png``); save_crops: side-by-side crops.
    """
    if limit is not None and limit < 1:
        raise EvaluationError(f"--limit must be 1 or more, not {limit}")
    bench = resolve_dataset(dataset)
    use_grey = dataset_is_grey(bench) if grey is None and task != "sr" else bool(grey)
    # Check the options before loading a model; SR's scale may come from the model itself.
    spec = None if task == "sr" else make_spec(task, scale, sigma, quality, use_grey, matlab_grey)
    runner = make_runner(model, task, scale, device=device, tile=tile)
    spec = spec or make_spec("sr", runner.scale, grey=use_grey, matlab_grey=matlab_grey)
    result = EvalResult(
        model=model,
        dataset=bench.name,
        spec=spec,
        device=runner.device,
        precision=runner.precision,
        architecture=runner.architecture,
        limit=limit,
    )

    started = time.perf_counter()
    paths = bench.images()[:limit]
    for done, path in enumerate(paths, start=1):
        pair = load_pair(bench, path, spec)
        restored = restore_checked(runner, pair)
        output = restored.pixels
        row = score(pair.name, output, pair.target, spec)
        row.lr_source = pair.lr_source
        if not restored.whole_image:
            row.tiling = tiled_entry(restored)
            result.warnings.append(f"{pair.name}: {row.tiling['why']}")
        result.rows.append(row)
        if save_images is not None:
            save_png(save_images / f"{pair.name}_{spec.tag}.png", output)
        if save_crops is not None:
            crop_name = f"{pair.name}_{spec.tag}"
            save_side_by_side(save_crops, crop_name, pair.degraded, output, pair.target, spec.scale)
        if progress is not None:
            progress(done, len(paths), row)
    result.seconds = time.perf_counter() - started
    return result


def tiled_entry(restored: Restored) -> dict[str, Any]:
    """The first model pass that did not cover the image with one tile."""
    entry = next(entry for entry in restored.tiling if not entry["whole_image"])
    return {key: entry[key] for key in ("tile", "tile_rows", "overlap", "why")}


def save_png(path: Path, pixels: np.ndarray) -> None:
    """A full output as PNG, written to a temporary name and renamed."""
    from PIL import Image

    from upres.io.image import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def restore_checked(runner: Runner, pair: ImagePair) -> Restored:
    """Run the model and insist on a uint8 image of the ground truth's shape."""
    restored = runner.restore(pair.degraded)
    output = np.asarray(restored.pixels)
    if pair.target.ndim == 2 and output.ndim == 3 and output.shape[2] == 1:
        output = output[..., 0]
    if output.shape != pair.target.shape:
        raise EvaluationError(
            f"{runner.name} returned shape {output.shape} for {pair.name}, "
            f"expected {pair.target.shape}"
        )
    if output.dtype != np.uint8:
        raise EvaluationError(f"{runner.name} returned {output.dtype} pixels, expected uint8")
    restored.pixels = output
    return restored


def score(name: str, output: np.ndarray, target: np.ndarray, spec: TaskSpec) -> ImageScore:
    border = spec.crop_border
    jpeg = spec.task == "jpeg"
    colour = output.ndim == 3 and output.shape[2] == 3
    return ImageScore(
        name=name,
        psnr_y=psnr(output, target, border, y_only=True),
        ssim_y=ssim(output, target, border, y_only=True),
        psnr_rgb=psnr(output, target, border),
        ssim_rgb=ssim(output, target, border),
        psnr_b=psnr_b(output, target, border) if jpeg else None,
        psnr_b_y=psnr_b(output, target, border, y_only=True) if jpeg and colour else None,
    )
