"""`upres restore`: denoise or remove JPEG artefacts at the same size, through the same engine.

It is `upscale`'s batch (files, folders, globs; a bad file never stops the rest) with
models that keep the size. Without -m the model is picked per input and printed: for JPEG
artefacts the one trained nearest to the file's own quality (estimated from its
quantisation tables, or --jpeg-quality), for noise the one nearest to --sigma; grey models
for grey images. A model made for another task, or one that changes the size, is refused
before any file is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from upres.cli.common import COMPILE, FAST, THREADS
from upres.cli.upscale import (
    ALPHA,
    AS_JSON,
    DEVICE,
    FACE_CONFIDENCE,
    FACE_ENHANCE,
    FACE_MIN_SIZE,
    FACE_STRENGTH,
    FORMAT,
    INPUTS,
    MAX_INPUT_PIXELS,
    MAX_INPUT_SIZE,
    MAX_OUTPUT_PIXELS,
    OUTPUT,
    OVERWRITE,
    PRECISION,
    QUALITY,
    RECURSIVE,
    SKIP_EXISTING,
    SUFFIX,
    TILE,
    TILE_OVERLAP,
    Batch,
    FaceFlagCommand,
    run_batch,
    usage_error,
)
from upres.models.catalog import ModelCard, find_card

if TYPE_CHECKING:
    from upres.api import ImageRunner
    from upres.models.restoration import Pick

TASKS = ("denoise", "jpeg")


def wrong_task(card: ModelCard, task: str) -> str:
    return f"{card.name} is a {card.task} model, not {task}; see `upres models` (or upscale)"


def name_problem(models: list[str], task: str) -> str | None:
    """A built-in model made for another task, found before anything is downloaded."""
    for name in models:
        card = find_card(name)
        if card is not None and card.task != task:
            return wrong_task(card, task)
    return None


def task_problem(runner: ImageRunner, task: str) -> str | None:
    """Why the loaded models cannot do `task` at the same size, or None."""
    from upres.api import Pipeline

    runner = getattr(runner, "runner", runner)  # a FaceEnhancer: the models it wraps
    stages = runner.stages if isinstance(runner, Pipeline) else [runner]
    for stage in stages:
        card = stage.model.card
        if card is not None and card.task != task:
            return wrong_task(card, task)
        if stage.scale != 1:
            return f"{stage.name} upscales x{stage.scale}; restore keeps the size: use upscale"
    return None


def register(app: typer.Typer) -> None:
    @app.command("restore", cls=FaceFlagCommand)
    def restore(
        inputs: list[str] = INPUTS,
        task: str | None = typer.Option(
            None, "--task", help="denoise or jpeg (default: the model's own task)."
        ),
        model: list[str] | None = typer.Option(
            None,
            "-m",
            "--model",
            help="A x1 model for the task (default: the SwinIR model picked for each input);"
            " repeat to chain.",
        ),
        jpeg_quality: int | None = typer.Option(
            None,
            "--jpeg-quality",
            min=1,
            max=100,
            help="jpeg: the quality the inputs were saved at (default: read from each file);"
            " the model trained nearest to it (10, 20, 30, 40) is used.",
        ),
        sigma: float | None = typer.Option(
            None,
            "--sigma",
            min=0.0,
            help="denoise: the noise level in 0-255 units (15, 25 or 50; others go to the"
            " nearest; default 25).",
        ),
        output: Path | None = OUTPUT,
        tile: str | None = TILE,
        tile_overlap: int = TILE_OVERLAP,
        precision: str = PRECISION,
        device: str = DEVICE,
        format: str | None = FORMAT,
        quality: int | None = QUALITY,
        recursive: bool = RECURSIVE,
        skip_existing: bool = SKIP_EXISTING,
        overwrite: bool = OVERWRITE,
        max_input_size: int | None = MAX_INPUT_SIZE,
        max_input_pixels: int | None = MAX_INPUT_PIXELS,
        max_output_pixels: int | None = MAX_OUTPUT_PIXELS,
        alpha: str = ALPHA,
        suffix: str | None = SUFFIX,
        as_json: bool = AS_JSON,
        fast: bool = FAST,
        compile: bool = COMPILE,
        threads: int | None = THREADS,
        face_enhance: str | None = FACE_ENHANCE,
        face_strength: float = FACE_STRENGTH,
        face_min_size: float | None = FACE_MIN_SIZE,
        face_confidence: float | None = FACE_CONFIDENCE,
    ) -> None:
        """Denoise images or remove JPEG artefacts, keeping their size."""
        task = task or model_task(model)
        if task not in TASKS:
            usage_error(f"--task must be denoise or jpeg, not {task or 'missing'}")
        problem = level_problem(task, model, jpeg_quality, sigma)
        problem = problem or (name_problem(model, task) if model else None)
        if problem:
            usage_error(problem)
        run_batch(
            Batch(
                inputs,
                output,
                model,
                tile=tile,
                tile_overlap=tile_overlap,
                precision=precision,
                device=device,
                format=format,
                quality=quality,
                recursive=recursive,
                skip_existing=skip_existing,
                overwrite=overwrite,
                max_input_size=max_input_size,
                max_input_pixels=max_input_pixels,
                max_output_pixels=max_output_pixels,
                alpha=alpha,
                suffix=suffix,
                as_json=as_json,
                fast=fast,
                compile=compile,
                threads=threads,
                face_enhance=face_enhance,
                face_strength=face_strength,
                face_min_size=face_min_size,
                face_confidence=face_confidence,
                check=lambda runner: task_problem(runner, task),
                task_tag=task,
                choose=None if model else chooser(task, jpeg_quality, sigma),
            )
        )


def chooser(task: str, jpeg_quality: int | None, sigma: float | None) -> Callable[[Path], Pick]:
    from upres.models.restoration import pick_denoise, pick_jpeg  # Pillow: once it runs

    if task == "jpeg":
        return lambda path: pick_jpeg(path, jpeg_quality)
    return lambda path: pick_denoise(path, sigma)


def level_problem(
    task: str, models: list[str] | None, jpeg_quality: int | None, sigma: float | None
) -> str | None:
    """--jpeg-quality and --sigma pick a model: for their own task, and not next to -m."""
    if (jpeg_quality is not None and task != "jpeg") or (sigma is not None and task != "denoise"):
        return "--jpeg-quality goes with --task jpeg, --sigma with --task denoise"
    given = "--jpeg-quality" if jpeg_quality is not None else "--sigma" if sigma is not None else ""
    if given and models:
        return f"{given} picks the model: give it or -m, not both"
    return None


def model_task(models: list[str] | None) -> str | None:
    """The task of the first built-in model named, so `-m NAME` alone is enough."""
    for name in models or []:
        card = find_card(name)
        if card is not None:
            return card.task
    return None
