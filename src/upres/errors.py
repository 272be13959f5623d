"""Typed errors; each surface maps them to its own form (CLI line and exit code, 4xx JSON, row)."""

from __future__ import annotations

from pathlib import Path


class UpresError(Exception):
    """Base class: the message is one line a person can act on."""

    def __reduce__(self) -> tuple:
        # Rebuilt without calling __init__, whose arguments differ by subclass: a batch
        # worker's error reaches the driver as the same type, message and fields.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[UpresError], args: tuple, fields: dict) -> UpresError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(fields)
    return error


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


class RequestError(UpresError, ValueError):
    """An option that cannot be honoured (a usage error): the same rule and message on
    every surface. `option` is the request field's name (scale, tile, width...); the
    problem reads on from it ("must be greater than 0, not 0")."""

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"{option} {problem}")


class OutputError(UpresError):
    """The result cannot be written where asked: a folder, an unwritable place, a format
    that cannot hold this kind of result."""

    def __init__(self, destination: str | Path, problem: str) -> None:
        self.destination = str(destination)
        self.problem = problem
        super().__init__(f"{self.destination}: {problem}")


class OutputTooLargeError(BadInputError):
    """The planned result has more pixels than the output limit; `largest_scale` fits."""

    def __init__(
        self, source: str | Path | None, size: tuple[int, int], limit: int, largest_scale: float
    ) -> None:
        self.size = size
        self.limit = limit
        self.largest_scale = largest_scale
        width, height = size
        super().__init__(
            source,
            f"the result would be {width}x{height} = {width * height:,} pixels, more than the"
            f" output limit of {limit:,} (--max-output-pixels); a scale of at most"
            f" {largest_scale:.2f} fits",
        )


class ModelUnavailableError(ModelNotFoundError):
    """A catalogued model whose weights are not here and could not be fetched (offline, a
    failed or refused download, a package not installed)."""
