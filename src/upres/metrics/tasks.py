"""What is being measured (task, scale, noise level, JPEG quality) and the image pairs it scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from upres.errors import UpresError
from upres.metrics.datasets import Dataset, is_greyscale_file, read_grey, read_rgb
from upres.metrics.degradations import (
    add_gaussian_noise,
    bicubic_downscale,
    crop_to_multiple,
    jpeg_compress,
    rounded_luma,
    to_uint8,
)

Task = Literal["sr", "denoise", "jpeg"]
TASKS: tuple[str, ...] = get_args(Task)
DEFAULT_SIGMA = 25.0
DEFAULT_QUALITY = 10


class EvaluationError(UpresError):
    """An evaluation that cannot run as asked (bad option combination, wrong model output)."""


@dataclass(frozen=True)
class TaskSpec:
    """One row of a published table: the task and its parameter."""

    task: Task
    scale: int = 1
    sigma: float | None = None
    quality: int | None = None
    grey: bool = False
    # SR only: score single-channel files of colour sets on their grey values (MATLAB scripts)
    # instead of on the Y of three equal channels (SwinIR's Python scripts, the default).
    matlab_grey: bool = False

    @property
    def crop_border(self) -> int:
        """SR tables ignore ``scale`` pixels at every edge; restoration tables score everything."""
        return self.scale if self.task == "sr" else 0

    @property
    def tag(self) -> str:
        """Short label for file names: x4, sigma25, q10."""
        if self.task == "sr":
            return f"x{self.scale}"
        return f"sigma{self.sigma:g}" if self.task == "denoise" else f"q{self.quality}"

    def describe(self) -> str:
        if self.task == "sr":
            return f"x{self.scale} SR"
        colour = "grey" if self.grey else "colour"
        if self.task == "denoise":
            return f"{colour} denoising, sigma {self.sigma:g}"
        return f"{colour} JPEG, quality {self.quality}"


def make_spec(
    task: str,
    scale: int | None,
    sigma: float | None = None,
    quality: int | None = None,
    grey: bool = False,
    matlab_grey: bool = False,
) -> TaskSpec:
    """Validate the options for ``task``; parameters that do not apply to it are dropped."""
    check_task(task)
    if task == "sr":
        if scale is None or scale < 1:
            raise EvaluationError(f"SR needs a scale of 1 or more, not {scale}")
        if grey:
            raise EvaluationError("SR is scored on RGB images; --grey applies to denoise and jpeg")
        return TaskSpec(task="sr", scale=scale, matlab_grey=matlab_grey)
    if matlab_grey:
        raise EvaluationError("--matlab-grey applies to SR only")
    if scale not in (None, 1):
        raise EvaluationError(f"{task} runs at scale 1, not {scale}")
    if task == "denoise":
        level = DEFAULT_SIGMA if sigma is None else float(sigma)
        if level < 0:
            raise EvaluationError(f"sigma must be >= 0, not {level:g}")
        return TaskSpec(task="denoise", sigma=level, grey=grey)
    level = DEFAULT_QUALITY if quality is None else int(quality)
    if not 1 <= level <= 100:
        raise EvaluationError(f"JPEG quality must be 1..100, not {level}")
    return TaskSpec(task="jpeg", quality=level, grey=grey)


def check_task(task: str) -> None:
    if task not in TASKS:
        raise EvaluationError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")


def dataset_is_grey(dataset: Dataset) -> bool:
    """True when every image is stored with one channel (Set12, BSD68, classic5)."""
    return all(is_greyscale_file(path) for path in dataset.images())


@dataclass
class ImagePair:
    """A model input and the ground truth its output is compared with (both uint8)."""

    name: str
    degraded: np.ndarray
    target: np.ndarray
    lr_source: str  # where the degraded image came from, for the record


def load_pair(dataset: Dataset, hr_path: Path, spec: TaskSpec) -> ImagePair:
    if spec.task == "sr":
        return sr_pair(dataset, hr_path, spec.scale, spec.matlab_grey)
    if spec.task == "denoise":
        assert spec.sigma is not None
        return denoise_pair(hr_path, spec.sigma, spec.grey)
    assert spec.quality is not None
    return jpeg_pair(hr_path, spec.quality, spec.grey)


def sr_pair(dataset: Dataset, hr_path: Path, scale: int, matlab_grey: bool = False) -> ImagePair:
    """HR cropped to a multiple of the scale, and the shipped LR file or our MATLAB-exact one.

    Both are RGB, except single-channel files with ``matlab_grey``, which stay grey.
    """
    read = read_grey if matlab_grey and is_greyscale_file(hr_path) else read_rgb
    hr = crop_to_multiple(read(hr_path), scale)
    expected = (hr.shape[0] // scale, hr.shape[1] // scale, *hr.shape[2:])
    shipped = dataset.shipped_lr(hr_path, scale)
    if shipped is not None:
        lr = read(shipped)
        if lr.shape == expected:
            return ImagePair(hr_path.stem, lr, hr, lr_source=f"shipped {shipped.name}")
    return ImagePair(hr_path.stem, bicubic_downscale(hr, scale), hr, lr_source="imresize")


def denoise_pair(path: Path, sigma: float, grey: bool) -> ImagePair:
    clean = read_grey(path) if grey else read_rgb(path)
    # The public model API takes uint8, so the unclipped noisy floats of the reference protocol
    # are clamped and rounded here; the identity baseline is scored on exactly this input.
    noisy = to_uint8(add_gaussian_noise(clean, sigma))
    return ImagePair(path.stem, noisy, clean, lr_source=f"gaussian sigma {sigma:g}, seed 0")


def jpeg_pair(path: Path, quality: int, grey: bool) -> ImagePair:
    if grey:
        clean = read_grey(path) if is_greyscale_file(path) else rounded_luma(read_rgb(path))
    else:
        clean = read_rgb(path)
    return ImagePair(
        path.stem, jpeg_compress(clean, quality), clean, lr_source=f"opencv jpeg q{quality}"
    )
