"""`upres batch SRC DST`: a folder (or fsspec URL) in, a folder out; resumable, on Ray if asked."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from upres.cli.common import (
    COMPILE,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    FAST,
    THREADS,
    cpu_threads,
    err,
    out,
    print_error,
)
from upres.errors import RequestError, UpresError
from upres.request import UpscaleRequest

ERRORS_PRINTED = 10  # failures printed as they happen; the manifest has every one

if TYPE_CHECKING:
    from upres.batch.driver import Summary
    from upres.batch.item import ItemOptions, RunnerSpec

# The same as upres.batch.driver.ENGINES, which is not imported here: it needs torch.
ENGINES = ("local", "ray")


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)


def batch(
    src: str = typer.Argument(..., help="Input folder or fsspec URL (file://, memory://, ...)."),
    dst: str = typer.Argument(..., help="Output folder or URL; holds .upres-manifest.jsonl."),
    model: list[str] | None = typer.Option(
        None, "-m", "--model", help="Model name or checkpoint; repeat for a chain."
    ),
    engine: str = typer.Option(
        "local", "--engine", help="local (worker processes on this machine) or ray."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (default: start a local one)."
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Worker processes (local) or Ray actors, one model each."
    ),
    gpus_per_worker: float = typer.Option(
        0.0, "--gpus-per-worker", min=0.0, help="GPU share per actor (0.5: two per GPU)."
    ),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", min=0.0),
    scale: float | None = typer.Option(None, "--scale", help="Any factor (default: the model's)."),
    format: str | None = typer.Option(None, "--format", help="png|jpg|webp|tiff|bmp."),
    quality: int | None = typer.Option(None, "--quality", min=1, max=100),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|cuda:N|mps."),
    precision: str = typer.Option("auto", "--precision"),
    tile: str | None = typer.Option(None, "--tile", help="Tile size in input pixels, or auto."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Redo inputs that failed."),
    fast: bool = FAST,
    compile: bool = COMPILE,
    threads: int | None = THREADS,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Upscale every image, animation and video under SRC into DST, skipping what an
    earlier run finished. Animations and videos keep their format; --format is for stills."""
    from upres.batch.item import ItemOptions, RunnerSpec

    try:  # the same rules and messages as `upres upscale`, before any item is read
        request = UpscaleRequest(
            models=tuple(model or ()),
            scale=scale,
            format=format,
            quality=quality,
            device=device,
            precision=precision,
            tile=tile,
        )
    except RequestError as error:
        usage_error(f"--{error.option.replace('_', '-')} {error.problem}")
    if engine not in ENGINES:
        usage_error(f"--engine must be local or ray, not {engine!r}")
    try:
        threads = cpu_threads(threads)
    except ValueError as error:
        usage_error(str(error))
    spec = RunnerSpec(
        request.models or None,
        request.device,
        request.precision,
        request.tile,
        denoise_strength=None,
        fast=fast,
        compile=compile,
        threads=threads,  # set where the model loads: here, or in each Ray actor
        workers=workers if address is None else 1,  # workers on this machine split its cores
    )
    options = ItemOptions(scale=request.scale, format=request.format, quality=request.quality)
    ray_options = _ray_options(engine, workers, gpus_per_worker, cpus_per_worker, address)
    try:
        summary = _run_with_progress(
            src, dst, spec, options, engine, ray_options, workers, retry_failed
        )
    except (UpresError, ValueError, FileNotFoundError, ImportError) as error:
        usage_error(str(error))
    _print_summary(summary, as_json)
    raise typer.Exit(EXIT_SOME_FAILED if summary.failed else EXIT_OK)


def _ray_options(engine: str, workers: int, gpus: float, cpus: float, address: str | None) -> Any:
    if engine != "ray":
        return None
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        usage_error("--engine ray needs Ray: pip install 'upres[ray]'")
    from upres.batch.ray_runner import RayOptions

    return RayOptions(workers=workers, gpus_per_worker=gpus, cpus_per_worker=cpus, address=address)


def _run_with_progress(
    src: str,
    dst: str,
    spec: RunnerSpec,
    options: ItemOptions,
    engine: str,
    ray_options: Any,
    processes: int,
    retry_failed: bool,
) -> Summary:
    from upres.batch.driver import run_batch

    with batch_progress() as progress:
        task = progress.add_task("listing", total=None)
        failures = 0

        def on_start(todo: int, skipped: int) -> None:
            progress.update(task, total=todo, description="inputs")
            if skipped:
                progress.console.print(f"[dim]{skipped} already settled in the manifest[/]")

        def on_row(row: dict) -> None:
            nonlocal failures
            if row["status"] == "failed":
                failures += 1
                if failures <= ERRORS_PRINTED:
                    progress.console.print(
                        f"[bold red]error:[/] {escape(str(row['error']))}", highlight=False
                    )
                if failures == ERRORS_PRINTED:
                    progress.console.print("[dim]further failures: see the manifest[/]")
            progress.advance(task)

        return run_batch(
            src,
            dst,
            spec,
            options,
            engine=engine,
            ray_options=ray_options,
            processes=processes,
            retry_failed=retry_failed,
            on_start=on_start,
            on_row=on_row,
        )


class RateColumn(ProgressColumn):
    """Images per second over the last half-minute (rich's own estimate: cheap per row)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f}/s" if speed else "", style="progress.data.speed")


def batch_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
    )


def _print_summary(summary: Summary, as_json: bool) -> None:
    facts = summary.to_dict()
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    out.print(
        f"{facts['done']} done, {facts['skipped']} skipped, {facts['failed']} failed"
        f" in {facts['seconds']:.1f}s ({facts['images_per_s']:.2f} images/s,"
        f" {facts['megapixels_per_s']:.3f} output megapixels/s)",
        highlight=False,
    )
    if summary.failed:
        out.print(
            f"failed inputs, with their errors: {facts['manifest']}"
            """ (jq 'select(.status == "failed")')""",
            highlight=False,
        )


def usage_error(message: str) -> None:
    print_error(message)
    err.print("see: upres batch --help")
    raise typer.Exit(EXIT_USAGE)
