"""What every command shares: consoles and how errors are shown."""

from __future__ import annotations

from rich.console import Console

# Results go to stdout (so --json stays parseable); progress and errors to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def print_error(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)


def print_note(message: str) -> None:
    err.print(f"[yellow]note:[/] {message}", highlight=False)
