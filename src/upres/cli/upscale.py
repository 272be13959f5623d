"""`upres upscale`: files, folders and globs in; bigger images out; bad files never stop a batch."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer.core import TyperCommand

from upres.cli.common import (
    COMPILE,
    EXIT_MODEL_UNAVAILABLE,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    FAST,
    MODELS_DIR,
    THREADS,
    apply_threads,
    cpu_threads,
    err,
    how_it_ran,
    out,
    print_error,
    print_note,
    shown,
    threads_note,
)
from upres.errors import ModelUnavailableError, RequestError, UpresError
from upres.io.paths import InputFile, Job, collect_inputs, plan_jobs
from upres.preflight import ANIMATION, VIDEO, InputInfo, inspect_input
from upres.request import UpscaleRequest, VideoRequest

if TYPE_CHECKING:
    # torch, OpenCV and PyAV: imported where a model runs, so that --help starts at once.
    from upres.api import FileResult, ImageRunner
    from upres.models.restoration import Pick


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
    return finished_row(row, result, error)


def failed_row(source: Path, error: str) -> dict:
    """An input refused by the pre-flight: it has no output."""
    return {"input": str(source), "output": None, "status": "failed", "error": error}


def finished_row(row: dict, result: FileResult | None, error: str | None) -> dict:
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
            "tiling": report.tiling,
        }
        if report.plan is not None:  # the forecast made before running, and what it measured
            row |= {"plan": report.plan.as_dict()}
            row |= {"peak_host_bytes": report.peak_host_bytes}
            row |= {"peak_device_bytes": report.peak_device_bytes}
    return row


def run_jobs(
    upscaler: ImageRunner, jobs: list[Job], request: UpscaleRequest, kinds: dict[Path, str]
) -> list[dict]:
    rows = []
    with make_progress() as progress:
        images = progress.add_task("images", total=len(jobs))
        tiles = progress.add_task("tiles", total=None, visible=False)

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total, visible=True)

        for job in jobs:
            progress.update(images, description=f"images [dim]{job.source.name}[/]")
            # Videos and animations report frames, not tiles, through the same callback.
            unit = "frames" if kinds.get(job.source) in (VIDEO, ANIMATION) else "tiles"
            progress.reset(tiles, total=None, visible=False, description=unit)
            try:
                result = upscaler.upscale_file(
                    job.source, job.destination, request=request, progress=on_tile
                )
                rows.append(result_row(job, result, None))
                for note in result.report.notes if result.report else []:
                    progress.console.print(
                        f"[yellow]note:[/] {shown(job.source)}: {shown(note)}", highlight=False
                    )
            except Exception as error:  # one input's failure, whatever it is, stops only it
                message = one_line(error, job.source)
                rows.append(result_row(job, None, message))
                progress.console.print(f"[bold red]error:[/] {shown(message)}", highlight=False)
            progress.advance(images)
    return rows


def one_line(error: BaseException, source: Path) -> str:
    """The error as one line that names the file (our typed errors already do)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, UpresError) and str(source) in text:
        return text
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    elif not isinstance(error, UpresError | ValueError | OSError):  # not ours: say what it is
        text = f"{type(error).__name__}: {text}"
    return f"{source}: {text}"


def print_summary(rows: list[dict], as_json: bool, model: str, chosen: dict | None = None) -> None:
    counts = {
        status: sum(r["status"] == status for r in rows) for status in ("done", "skipped", "failed")
    }
    if as_json:
        extra = {"chosen": chosen} if chosen else {}
        typer.echo(json.dumps({"model": model, **counts, **extra, "images": rows}, indent=2))
        return
    for row in rows:
        if row["status"] == "done":
            width, height = row["output_size"]
            out.print(
                f"[green]wrote[/] {shown(row['output'])}  ({width}x{height},"
                f" {row['seconds']:.1f}s)",
                highlight=False,
            )
        elif row["status"] == "skipped":
            out.print(f"[dim]skipped[/] {shown(row['output'])} (exists)", highlight=False)
    out.print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")


# Options shared by `upscale` and `restore` (typer lets one Option serve several commands).
INPUTS = typer.Argument(..., metavar="INPUT...", help="Image files, folders or globs.")
OUTPUT = typer.Option(
    None, "-o", "--output", help="Output file (one input) or folder. Default: beside each input."
)
TILE = typer.Option(
    None,
    "--tile",
    help="Tile size in input pixels (>= 32), 0 for one tile (no tiling), or 'auto'"
    " (from free memory; env UPRES_TILE_SIZE).",
)
TILE_OVERLAP = typer.Option(32, "--tile-overlap", help="Context pixels around each tile.")
PRECISION = typer.Option("auto", "--precision", help="auto|fp32|fp16|bf16 (env UPRES_PRECISION).")
DEVICE = typer.Option("auto", "--device", help="auto|cpu|cuda|cuda:N|mps.")
FORMAT = typer.Option(None, "--format", help="png|jpg|webp|tiff (default: the input's own format).")
QUALITY = typer.Option(None, "--quality", help="JPEG/WebP quality, 1..100.")
RECURSIVE = typer.Option(False, "--recursive", "-r", help="Look inside sub-folders.")
SKIP_EXISTING = typer.Option(False, "--skip-existing", help="Leave existing outputs alone.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace existing outputs.")
MAX_INPUT_SIZE = typer.Option(
    None,
    "--max-input-size",
    help="Downsize inputs longer than N px on a side first (env UPRES_MAX_INPUT_SIZE).",
)
MAX_INPUT_PIXELS = typer.Option(
    None,
    "--max-input-pixels",
    help="Refuse inputs whose header declares more pixels than this (default: no limit"
    " beyond Pillow's decompression-bomb guard).",
)
MAX_OUTPUT_PIXELS = typer.Option(
    None,
    "--max-output-pixels",
    help="Refuse results larger than this, before any work (default: what the memory"
    " available holds; env UPRES_MAX_OUTPUT_PIXELS).",
)
SUFFIX = typer.Option(
    None,
    "--suffix",
    help="Results written beside their inputs are NAME_SUFFIX.EXT (default: the scale, x4).",
)
ALPHA = typer.Option(
    "model", "--alpha", help="How transparency is upscaled: model (default) or bicubic."
)
WIDTH = typer.Option(None, "--width", help="Exact result width in pixels (aspect kept).")
HEIGHT = typer.Option(None, "--height", help="Exact result height in pixels (aspect kept).")
LONG_SIDE = typer.Option(
    None, "--long-side", help="Exact length of the result's longer side (aspect kept)."
)
SHARPEN = typer.Option(0.0, "--sharpen", help="0 off, 0.3 visible, 1 strong; never halos.")
DENOISE_STRENGTH = typer.Option(
    None,
    "--denoise-strength",
    help="0..1: 0 keeps noise, 1 removes most; for models that have it (realesr-general-v3-x4).",
)
AS_JSON = typer.Option(False, "--json", help="Print a machine-readable summary.")
VIDEO_CODEC = typer.Option(
    None,
    "--video-codec",
    help="Video encoder: libx264, libx265, libvpx-vp9, libsvtav1...;"
    " default libx264 (libvpx-vp9 for .webm).",
)
CRF = typer.Option(None, "--crf", help="Video constant quality, 0..63 (lower is better).")
PRESET = typer.Option(None, "--preset", help="Video encoder preset (e.g. veryfast, slow).")
PIX_FMT = typer.Option("yuv420p", "--pix-fmt", help="Video pixel format (yuv420p plays anywhere).")
FACE_ENHANCE = typer.Option(
    None,
    "--face-enhance",
    metavar="[MODEL]",
    help="Restore faces with a face model (alone: gfpgan-v1.4; also gfpgan-v1.3,"
    " restoreformer, codeformer (non-commercial licence), or a file) and paste them back.",
)


class FaceFlagCommand(TyperCommand):
    """Lets `--face-enhance` stand without a value (the default face model), as
    Real-ESRGAN's flag does: typer has no options whose value is optional."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, with_default_face_model(args))


def with_default_face_model(args: list[str]) -> list[str]:
    """`--face-enhance` followed by anything but a face model's name or a checkpoint file
    (an option, an input image, nothing) means `--face-enhance=gfpgan-v1.4`.
    Light on purpose (no torch): it runs for every command line, --help included."""
    if "--face-enhance" not in args:
        return args
    from upres.models.catalog import find_card
    from upres.models.user import CHECKPOINT_SUFFIXES
    from upres.models.zoo.faces import DEFAULT_FACE_MODEL

    rewritten = list(args)
    for index, arg in enumerate(args):
        if arg != "--face-enhance":
            continue
        following = args[index + 1] if index + 1 < len(args) else ""
        card = find_card(following) if following else None
        names_a_model = (card is not None and card.task == "face") or Path(
            following
        ).suffix.lower() in CHECKPOINT_SUFFIXES
        if not names_a_model:
            rewritten[index] = f"--face-enhance={DEFAULT_FACE_MODEL}"
    return rewritten


FACE_STRENGTH = typer.Option(
    1.0, "--face-strength", min=0.0, max=1.0, help="0 keeps the SR faces, 1 the restored ones."
)
FACE_MIN_SIZE = typer.Option(
    None, "--face-min-size", min=0.0, help="Leave faces smaller than N input px (default 24)."
)
FACE_CONFIDENCE = typer.Option(
    None,
    "--face-confidence",
    min=0.0,
    max=1.0,
    help="Leave faces detected with a lower confidence (default 0.95).",
)


@dataclass
class Batch:
    """One command's worth of work: inputs, the models to run, and how to write results."""

    inputs: list[str]
    output: Path | None
    models: list[str] | None
    scale: float | None = None
    width: int | None = None
    height: int | None = None
    long_side: int | None = None
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
    max_input_pixels: int | None = None
    max_output_pixels: int | None = None
    sharpen: float = 0.0
    alpha: str = "model"
    suffix: str | None = None
    denoise_strength: float | None = None
    as_json: bool = False
    fast: bool = True
    compile: bool = False
    threads: int | None = None  # torch CPU threads; None: UPRES_THREADS or torch's default
    video: VideoRequest = field(default_factory=VideoRequest)
    # Face restoration (upres.faces): a face model's name, or None for none.
    face_enhance: str | None = None
    face_strength: float = 1.0
    face_min_size: float | None = None
    face_confidence: float | None = None
    dry_run: bool = False  # print each input's plan and memory forecast; run nothing
    # Checks the loaded models before any file is touched; returns a problem or None.
    check: Callable[[ImageRunner], str | None] | None = None
    # The NAME_TAG of results written beside their inputs when --suffix is not given;
    # None: the scale or size asked for (x4, w1920...).
    task_tag: str | None = None
    # The model for each input, chosen from the file (restore's pick by JPEG quality or
    # --sigma); None runs `models` on every input.
    choose: Callable[[Path], Pick] | None = None


def build_request(batch: Batch) -> UpscaleRequest:
    """The command's options as one validated request (the rules every surface shares)."""
    return UpscaleRequest(
        models=tuple(batch.models or ()),
        scale=batch.scale,
        width=batch.width,
        height=batch.height,
        long_side=batch.long_side,
        tile=batch.tile,
        tile_overlap=batch.tile_overlap,
        precision=batch.precision,
        device=batch.device,
        format=batch.format,
        quality=batch.quality,
        sharpen=batch.sharpen,
        alpha=batch.alpha,
        denoise_strength=batch.denoise_strength,
        max_input_size=batch.max_input_size,
        max_input_pixels=batch.max_input_pixels,
        max_output_pixels=batch.max_output_pixels,
        overwrite=batch.overwrite,
        skip_existing=batch.skip_existing,
        suffix=batch.suffix,
        video=batch.video,
    )


def inspect_all(
    files: list[InputFile], request: UpscaleRequest
) -> tuple[list[InputFile], dict[Path, InputInfo], list[dict]]:
    """The header-only pre-flight of every input: the usable ones, and a row per bad one."""
    usable, infos, rows = [], {}, []
    for item in files:
        try:
            infos[item.path] = inspect_input(item.path, request.max_input_pixels)
            usable.append(item)
        except Exception as error:  # also a header no reader expected
            message = one_line(error, item.path)
            rows.append(failed_row(item.path, message))
            print_error(message)
    return usable, infos, rows


def run_batch(batch: Batch) -> NoReturn:
    """Check the request and every input, load, run each file (a bad one never stops the
    rest), summarise, exit: 0 all done, 1 some inputs failed, 2 usage, 3 model unavailable.

    With `batch.choose` each input gets its own model; every model is loaded (and checked)
    before any file is touched, and each runs on its own inputs."""
    try:
        request = build_request(batch)
        cpu_threads(batch.threads)
    except RequestError as error:
        usage_error(f"{cli_option(error.option)} {error.problem}")
    except ValueError as error:
        usage_error(str(error))
    files, problems = collect_inputs(batch.inputs, batch.recursive)
    for problem in problems:
        print_error(problem)
    if not files:
        usage_error("no input images" if not problems else "nothing to upscale")
    files, infos, failed_rows = inspect_all(files, request)
    if not files:  # every input was refused: no model needs to load
        print_summary(failed_rows, batch.as_json, ",".join(request.models) or "default")
        raise typer.Exit(EXIT_SOME_FAILED)
    picks = {item.path: batch.choose(item.path) for item in files} if batch.choose else {}
    groups = sorted({pick.model for pick in picks.values()}) if picks else [None]
    runners = {model: checked_runner(batch, request, model) for model in groups}
    first = next(iter(runners.values()))
    tag = request.tag(first.scale) if request.suffix or not batch.task_tag else batch.task_tag
    animations = frozenset(p for p, info in infos.items() if info.kind == ANIMATION)
    jobs = plan_jobs(files, batch.output, request.format, tag, animations)
    if not batch.as_json:
        for runner in runners.values():
            print_note(
                f"model {runner.name} (x{runner.scale}, {runner.architecture}) on"
                f" {runner.device}, {str(runner.dtype).removeprefix('torch.')}{threads_note()}"
            )
        for path, pick in picks.items():
            print_note(f"{path}: {pick.reason} -> {pick.model}")
    if batch.dry_run:
        dry_run(first, jobs, batch, request, failed_rows)
    kinds = {path: info.kind for path, info in infos.items()}
    rows = list(failed_rows)
    for model, runner in runners.items():
        mine = [job for job in jobs if model is None or picks[job.source].model == model]
        for row, job in zip(run_jobs(runner, mine, request, kinds), mine, strict=True):
            pick = picks.get(job.source)
            rows.append(row | ({"model": runner.name, "pick": pick.reason} if pick else {}))
    names = ", ".join(runner.name for runner in runners.values())
    print_summary(rows, batch.as_json, names, how_it_ran(first))
    failed = any(row["status"] == "failed" for row in rows) or bool(problems)
    raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def checked_runner(batch: Batch, request: UpscaleRequest, model: str | None) -> ImageRunner:
    """The request's models (or the one picked for some inputs), loaded and checked for
    the command; a problem is a usage error."""
    if model is not None:
        request = request.with_options(models=(model,))
    runner = load_runner(batch, request)
    problem = batch.check(runner) if batch.check else None
    if problem:
        usage_error(problem)
    return runner


def load_runner(batch: Batch, request: UpscaleRequest) -> ImageRunner:
    """Load the model(s); a name or file that is wrong is a usage error, a catalogued model
    that cannot be fetched has its own exit code."""
    from upres.api import load

    try:
        apply_threads(batch.threads)  # before loading: torch sizes its pools on first use
        return load(
            list(request.models) or None,
            device=request.device,
            precision=request.precision,
            tile=request.tile,
            tile_overlap=request.tile_overlap,
            denoise_strength=request.denoise_strength,
            fast=batch.fast,
            compile=batch.compile,
            face_enhance=batch.face_enhance,
            face_strength=batch.face_strength,
            face_min_size=batch.face_min_size,
            face_confidence=batch.face_confidence,
        )
    except ModelUnavailableError as error:
        print_error(str(error))
        raise typer.Exit(EXIT_MODEL_UNAVAILABLE) from None
    except (UpresError, ValueError, RuntimeError) as error:
        usage_error(str(error))


def cli_option(name: str) -> str:
    """A request field's name as the command line spells it (long_side -> --long-side);
    a problem naming another field (`cannot be combined with scale`) reads the same."""
    return f"--{name.replace('_', '-')}" if name.islower() else name


def dry_run(
    runner: ImageRunner,
    jobs: list[Job],
    batch: Batch,
    request: UpscaleRequest,
    refused: list[dict],
) -> NoReturn:
    """Each input's plan from its header: the model is loaded but never run. `refused`:
    the inputs the pre-flight already turned down (reported, and counted in the exit)."""
    from upres.io.probe import probe
    from upres.request import downsized

    rows = list(refused)
    for job in jobs:
        row: dict = {"input": str(job.source), "output": str(job.destination)}
        try:
            info = probe(job.source)
            limited = downsized(info.width, info.height, request.max_input_size)
            target = request.output_size(*limited, runner.scale)
            plan = runner.plan_image(
                info.width,
                info.height,
                info.channels,
                alpha=info.alpha,
                bit_depth=info.bit_depth,
                scale=target[0] / limited[0],
                max_input_size=request.max_input_size,
                sharpen=request.sharpen,
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
            f"  {why(row)}\n"
            f"  predicted peak: host {mebibytes(row['forecast_peak_host_bytes'])}"
            + (f", device {mebibytes(device_peak)}" if device_peak is not None else ""),
            highlight=False,
        )


def why(row: dict) -> str:
    """The precision and the CPU threads chosen, with the reasons."""
    text = f"precision {row.get('precision_reason') or row['precision']}"
    threads = row.get("threads")
    if threads:
        text += f"; {threads['threads']} CPU thread(s): {threads['reason']}"
    return text


def mebibytes(count: int) -> str:
    return f"{count / 2**20:,.0f} MiB"


def usage_error(message: str) -> NoReturn:
    print_error(message)
    raise typer.Exit(EXIT_USAGE)


def register(app: typer.Typer) -> None:
    @app.command("upscale", cls=FaceFlagCommand)
    def upscale(
        inputs: list[str] = INPUTS,
        output: Path | None = OUTPUT,
        model: list[str] | None = typer.Option(
            None,
            "-m",
            "--model",
            help="Built-in model name (see `upres models`), a checkpoint or ncnn .param path,"
            " or a file stem in --models-dir; repeat to chain models in order (-m a -m b).",
        ),
        models_dir: str | None = MODELS_DIR,
        scale: float | None = typer.Option(
            None,
            "--scale",
            help="Any factor; default the model's own (a chain's: the product)."
            " Above it the model runs again.",
        ),
        width: int | None = WIDTH,
        height: int | None = HEIGHT,
        long_side: int | None = LONG_SIDE,
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
        sharpen: float = SHARPEN,
        alpha: str = ALPHA,
        suffix: str | None = SUFFIX,
        denoise_strength: float | None = DENOISE_STRENGTH,
        as_json: bool = AS_JSON,
        fast: bool = FAST,
        compile: bool = COMPILE,
        threads: int | None = THREADS,
        video_codec: str | None = VIDEO_CODEC,
        crf: int | None = CRF,
        preset: str | None = PRESET,
        pix_fmt: str = PIX_FMT,
        face_enhance: str | None = FACE_ENHANCE,
        face_strength: float = FACE_STRENGTH,
        face_min_size: float | None = FACE_MIN_SIZE,
        face_confidence: float | None = FACE_CONFIDENCE,
        dry_run: bool = typer.Option(
            False,
            "--dry-run",
            help="Print each input's plan (device, precision, tiles, passes, output size,"
            " predicted peak memory) without running the model.",
        ),
    ) -> None:
        """Upscale images, videos and animations with a super-resolution model (or a chain).

        Exit status: 0 all done; 1 some inputs failed, each named on one line;

        2 a usage error; 3 the model is known but not available here.
        """
        run_batch(
            Batch(
                inputs,
                output,
                model or None,
                scale=scale,
                width=width,
                height=height,
                long_side=long_side,
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
                sharpen=sharpen,
                alpha=alpha,
                suffix=suffix,
                denoise_strength=denoise_strength,
                as_json=as_json,
                fast=fast,
                compile=compile,
                threads=threads,
                video=VideoRequest(video_codec, crf, preset, pix_fmt),
                face_enhance=face_enhance,
                face_strength=face_strength,
                face_min_size=face_min_size,
                face_confidence=face_confidence,
                dry_run=dry_run,
            )
        )
