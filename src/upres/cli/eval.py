"""`upres eval`: score a model on a benchmark set the way published tables do."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.progress import Progress
from rich.table import Table

from upres.cli.common import EXIT_USAGE, err, out, print_error
from upres.errors import UpresError

if TYPE_CHECKING:
    from upres.metrics.evaluate import EvalResult

COLUMN_TITLES = {
    "psnr_y": "PSNR-Y",
    "ssim_y": "SSIM-Y",
    "psnr_rgb": "PSNR-RGB",
    "ssim_rgb": "SSIM-RGB",
    "psnr_b": "PSNR-B",
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
            None, "--tile", help="Tile size in pixels (default: automatic)."
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
        try:
            result = run_with_progress(
                show=not as_json,
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
            )
        except (UpresError, ValueError) as error:  # ValueError: e.g. a device not here
            fail(str(error))
        if output_dir is not None:
            write_results(result, output_dir)
        if as_json:
            typer.echo(json.dumps(result.to_dict()))
        else:
            out.print(results_table(result))


def fail(message: str) -> NoReturn:
    print_error(message)
    raise typer.Exit(EXIT_USAGE)


def run_with_progress(show: bool, **options: Any) -> EvalResult:
    """evaluate(), with a progress bar on stderr unless the output must stay pure JSON."""
    from upres.metrics.evaluate import evaluate

    if not show:
        return evaluate(**options)
    with Progress(console=err, transient=True) as progress:
        bar = progress.add_task("evaluating", total=None)

        def advance(done: int, total: int, name: str) -> None:
            progress.update(bar, completed=done, total=total, description=name)

        return evaluate(**options, progress=advance)


def results_table(result: EvalResult) -> Table:
    spec = result.spec
    title = f"{result.model} on {result.dataset}: {spec.describe()}"
    if spec.crop_border:
        title += f", {spec.crop_border}-pixel border ignored"
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
    return f"{value:.4f}" if metric.startswith("ssim") else f"{value:.2f}"


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
