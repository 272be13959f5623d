"""`upres restore`: denoise or remove JPEG artefacts at the same size, through the same engine.

It is `upscale`'s batch (files, folders, globs; a bad file never stops the rest) with
models that keep the size: a task picks a sensible default model, and a model made for
another task, or one that changes the size, is refused before any file is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from upres.cli.common import COMPILE, FAST, THREADS
from upres.cli.upscale import (
    AS_JSON,
    DEVICE,
    FORMAT,
    INPUTS,
    MAX_INPUT_SIZE,
    OUTPUT,
    OVERWRITE,
    PRECISION,
    QUALITY,
    RECURSIVE,
    SKIP_EXISTING,
    TILE,
    TILE_OVERLAP,
    Batch,
    run_batch,
    usage_error,
)
from upres.models.catalog import ModelCard, find_card

if TYPE_CHECKING:
    from upres.api import ImageRunner

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
        card = find_card(name)
        if card is not None and card.task != task:
            return wrong_task(card, task)
    return None


def task_problem(runner: ImageRunner, task: str) -> str | None:
    """Why the loaded models cannot do `task` at the same size, or None."""
    from upres.api import Pipeline

    stages = runner.stages if isinstance(runner, Pipeline) else [runner]
    for stage in stages:
        card = stage.model.card
        if card is not None and card.task != task:
            return wrong_task(card, task)
        if stage.scale != 1:
            return f"{stage.name} upscales x{stage.scale}; restore keeps the size: use upscale"
    return None


def register(app: typer.Typer) -> None:
    @app.command("restore")
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
        as_json: bool = AS_JSON,
        fast: bool = FAST,
        compile: bool = COMPILE,
        threads: int | None = THREADS,
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
                as_json=as_json,
                fast=fast,
                compile=compile,
                threads=threads,
                check=lambda runner: task_problem(runner, task),
                tag=lambda _runner, _factor: task,
            )
        )


def model_task(models: list[str] | None) -> str | None:
    """The task of the first built-in model named, so `-m NAME` alone is enough."""
    for name in models or []:
        card = find_card(name)
        if card is not None:
            return card.task
    return None
