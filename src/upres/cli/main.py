"""Entry point: `upres` (console script) and `python -m upres`."""

from __future__ import annotations

import typer

import upres
from upres.cli import batch as batch_command
from upres.cli import bench as bench_command
from upres.cli import eval as eval_command
from upres.cli import export as export_command
from upres.cli import models as models_command
from upres.cli import restore as restore_command
from upres.cli import serve as serve_command
from upres.cli import train as train_command
from upres.cli import upscale as upscale_command
from upres.cli.common import quiet_library_warnings

app = typer.Typer(
    name="upres",
    help="Image super-resolution and restoration: bigger, sharper, never out of memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"upres {upres.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=show_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Image super-resolution and restoration."""
    quiet_library_warnings()


upscale_command.register(app)
restore_command.register(app)
models_command.register(app)
eval_command.register(app)
serve_command.register(app)
train_command.register(app)
batch_command.register(app)
bench_command.register(app)
export_command.register(app)


def run() -> None:
    app()
