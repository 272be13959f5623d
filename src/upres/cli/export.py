"""`upres export -m NAME --onnx out.onnx [--tile N] [--dynamic]`: a model as an ONNX graph."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from upres.cli.common import EXIT_USAGE, THREADS, apply_threads, out, print_error


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        model: str = typer.Option(
            ..., "-m", "--model", help="Built-in model name or a checkpoint path."
        ),
        onnx: Path = typer.Option(..., "--onnx", help="Where to write the ONNX graph."),
        tile: int = typer.Option(
            256, "--tile", help="Input side of the graph in pixels (traced at, when --dynamic)."
        ),
        dynamic: bool = typer.Option(
            False, "--dynamic", help="Free height and width (convolutional families only)."
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
        as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
        threads: int | None = THREADS,
    ) -> None:
        """Write a model as an ONNX graph, checked against PyTorch in ONNX Runtime."""
        from upres.errors import UpresError
        from upres.models.export import export_onnx
        from upres.models.loader import load_model

        try:
            apply_threads(threads)
            loaded = load_model(model)
            result = export_onnx(loaded, onnx, tile=tile, dynamic=dynamic, overwrite=overwrite)
        except (UpresError, ValueError) as error:
            print_error(str(error))
            raise typer.Exit(EXIT_USAGE) from None
        summary = {
            "model": loaded.name,
            "architecture": loaded.descriptor.architecture.name,
            "onnx": str(result.path),
            "input_shape": result.input_shape,
            "scale": result.scale,
            "psnr_vs_pytorch_db": round(result.psnr_db, 2),
            "checked_sizes": [list(side) for side in result.checked_sides],
        }
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
            return
        shape = "x".join(str(d) for d in result.input_shape)
        out.print(
            f"[green]wrote[/] {result.path} (input {shape}, x{result.scale};"
            f" ONNX Runtime vs PyTorch {result.psnr_db:.1f} dB)",
            highlight=False,
        )
