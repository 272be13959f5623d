"""`upres eval`: score a model on a benchmark set the way published tables do."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.progress import Progress
from rich.table import Table

from upres.cli.common import EXIT_USAGE, err, out, print_error, print_note
from upres.errors import UpresError

if TYPE_CHECKING:
    from upres.metrics.evaluate import EvalResult, ImageScore

COLUMN_TITLES = {
    "psnr_y": "PSNR-Y",
    "ssim_y": "SSIM-Y",
    "psnr_rgb": "PSNR-RGB",
    "ssim_rgb": "SSIM-RGB",
    "psnr_b": "PSNR-B",
    "psnr_b_y": "PSNR-B-Y",
}


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        model: str = typer.Option(
            ..., "-m", "--model", help="Model name or file; 'bicubic' (SR) or 'identity' baselines."
        ),
        dataset: str = typer.Option(
            ...,
            "-d",
            "--dataset",
            help="Set5, Set14, B100, Kodak24, Set12, BSD68, CBSD68, "
            "McMaster, classic5, LIVE1, or a folder of ground-truth images.",
        ),
        scale: int | None = typer.Option(
            None, "-s", "--scale", help="SR factor (default: the model's)."
        ),
        task: str = typer.Option("sr", "--task", help="sr, denoise or jpeg."),
        sigma: float | None = typer.Option(
            None, "--sigma", help="Noise level for denoise (default 25)."
        ),
        quality: int | None = typer.Option(
            None, "--quality", help="JPEG quality for jpeg (default 10)."
        ),
        grey: bool | None = typer.Option(
            None,
            "--grey/--colour",
            help="Denoise/jpeg in grey or colour (default: as the files are).",
        ),
        matlab_grey: bool = typer.Option(
            False,
            "--matlab-grey",
            help="SR: score single-channel files on their grey values "
            "(MATLAB scripts behind older tables) instead of Y of three equal channels (SwinIR).",
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps ..."),
        tile: int | None = typer.Option(
            None,
            "--tile",
            help="Tile size in pixels (default: each image whole, as the papers score it; "
            "tiled with a warning only where memory does not allow).",
        ),
        limit: int | None = typer.Option(
            None, "--limit", help="Only the first N images (by name), for a quick check."
        ),
        save_images: Path | None = typer.Option(
            None, "--save-images", help="Write every full output (PNG) here."
        ),
        output_dir: Path | None = typer.Option(
            None, "--output-dir", help="Write results.json and results.csv here."
        ),
        save_crops: Path | None = typer.Option(
            None, "--save-crops", help="Write input | output | ground-truth crops (PNG) here."
        ),
        as_json: bool = typer.Option(
            False, "--json", help="Print one JSON object instead of a table."
        ),
    ) -> None:
        """Score a model on a benchmark set: PSNR/SSIM on Y and RGB (and PSNR-B for JPEG)."""
        from upres.metrics.tasks import TASKS  # numpy, OpenCV: only once the command runs

        if task not in TASKS:
            fail(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
        if limit is not None and limit < 1:
            fail(f"--limit must be 1 or more, not {limit}")
        try:
            result = run_with_progress(
                model=model,
                dataset=dataset,
                scale=scale,
                task=task,
                sigma=sigma,
                quality=quality,
                grey=grey,
                matlab_grey=matlab_grey,
                device=device,
                tile=tile,
                save_crops=save_crops,
                limit=limit,
                save_images=save_images,
            )
        except (UpresError, ValueError) as error:  # ValueError: e.g. a device not here
            fail(str(error))
        for warning in result.warnings:
            print_note(f"not scored whole: {warning}")
        if output_dir is not None:
            write_results(result, output_dir)
        if as_json:
            typer.echo(json.dumps(result.to_dict()))
        else:
            out.print(results_table(result))


def fail(message: str) -> NoReturn:
    print_error(message)
    raise typer.Exit(EXIT_USAGE)


def run_with_progress(**options: Any) -> EvalResult:
    """evaluate() with progress on stderr (stdout keeps the table or the pure JSON): a bar
    on a terminal, else one line per image, which logs keep."""
    from upres.metrics.evaluate import evaluate

    if not err.is_terminal:

        def line(done: int, total: int, row: ImageScore) -> None:
            err.print(f"[{done}/{total}] {row.name}: PSNR-Y {row.psnr_y:.4f}", highlight=False)

        return evaluate(**options, progress=line)
    with Progress(console=err, transient=True) as progress:
        bar = progress.add_task("evaluating", total=None)

        def advance(done: int, total: int, row: ImageScore) -> None:
            progress.update(bar, completed=done, total=total, description=row.name)

        return evaluate(**options, progress=advance)


def results_table(result: EvalResult) -> Table:
    spec = result.spec
    title = f"{result.model} on {result.dataset}: {spec.describe()}"
    if spec.crop_border:
        title += f", {spec.crop_border}-pixel border ignored"
    if result.device is not None:
        how = "whole images" if result.whole_images else "some images tiled (see notes)"
        title += f"; {result.device}, {result.precision}, {how}"
    table = Table(title=title, title_justify="left")
    table.add_column("image")
    metrics = result.metric_names
    for metric in metrics:
        table.add_column(COLUMN_TITLES[metric], justify="right")
    for row in result.rows:
        table.add_row(row.name, *(formatted(metric, getattr(row, metric)) for metric in metrics))
    table.add_section()
    mean = result.mean
    table.add_row("[bold]mean[/]", *(f"[bold]{formatted(m, mean[m])}[/]" for m in metrics))
    return table


def formatted(metric: str, value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4f}"


def write_results(result: EvalResult, folder: Path) -> None:
    """results.json (the --json object) and results.csv (one row per image)."""
    folder.mkdir(parents=True, exist_ok=True)
    document = result.to_dict()
    (folder / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    columns = ["name", *result.metric_names]
    with (folder / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(document["images"])
