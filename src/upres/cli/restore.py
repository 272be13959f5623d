"""`upres restore`: denoise or remove JPEG artefacts at the same size, through the same engine.

It is `upscale`'s batch (files, folders, globs; a bad file never stops the rest) with
models that keep the size: a task picks a sensible default model, and a model made for
another task, or one that changes the size, is refused before any file is touched.
"""

from __future__ import annotations

from pathlib import Path

import typer

from upres.api import ImageRunner, Pipeline
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
from upres.models.catalog import CATALOG, ModelCard

# Middle-of-the-range models: sigma 25 noise, and the mildest JPEG setting (quality 40),
# which sharpens least when the real quality is unknown.
DEFAULT_MODELS = {
    "denoise": "swinir-denoise-colour-sigma25-x1",
    "jpeg": "swinir-jpeg-colour-q40-x1",
}


def wrong_task(card: ModelCard, task: str) -> str:
    return f"{card.name} is a {card.task} model, not {task}; see `upres models` (or upscale)"


def name_problem(models: list[str], task: str) -> str | None:
    """A built-in model made for another task, found before anything is downloaded."""
    for name in models:
        card = CATALOG.get(name.lower())
        if card is not None and card.task != task:
            return wrong_task(card, task)
    return None


def task_problem(runner: ImageRunner, task: str) -> str | None:
    """Why the loaded models cannot do `task` at the same size, or None."""
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
            help="A x1 model for the task (default: a SwinIR colour model); repeat to chain.",
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
        if task not in DEFAULT_MODELS:
            usage_error(f"--task must be denoise or jpeg, not {task or 'missing'}")
        models = model or [DEFAULT_MODELS[task]]
        problem = name_problem(models, task)
        if problem:
            usage_error(problem)
        run_batch(
            Batch(
                inputs,
                output,
                models,
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
            )
        )


def model_task(models: list[str] | None) -> str | None:
    """The task of the first built-in model named, so `-m NAME` alone is enough."""
    for name in models or []:
        card = CATALOG.get(name.lower())
        if card is not None:
            return card.task
    return None
