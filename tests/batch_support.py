"""Test-only model wrappers for the batch runners; importable by Ray workers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from upres.api import ImageRunner
from upres.batch.item import RunnerSpec


class _CrashOnce(ImageRunner):
    """Kills its whole process on an image of the batch (after `after`), once per marker file.

    The marker lives on disk, not in the process, so the restarted actor (a new process)
    sees it and works normally: one deterministic crash, whichever actor gets there first.
    """

    def __init__(self, inner: ImageRunner, marker: Path, hard: bool, after: int) -> None:
        self.inner, self.marker, self.hard, self.after = inner, marker, hard, after
        self.name, self.scale = inner.name, inner.scale

    def upscale_image(self, image: Any, **kwargs: Any) -> Any:
        self.after -= 1
        if self.after >= 0:  # images to finish before dying
            return self.inner.upscale_image(image, **kwargs)
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return self.inner.upscale_image(image, **kwargs)
        os.close(fd)
        if not self.hard:  # in-process runs: end the run without killing pytest itself
            raise SystemExit("killed mid-run")
        os._exit(1)  # no exception, no cleanup: what a segfault or an OOM kill looks like


@dataclass(frozen=True)
class CrashOnceSpec:
    spec: RunnerSpec
    marker: str
    hard: bool = True  # os._exit (a Ray worker) or SystemExit (the local engine's process)
    after: int = 0  # images this process finishes before it dies

    def __call__(self) -> ImageRunner:
        return _CrashOnce(self.spec(), Path(self.marker), self.hard, self.after)


class _CrashOnWidth(ImageRunner):
    """Kills its whole process on every image of one width: an input a decoder cannot survive."""

    def __init__(self, inner: ImageRunner, width: int) -> None:
        self.inner, self.width = inner, width
        self.name, self.scale = inner.name, inner.scale

    def upscale_image(self, image: Any, **kwargs: Any) -> Any:
        if image.width == self.width:
            os._exit(139)
        return self.inner.upscale_image(image, **kwargs)


@dataclass(frozen=True)
class CrashOnWidthSpec:
    spec: RunnerSpec
    width: int

    def __call__(self) -> ImageRunner:
        return _CrashOnWidth(self.spec(), self.width)
