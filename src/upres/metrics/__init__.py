"""Evaluation that reproduces published SR and restoration tables.

- ``imresize``: MATLAB's bicubic imresize (LR inputs and the bicubic baseline), bit-exact on uint8.
- ``rgb_to_y``, ``psnr``, ``ssim``, ``psnr_b``: the scores as SwinIR/BasicSR compute them.
- ``resolve_dataset``: Set5, Set14, B100, ... under the datasets root, or any folder of images.
- ``evaluate``: a model (or the ``bicubic``/``identity`` baseline) over a set -> ``EvalResult``.

Nothing here imports torch; ``evaluate`` loads a project model only when asked for one.
"""

from upres.metrics.datasets import Dataset, DatasetNotFoundError, datasets_root, resolve_dataset
from upres.metrics.evaluate import EvalResult, ImageScore, evaluate
from upres.metrics.imresize import imresize
from upres.metrics.quality import psnr, psnr_b, rgb_to_y, ssim
from upres.metrics.tasks import EvaluationError, TaskSpec

__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "EvalResult",
    "EvaluationError",
    "ImageScore",
    "TaskSpec",
    "datasets_root",
    "evaluate",
    "imresize",
    "psnr",
    "psnr_b",
    "resolve_dataset",
    "rgb_to_y",
    "ssim",
]
