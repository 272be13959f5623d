"""`upres upscale`: files, folders and globs in; bigger images out; bad files never stop a batch."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from upres.api import FileResult, Upscaler, load
from upres.cli.common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    err,
    out,
    print_error,
    print_note,
)
from upres.errors import UpresError
from upres.io.paths import FORMAT_SUFFIX, Job, collect_inputs, plan_jobs


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
    return row


def run_jobs(upscaler: Upscaler, jobs: list[Job], options: dict) -> list[dict]:
    rows = []
    with make_progress() as progress:
        images = progress.add_task("images", total=len(jobs))
        tiles = progress.add_task("tiles", total=None, visible=False)

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total, visible=True)

        for job in jobs:
            progress.update(images, description=f"images [dim]{job.source.name}[/]")
            progress.reset(tiles, total=None, visible=False)
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


def register(app: typer.Typer) -> None:
    @app.command("upscale")
    def upscale(
        inputs: list[str] = typer.Argument(
            ..., metavar="INPUT...", help="Image files, folders or globs."
        ),
        output: Path | None = typer.Option(
            None,
            "-o",
            "--output",
            help="Output file (one input) or folder. Default: beside each input.",
        ),
        model: str | None = typer.Option(
            None,
            "-m",
            "--model",
            help="Built-in model name (see `upres models`) or a checkpoint path.",
        ),
        scale: float | None = typer.Option(
            None,
            "--scale",
            help="Any factor; default the model's own. Above it the model runs again.",
        ),
        tile: str | None = typer.Option(
            None,
            "--tile",
            help="Tile size in input pixels, or 'auto' (from free memory; env UPRES_TILE_SIZE).",
        ),
        tile_overlap: int = typer.Option(
            32, "--tile-overlap", min=0, help="Context pixels around each tile."
        ),
        precision: str = typer.Option(
            "auto", "--precision", help="auto|fp32|fp16|bf16 (env UPRES_PRECISION)."
        ),
        device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|cuda:N|mps."),
        format: str | None = typer.Option(
            None, "--format", help="png|jpg|webp|tiff (default: the input's own format)."
        ),
        quality: int | None = typer.Option(
            None, "--quality", min=1, max=100, help="JPEG/WebP quality."
        ),
        recursive: bool = typer.Option(False, "--recursive", "-r", help="Look inside sub-folders."),
        skip_existing: bool = typer.Option(
            False, "--skip-existing", help="Leave existing outputs alone."
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
        max_input_size: int | None = typer.Option(
            None,
            "--max-input-size",
            min=1,
            help="Downsize inputs longer than N px on a side first (env UPRES_MAX_INPUT_SIZE).",
        ),
        sharpen: float = typer.Option(
            0.0, "--sharpen", min=0.0, max=1.0, help="Unsharp mask amount, 0..1."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
    ) -> None:
        """Upscale images with a super-resolution model."""
        if format is not None and format.lower() not in FORMAT_SUFFIX:
            print_error(f"--format must be one of png, jpg, webp, tiff, bmp, not {format!r}")
            raise typer.Exit(EXIT_USAGE)
        files, unmatched = collect_inputs(inputs, recursive)
        for pattern in unmatched:
            print_error(f"{pattern}: matched no files")
        if not files:
            print_error("no input images")
            raise typer.Exit(EXIT_USAGE)
        try:
            upscaler = load(
                model, device=device, precision=precision, tile=tile, tile_overlap=tile_overlap
            )
        except (UpresError, ValueError, RuntimeError) as error:
            print_error(str(error))
            raise typer.Exit(EXIT_USAGE) from None
        factor = scale or upscaler.scale
        tag = f"x{factor:g}"
        jobs = plan_jobs(files, output, format, tag)
        if not as_json:
            print_note(
                f"model {upscaler.name} (x{upscaler.scale}, {upscaler.architecture}) on"
                f" {upscaler.device}, {str(upscaler.dtype).removeprefix('torch.')}"
            )
        options = {
            "scale": scale,
            "sharpen": sharpen,
            "format": format,
            "quality": quality,
            "overwrite": overwrite,
            "skip_existing": skip_existing,
            "max_input_size": max_input_size,
        }
        rows = run_jobs(upscaler, jobs, options)
        print_summary(rows, as_json, upscaler.name)
        failed = any(row["status"] == "failed" for row in rows) or bool(unmatched)
        raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)
