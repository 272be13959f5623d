"""What produces the outputs being scored: a project model, or the baseline every table starts with.

Baselines: ``bicubic`` (SR: MATLAB bicubic upscale of the LR input, uint8 in and out, as in the
bicubic rows of published tables) and ``identity`` (denoise/jpeg: the degraded input itself).
Any other name goes to ``upres.load`` (imported only here, so metrics work without a model stack).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from upres.metrics.imresize import imresize
from upres.metrics.tasks import EvaluationError

Restore = Callable[[np.ndarray], np.ndarray]
BICUBIC = "bicubic"
IDENTITY = "identity"
BASELINES = (BICUBIC, IDENTITY)


@dataclass
class Runner:
    name: str
    scale: int
    restore: Restore


def make_runner(
    model: str, task: str, scale: int | None, device: str = "auto", tile: int | None = None
) -> Runner:
    """The model for ``task``; ``scale`` None means the model's own scale (SR with a real model)."""
    name = model.lower()
    if name == BICUBIC:
        return bicubic_runner(task, scale)
    if name == IDENTITY:
        return identity_runner(task)
    return project_runner(model, task, scale, device, tile)


def bicubic_runner(task: str, scale: int | None) -> Runner:
    if task != "sr":
        raise EvaluationError(f"the bicubic baseline is for SR; use '{IDENTITY}' for {task}")
    if scale is None:
        raise EvaluationError("the bicubic baseline needs a scale (--scale 2, 3, 4 ...)")
    return Runner(BICUBIC, scale, lambda lr: imresize(lr, scale))


def identity_runner(task: str) -> Runner:
    if task == "sr":
        raise EvaluationError(f"the identity baseline is for denoise/jpeg; use '{BICUBIC}' for SR")
    return Runner(IDENTITY, 1, lambda degraded: degraded)


def project_runner(
    model: str, task: str, scale: int | None, device: str, tile: int | None
) -> Runner:
    import upres  # lazily: loading torch and the model stack is only needed here

    # fp32 so that scores do not depend on the device's half-precision support.
    upscaler = upres.load(model, device=device, precision="fp32", tile=tile)
    native = int(upscaler.scale)
    if task == "sr" and scale is not None and scale != native:
        raise EvaluationError(f"model {model!r} upscales x{native}, not x{scale}")
    if task != "sr" and native != 1:
        raise EvaluationError(f"model {model!r} upscales x{native}; {task} needs a x1 model")
    return Runner(model, native, upscaler)
