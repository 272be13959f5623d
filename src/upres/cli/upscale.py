"""`upres upscale`: files, folders and globs in; bigger images out; bad files never stop a batch."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from upres.api import FileResult, ImageRunner, load
from upres.cli.common import (
    COMPILE,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    FAST,
    THREADS,
    apply_threads,
    err,
    out,
    print_error,
    print_note,
)
from upres.errors import UpresError
from upres.io.paths import FORMAT_SUFFIX, KEPT_SUFFIXES, Job, collect_inputs, plan_jobs
from upres.io.probe import probe
from upres.io.video import VideoOptions


def make_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


def result_row(job: Job, result: FileResult | None, error: str | None) -> dict:
    row: dict = {"input": str(job.source), "output": str(job.destination)}
    if error is not None:
        return row | {"status": "failed", "error": error}
    assert result is not None
    row |= {"status": result.status, "seconds": round(result.seconds, 3)}
    if result.report is not None:
        report = result.report
        row |= {
            "input_size": list(report.input_size),
            "output_size": list(report.output_size),
            "model_passes": report.model_passes,
            "tiles": report.tiles,
            "oom_retries": report.oom_retries,
            "notes": report.notes,
        }
        if report.plan is not None:  # the forecast made before running, and what it measured
            row |= {"plan": report.plan.as_dict()}
            row |= {"peak_host_bytes": report.peak_host_bytes}
            row |= {"peak_device_bytes": report.peak_device_bytes}
    return row


def run_jobs(upscaler: ImageRunner, jobs: list[Job], options: dict) -> list[dict]:
    rows = []
    with make_progress() as progress:
        images = progress.add_task("images", total=len(jobs))
        tiles = progress.add_task("tiles", total=None, visible=False)

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total, visible=True)

        for job in jobs:
            progress.update(images, description=f"images [dim]{job.source.name}[/]")
            # Videos and animations report frames, not tiles, through the same callback.
            unit = "frames" if job.source.suffix.lower() in KEPT_SUFFIXES else "tiles"
            progress.reset(tiles, total=None, visible=False, description=unit)
            try:
                result = upscaler.upscale_file(
                    job.source, job.destination, progress=on_tile, **options
                )
                rows.append(result_row(job, result, None))
                for note in result.report.notes if result.report else []:
                    progress.console.print(
                        f"[yellow]note:[/] {job.source}: {note}", highlight=False
                    )
            except (UpresError, ValueError) as error:
                rows.append(result_row(job, None, str(error)))
                progress.console.print(f"[bold red]error:[/] {error}", highlight=False)
            progress.advance(images)
    return rows


def print_summary(rows: list[dict], as_json: bool, model: str) -> None:
    counts = {
        status: sum(r["status"] == status for r in rows) for status in ("done", "skipped", "failed")
    }
    if as_json:
        typer.echo(json.dumps({"model": model, **counts, "images": rows}, indent=2))
        return
    for row in rows:
        if row["status"] == "done":
            width, height = row["output_size"]
            out.print(
                f"[green]wrote[/] {row['output']}  ({width}x{height}, {row['seconds']:.1f}s)",
                highlight=False,
            )
        elif row["status"] == "skipped":
            out.print(f"[dim]skipped[/] {row['output']} (exists)", highlight=False)
    out.print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")


# Options shared by `upscale` and `restore` (typer lets one Option serve several commands).
INPUTS = typer.Argument(..., metavar="INPUT...", help="Image files, folders or globs.")
OUTPUT = typer.Option(
    None, "-o", "--output", help="Output file (one input) or folder. Default: beside each input."
)
TILE = typer.Option(
    None,
    "--tile",
    help="Tile size in input pixels, or 'auto' (from free memory; env UPRES_TILE_SIZE).",
)
TILE_OVERLAP = typer.Option(32, "--tile-overlap", min=0, help="Context pixels around each tile.")
PRECISION = typer.Option("auto", "--precision", help="auto|fp32|fp16|bf16 (env UPRES_PRECISION).")
DEVICE = typer.Option("auto", "--device", help="auto|cpu|cuda|cuda:N|mps.")
FORMAT = typer.Option(None, "--format", help="png|jpg|webp|tiff (default: the input's own format).")
QUALITY = typer.Option(None, "--quality", min=1, max=100, help="JPEG/WebP quality.")
RECURSIVE = typer.Option(False, "--recursive", "-r", help="Look inside sub-folders.")
SKIP_EXISTING = typer.Option(False, "--skip-existing", help="Leave existing outputs alone.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace existing outputs.")
MAX_INPUT_SIZE = typer.Option(
    None,
    "--max-input-size",
    min=1,
    help="Downsize inputs longer than N px on a side first (env UPRES_MAX_INPUT_SIZE).",
)
SHARPEN = typer.Option(
    0.0, "--sharpen", min=0.0, max=1.0, help="0 off, 0.3 visible, 1 strong; never halos."
)
DENOISE_STRENGTH = typer.Option(
    None,
    "--denoise-strength",
    min=0.0,
    max=1.0,
    help="0 keeps noise, 1 removes most; for models that have it (realesr-general-v3-x4).",
)
AS_JSON = typer.Option(False, "--json", help="Print a machine-readable summary.")
VIDEO_CODEC = typer.Option(
    None,
    "--video-codec",
    help="Video encoder: libx264, libx265, libvpx-vp9, libsvtav1...;"
    " default libx264 (libvpx-vp9 for .webm).",
)
CRF = typer.Option(None, "--crf", min=0, max=63, help="Video constant quality (lower is better).")
PRESET = typer.Option(None, "--preset", help="Video encoder preset (e.g. veryfast, slow).")
PIX_FMT = typer.Option("yuv420p", "--pix-fmt", help="Video pixel format (yuv420p plays anywhere).")


@dataclass
class Batch:
    """One command's worth of work: inputs, the models to run, and how to write results."""

    inputs: list[str]
    output: Path | None
    models: list[str] | None
    scale: float | None = None
    tile: str | None = None
    tile_overlap: int = 32
    precision: str = "auto"
    device: str = "auto"
    format: str | None = None
    quality: int | None = None
    recursive: bool = False
    skip_existing: bool = False
    overwrite: bool = False
    max_input_size: int | None = None
    sharpen: float = 0.0
    denoise_strength: float | None = None
    as_json: bool = False
    fast: bool = True
    compile: bool = False
    threads: int | None = None  # torch CPU threads; None: UPRES_THREADS or torch's default
    dry_run: bool = False  # print each input's plan and memory forecast; run nothing
    video: VideoOptions = field(default_factory=VideoOptions)
    # Checks the loaded models before any file is touched; returns a problem or None.
    check: Callable[[ImageRunner], str | None] | None = None
    # The NAME_TAG suffix of results written beside their inputs.
    tag: Callable[[ImageRunner, float], str] = lambda _runner, factor: f"x{factor:g}"


def run_batch(batch: Batch) -> NoReturn:
    """Load, plan, run every file (a bad one never stops the rest), summarise, exit."""
    if batch.format is not None and batch.format.lower() not in FORMAT_SUFFIX:
        usage_error(f"--format must be one of png, jpg, webp, tiff, bmp, not {batch.format!r}")
    files, unmatched = collect_inputs(batch.inputs, batch.recursive)
    for pattern in unmatched:
        print_error(f"{pattern}: matched no files")
    if not files:
        usage_error("no input images")
    try:
        apply_threads(batch.threads)  # before loading: torch sizes its pools on first use
        runner = load(
            batch.models,
            device=batch.device,
            precision=batch.precision,
            tile=batch.tile,
            tile_overlap=batch.tile_overlap,
            denoise_strength=batch.denoise_strength,
            fast=batch.fast,
            compile=batch.compile,
        )
    except (UpresError, ValueError, RuntimeError) as error:
        usage_error(str(error))
    problem = batch.check(runner) if batch.check else None
    if problem:
        usage_error(problem)
    factor = batch.scale or runner.scale
    jobs = plan_jobs(files, batch.output, batch.format, batch.tag(runner, factor))
    if not batch.as_json:
        print_note(
            f"model {runner.name} (x{runner.scale}, {runner.architecture}) on"
            f" {runner.device}, {str(runner.dtype).removeprefix('torch.')}"
        )
    options = {
        "scale": batch.scale,
        "sharpen": batch.sharpen,
        "format": batch.format,
        "quality": batch.quality,
        "overwrite": batch.overwrite,
        "skip_existing": batch.skip_existing,
        "max_input_size": batch.max_input_size,
        "video": batch.video,
    }
    if batch.dry_run:
        dry_run(runner, jobs, batch)
    rows = run_jobs(runner, jobs, options)
    print_summary(rows, batch.as_json, runner.name)
    failed = any(row["status"] == "failed" for row in rows) or bool(unmatched)
    raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def dry_run(runner: ImageRunner, jobs: list[Job], batch: Batch) -> NoReturn:
    """Each input's plan from its header: the model is loaded but never run."""
    rows = []
    for job in jobs:
        row: dict = {"input": str(job.source), "output": str(job.destination)}
        try:
            info = probe(job.source)
            plan = runner.plan_image(
                info.width,
                info.height,
                info.channels,
                alpha=info.alpha,
                bit_depth=info.bit_depth,
                scale=batch.scale,
                max_input_size=batch.max_input_size,
                sharpen=batch.sharpen,
            )
        except (UpresError, ValueError) as error:
            rows.append(row | {"status": "failed", "error": str(error)})
            print_error(str(error))
            continue
        row |= {"status": "planned", "kind": info.kind, "input_size": [info.width, info.height]}
        rows.append(row | plan.as_dict())
    if batch.as_json:
        typer.echo(json.dumps({"model": runner.name, "dry_run": True, "images": rows}, indent=2))
    else:
        print_plans(rows)
    failed = any(row["status"] == "failed" for row in rows)
    raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def print_plans(rows: list[dict]) -> None:
    for row in rows:
        if row["status"] != "planned":
            continue
        width, height = row["input_size"]
        out_w, out_h = row["output_size"]
        tile = f"{row['tile']}x{row['tile_rows']}" if row["tile_rows"] else str(row["tile"])
        device_peak = row["forecast_peak_device_bytes"]
        per_frame = "" if row["kind"] == "image" else f" (per {row['kind']} frame)"
        out.print(
            f"{row['input']}: {width}x{height} -> {out_w}x{out_h}{per_frame}\n"
            f"  device {row['device']}, {row['precision']}, tile {tile},"
            f" {row['tiles']} tile(s), {row['model_passes']} model pass(es)\n"
            f"  predicted peak: host {mebibytes(row['forecast_peak_host_bytes'])}"
            + (f", device {mebibytes(device_peak)}" if device_peak is not None else ""),
            highlight=False,
        )


def mebibytes(count: int) -> str:
    return f"{count / 2**20:,.0f} MiB"


def usage_error(message: str) -> NoReturn:
    print_error(message)
    raise typer.Exit(EXIT_USAGE)


def register(app: typer.Typer) -> None:
    @app.command("upscale")
    def upscale(
        inputs: list[str] = INPUTS,
        output: Path | None = OUTPUT,
        model: list[str] | None = typer.Option(
            None,
            "-m",
            "--model",
            help="Built-in model name (see `upres models`) or a checkpoint path;"
            " repeat to chain models in order (-m a -m b).",
        ),
        scale: float | None = typer.Option(
            None,
            "--scale",
            help="Any factor; default the model's own (a chain's: the product)."
            " Above it the model runs again.",
        ),
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
        sharpen: float = SHARPEN,
        denoise_strength: float | None = DENOISE_STRENGTH,
        as_json: bool = AS_JSON,
        fast: bool = FAST,
        compile: bool = COMPILE,
        threads: int | None = THREADS,
        video_codec: str | None = VIDEO_CODEC,
        crf: int | None = CRF,
        preset: str | None = PRESET,
        pix_fmt: str = PIX_FMT,
        dry_run: bool = typer.Option(
            False,
            "--dry-run",
            help="Print each input's plan (device, precision, tiles, passes, output size,"
            " predicted peak memory) without running the model.",
        ),
    ) -> None:
        """Upscale images, videos and animations with a super-resolution model (or a chain)."""
        run_batch(
            Batch(
                inputs,
                output,
                model or None,
                scale=scale,
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
                sharpen=sharpen,
                denoise_strength=denoise_strength,
                as_json=as_json,
                fast=fast,
                compile=compile,
                threads=threads,
                video=VideoOptions(video_codec, crf, preset, pix_fmt),
                dry_run=dry_run,
            )
        )
