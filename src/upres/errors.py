"""Typed errors; each surface maps them to its own form (CLI line and exit code, 4xx JSON, row)."""

from __future__ import annotations

from pathlib import Path


class UpresError(Exception):
    """Base class: the message is one line a person can act on."""


class BadInputError(UpresError):
    """An input file (or array) that cannot be used: corrupt, empty, not an image, zero-sized."""

    def __init__(self, source: str | Path | None, problem: str) -> None:
        self.source = str(source) if source is not None else None
        self.problem = problem
        where = f"{self.source}: " if self.source else ""
        super().__init__(f"{where}{problem}")


class ModelNotFoundError(UpresError):
    """A model name that is not in the catalogue and is not a file."""


class ModelLoadError(UpresError):
    """A file that is not a usable model: unknown architecture, unsafe pickle, corrupt."""

    def __init__(self, source: str | Path, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class OutputExistsError(UpresError):
    """The output file exists and neither --overwrite nor --skip-existing was given."""


class OutOfMemoryError(UpresError):
    """A tile still did not fit after halving it down to the smallest allowed size."""
