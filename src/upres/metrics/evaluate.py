"""Run a model over a benchmark set and score it the way published tables do.

Per image: PSNR and SSIM on Y (BT.601, unrounded) and on all channels, plus PSNR-B for JPEG;
``scale`` pixels are cropped from each border for SR, none for denoise/jpeg. The means are plain
averages of the per-image values, as in the tables. For greyscale evaluation the "Y" and "RGB"
columns both score the single grey channel.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from upres.metrics.crops import save_side_by_side
from upres.metrics.datasets import resolve_dataset
from upres.metrics.quality import psnr, psnr_b, ssim
from upres.metrics.runners import Runner, make_runner
from upres.metrics.tasks import (
    EvaluationError,
    ImagePair,
    TaskSpec,
    dataset_is_grey,
    load_pair,
    make_spec,
)

METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
Progress = Callable[[int, int, str], None]  # (done, total, image name)


@dataclass
class ImageScore:
    name: str
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float
    psnr_b: float | None = None

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)
        if self.psnr_b is None:
            del row["psnr_b"]
        return row


@dataclass
class EvalResult:
    model: str
    dataset: str
    spec: TaskSpec
    rows: list[ImageScore] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def metric_names(self) -> tuple[str, ...]:
        return (*METRICS, "psnr_b") if self.spec.task == "jpeg" else METRICS

    @property
    def mean(self) -> dict[str, float]:
        """Average of each metric over the images."""
        return {
            metric: float(np.mean([getattr(row, metric) for row in self.rows]))
            for metric in self.metric_names
        }

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
                "mean": self.mean,
                "images": [row.as_dict() for row in self.rows],
                "seconds": round(self.seconds, 3),
            }
        )


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
) -> EvalResult:
    """Score ``model`` (a project model, ``bicubic`` or ``identity``) on ``dataset``.

    scale: SR factor; None takes the model's own. sigma (default 25) and quality (default 10)
    apply to denoise and jpeg. grey: None decides from the files (grey sets such as Set12,
    BSD68 and classic5 are evaluated in grey, colour sets in colour). matlab_grey (SR): score
    single-channel files of colour sets (Set14's bridge) on their grey values like the MATLAB
    scripts behind the published bicubic rows, instead of on Y of three equal channels.
    """
    bench = resolve_dataset(dataset)
    use_grey = dataset_is_grey(bench) if grey is None and task != "sr" else bool(grey)
    # Check the options before loading a model; SR's scale may come from the model itself.
    spec = None if task == "sr" else make_spec(task, scale, sigma, quality, use_grey, matlab_grey)
    runner = make_runner(model, task, scale, device=device, tile=tile)
    spec = spec or make_spec("sr", runner.scale, grey=use_grey, matlab_grey=matlab_grey)
    result = EvalResult(model=model, dataset=bench.name, spec=spec)

    started = time.perf_counter()
    paths = bench.images()
    for done, path in enumerate(paths, start=1):
        pair = load_pair(bench, path, spec)
        output = restore_checked(runner, pair)
        result.rows.append(score(pair.name, output, pair.target, spec))
        if save_crops is not None:
            crop_name = f"{pair.name}_{spec.tag}"
            save_side_by_side(save_crops, crop_name, pair.degraded, output, pair.target, spec.scale)
        if progress is not None:
            progress(done, len(paths), pair.name)
    result.seconds = time.perf_counter() - started
    return result


def restore_checked(runner: Runner, pair: ImagePair) -> np.ndarray:
    """Run the model and insist on a uint8 image of the ground truth's shape."""
    output = np.asarray(runner.restore(pair.degraded))
    if pair.target.ndim == 2 and output.ndim == 3 and output.shape[2] == 1:
        output = output[..., 0]
    if output.shape != pair.target.shape:
        raise EvaluationError(
            f"{runner.name} returned shape {output.shape} for {pair.name}, "
            f"expected {pair.target.shape}"
        )
    if output.dtype != np.uint8:
        raise EvaluationError(f"{runner.name} returned {output.dtype} pixels, expected uint8")
    return output


def score(name: str, output: np.ndarray, target: np.ndarray, spec: TaskSpec) -> ImageScore:
    border = spec.crop_border
    return ImageScore(
        name=name,
        psnr_y=psnr(output, target, border, y_only=True),
        ssim_y=ssim(output, target, border, y_only=True),
        psnr_rgb=psnr(output, target, border),
        ssim_rgb=ssim(output, target, border),
        psnr_b=psnr_b(output, target, border, y_only=True) if spec.task == "jpeg" else None,
    )
