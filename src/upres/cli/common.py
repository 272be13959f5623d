"""What every command shares: consoles, how errors are shown, and how models are run."""

from __future__ import annotations

import os
import warnings

import typer
from rich.console import Console
from rich.markup import escape

# Results go to stdout (so --json stays parseable); progress and errors to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
# A catalogued model whose weights are not here and could not be fetched (offline, a
# failed download, a missing package): not the user's typing, so not EXIT_USAGE.
EXIT_MODEL_UNAVAILABLE = 3


def shown(text: object) -> str:
    """Text safe to print: file names that are not UTF-8 keep their bytes as \\xNN escapes
    instead of crashing the console, and [brackets] in names are not read as markup."""
    raw = str(text).encode("utf-8", "surrogateescape")
    return escape(raw.decode("utf-8", "backslashreplace"))


# Messages are plain text: escaped, so that `pip install 'upres[ray]'` or a file named
# `photo[1].png` keeps its brackets instead of being read as rich markup.
def print_error(message: str) -> None:
    err.print(f"[bold red]error:[/] {shown(message)}", highlight=False, markup=True)


def print_note(message: str) -> None:
    err.print(f"[yellow]note:[/] {shown(message)}", highlight=False)


def quiet_library_warnings() -> None:
    """Warnings raised inside torch, torchvision and spandrel speak to their developers
    (deprecations, internal notices such as meshgrid's indexing argument), not to a person
    running a command: the command's own notes say what matters."""
    for library in ("torch", "torchvision", "spandrel"):
        warnings.filterwarnings("ignore", module=rf"{library}(\.|$)")


# -- how a loaded model runs (upscale, restore, batch) -------------------------------------

THREADS_ENV = "UPRES_THREADS"

FAST = typer.Option(
    True,
    "--fast/--no-fast",
    help="--no-fast runs the checkpoint's reference modules (slower; for comparison).",
)
COMPILE = typer.Option(
    False,
    "--compile",
    help="torch.compile the model for the planned tile shape; pays off on long batches on a GPU.",
)
THREADS = typer.Option(
    None,
    "--threads",
    help=f"CPU threads (default: env {THREADS_ENV}, else the cores free now, re-checked).",
)


def cpu_threads(threads: int | None) -> int | None:
    """--threads N, else UPRES_THREADS, else None (torch's default); ValueError if not >= 1."""
    if threads is None:
        value = os.environ.get(THREADS_ENV, "").strip()
        if not value:
            return None
        try:
            threads = int(value)
        except ValueError:
            raise ValueError(
                f"{THREADS_ENV} must be a positive number of CPU threads, not {value!r}"
            ) from None
        source = THREADS_ENV
    else:
        source = "--threads"
    if threads < 1:
        raise ValueError(f"{source} must be a positive number of CPU threads, not {threads}")
    return threads


def apply_threads(threads: int | None) -> int:
    """Set torch's CPU threads before a model loads: the explicit count, else the cores free
    now (re-checked between images); returns the number set."""
    from upres.engine.cores import configure

    return configure(cpu_threads(threads)).threads


# -- the user's models folder (upscale, models, serve) -------------------------------------


def use_models_dir(folder: str | None) -> str | None:
    """--models-dir: every model lookup of this process (names, listings) reads this folder."""
    if folder:
        from upres.models.user import MODELS_DIR_ENV

        os.environ[MODELS_DIR_ENV] = folder
    return folder


MODELS_DIR = typer.Option(
    None,
    "--models-dir",
    callback=use_models_dir,
    help="Your models folder (env UPRES_MODELS_DIR; default <user data dir>/custom):"
    " its checkpoints and ncnn pairs are models named after their files.",
)


def how_it_ran(runner: object) -> dict:
    """The engine, device, precision and CPU threads chosen, with why, for --json."""
    from upres.engine.cores import current_choice

    architecture = str(getattr(runner, "architecture", ""))
    facts: dict = {
        "engine": "onnxruntime" if "ONNX" in architecture.split("+") else "torch",
        "device": str(getattr(runner, "device", "")),
        "precision": str(getattr(runner, "dtype", "")).removeprefix("torch."),
    }
    if all(hasattr(runner, name) for name in ("dtype", "device", "precision", "fast")):
        from upres.engine.plan import precision_reason

        reason = precision_reason(runner.dtype, runner.device, runner.precision, runner.fast)
        facts["precision_reason"] = reason
    choice = current_choice()
    if choice is not None:
        facts["threads"] = choice.threads
        facts["threads_reason"] = choice.reason
    if facts["device"] == "cpu" and facts["engine"] == "torch":
        from upres.engine.fast import native

        facts["native_attention"] = native.state()  # DAT's fused kernel (engine/fast/native)
    return facts


def threads_note() -> str:
    from upres.engine.cores import current_choice

    choice = current_choice()
    return "" if choice is None else f", {choice.threads} thread(s) ({choice.reason})"
