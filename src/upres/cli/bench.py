"""`upres bench [--quick] [--json]`: the stock and fast paths, timed side by side."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from upres.cli.common import EXIT_USAGE, err, out, print_error

if TYPE_CHECKING:
    from upres.bench.measure import BenchReport

# Input sides (pixels): quick fits a minute on a 2-core CPU; a GPU needs bigger inputs to fill.
SIDES = {("cpu", True): 64, ("cpu", False): 192, ("gpu", True): 512, ("gpu", False): 1024}


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_command(
        quick: bool = typer.Option(False, "--quick", help="Small input, one timed run."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
        model: list[str] = typer.Option(
            [], "-m", "--model", help="Only models whose name contains this (repeatable)."
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
        size: int | None = typer.Option(None, "--size", help="Input side in pixels."),
        repeats: int | None = typer.Option(
            None, "--repeats", help="Timed runs per path (best is kept); default 1 quick, else 2."
        ),
    ) -> None:
        """Time SwinIR-M, Swin2SR, HAT, DAT-light, RRDBNet and Compact (x4, random weights)."""
        import torch

        from upres.bench.measure import BenchReport, bench_image, bench_model, device_name
        from upres.bench.models import select
        from upres.engine.allocator import keep_freed_memory
        from upres.engine.plan import resolve_device

        try:
            models = select(model)
            target = resolve_device(device)
        except ValueError as error:
            print_error(str(error))
            raise typer.Exit(EXIT_USAGE) from None
        side = size or SIDES[("cpu" if target.type == "cpu" else "gpu", quick)]
        if side < 16 or (repeats is not None and repeats < 1):
            print_error("--size must be at least 16 and --repeats at least 1")
            raise typer.Exit(EXIT_USAGE)
        report = BenchReport(
            device=str(target),
            device_name=device_name(target),
            threads=torch.get_num_threads(),
            size=(side, side),
            quick=quick,
        )
        image = bench_image(side, side)
        # Random weights drive activations into denormal floats, which real checkpoints
        # rarely do and which run 10x slower on a CPU: flush them for both paths.
        torch.set_flush_denormal(True)
        keep_freed_memory()  # as upscale and the service run (engine/allocator.py)
        timed_runs = repeats or (1 if quick else 2)
        for spec in models:
            err.print(f"[dim]timing {spec.name} on {side}x{side}...[/]", highlight=False)
            report.models.append(bench_model(spec, target, image, timed_runs, report.peak_tflops))
        if target.type == "cpu":
            from upres.engine.fast import native

            report.native_attention = native.state()
        if as_json:
            out.print_json(json.dumps(report.to_json()))
        else:
            show(report)


SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def show(report: BenchReport) -> None:
    from upres.bench.measure import STOCK_TILE

    height, width = report.size
    table = Table(
        title=f"{report.device_name} ({report.device}, {report.threads} threads), "
        f"{width}x{height} input",
        title_justify="left",
    )
    for column in ("model", "stock Mpx/s", "fast Mpx/s", "speedup", "fast dtype", "peak MB"):
        table.add_column(column, justify="left" if column == "model" else "right")
    table.add_column("GFLOP/px", justify="right")
    table.add_column("of peak", justify="right")
    table.add_column("agree dB", justify="right")
    table.columns[0].no_wrap = True
    for m in report.models:
        table.add_row(
            m.name,
            f"{m.stock.mpx_s:.4g}",
            f"{m.fast.mpx_s:.4g}",
            f"[bold]{m.speedup:.2f}x[/]",
            SHORT_DTYPE.get(m.fast.precision, m.fast.precision),
            f"{m.fast.peak_mem_mb:.0f}",
            f"{m.flops_per_px / 1e9:.3f}",
            f"{m.fraction_of_peak:.1%}",
            f"{m.agreement_db:.1f}",
        )
    Console(width=max(out.width, 132)).print(table)  # wide enough that no column is cut
    peaks = ", ".join(f"{k} {v:.1f}" for k, v in report.peak_tflops.items())
    out.print(
        f"stock: spandrel modules, fp32, {STOCK_TILE}-px tiles one at a time; fast: upres defaults."
        f" Peak = measured large matmul (TFLOP/s: {peaks}).",
        highlight=False,
    )
    if report.native_attention is not None:
        out.print(f"DAT's native attention kernel: {report.native_attention}.", highlight=False)
