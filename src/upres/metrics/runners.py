"""What produces the outputs being scored: a project model, or the baseline every table starts with.

Baselines: ``bicubic`` (SR: MATLAB bicubic upscale of the LR input, uint8 in and out, as in the
bicubic rows of published tables) and ``identity`` (denoise/jpeg: the degraded input itself).
Any other name goes to ``upres.load`` (imported only here, so metrics work without a model stack).

A project model runs each image whole, as the papers score it: one tile covering the image
whenever memory allows (not the automatic tile, which depends on the machine's free memory
and changes the result of models whose receptive field or statistics span the image). When
memory does not allow, the tile and overlap used are recorded with the image's score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from upres.metrics.imresize import imresize
from upres.metrics.tasks import EvaluationError

BICUBIC = "bicubic"
IDENTITY = "identity"
BASELINES = (BICUBIC, IDENTITY)


@dataclass
class Restored:
    """A model's output and how it was tiled (one Plan.summary() per model pass)."""

    pixels: np.ndarray
    tiling: list[dict[str, Any]] = field(default_factory=list)

    @property
    def whole_image(self) -> bool:
        return all(entry["whole_image"] for entry in self.tiling)


Restore = Callable[[np.ndarray], Restored]


@dataclass
class Runner:
    name: str
    scale: int
    restore: Restore
    device: str | None = None  # None for the baselines, which run in numpy
    precision: str | None = None
    architecture: str | None = None


def make_runner(
    model: str, task: str, scale: int | None, device: str = "auto", tile: int | None = None
) -> Runner:
    """The model for ``task``; ``scale`` None means the model's own scale (SR with a real model).

    ``tile`` None runs every image whole where memory allows; a number forces that tile.
    """
    name = model.lower()
    if name == BICUBIC:
        return bicubic_runner(task, scale)
    if name == IDENTITY:
        return identity_runner(task)
    check_card(model, task, scale)
    return project_runner(model, task, scale, device, tile)


def bicubic_runner(task: str, scale: int | None) -> Runner:
    if task != "sr":
        raise EvaluationError(f"the bicubic baseline is for SR; use '{IDENTITY}' for {task}")
    if scale is None:
        raise EvaluationError("the bicubic baseline needs a scale (--scale 2, 3, 4 ...)")
    return Runner(BICUBIC, scale, lambda lr: Restored(imresize(lr, scale)))


def identity_runner(task: str) -> Runner:
    if task == "sr":
        raise EvaluationError(f"the identity baseline is for denoise/jpeg; use '{BICUBIC}' for SR")
    return Runner(IDENTITY, 1, lambda degraded: Restored(degraded))


def check_card(model: str, task: str, scale: int | None) -> None:
    """A built-in model's scale, checked against the task before its weights are loaded."""
    from upres.models.catalog import CATALOG

    card = CATALOG.get(model.lower())
    if card is not None:
        check_scale(model, card.scale, task, scale)


def check_scale(model: str, native: int, task: str, scale: int | None) -> None:
    if task == "sr" and scale is not None and scale != native:
        raise EvaluationError(f"model {model!r} upscales x{native}, not x{scale}")
    if task != "sr" and native != 1:
        raise EvaluationError(f"model {model!r} upscales x{native}; {task} needs a x1 model")


def project_runner(
    model: str, task: str, scale: int | None, device: str, tile: int | None
) -> Runner:
    import upres  # lazily: loading torch and the model stack is only needed here
    from upres.io.image import image_from_array

    # fp32 so that scores do not depend on the device's half-precision support.
    upscaler = upres.load(model, device=device, precision="fp32", tile=tile)
    native = int(upscaler.scale)
    check_scale(model, native, task, scale)
    for stage in getattr(upscaler, "stages", [upscaler]):
        stage.prefer_whole = True  # one tile per image whenever memory allows

    def restore(degraded: np.ndarray) -> Restored:
        image, _ = image_from_array(degraded)
        result, report = upscaler.upscale_image(image, out_dtype=np.uint8)
        pixels = result.pixels if degraded.ndim == 3 else result.pixels[..., 0]
        return Restored(pixels, report.tiling)

    return Runner(
        name=model,
        scale=native,
        restore=restore,
        device=str(upscaler.device),
        precision=str(upscaler.dtype).removeprefix("torch."),
        architecture=upscaler.architecture,
    )
