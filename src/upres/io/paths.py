"""Which files to read and where their results go (shared by the CLI and batch runners)."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
# Containers PyAV reads and writes (io/video.py), and animation-only image formats.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")
ANIMATION_SUFFIXES = (".gif", ".apng")
# Suffixes an output keeps from its input: these results are not still images.
KEPT_SUFFIXES = VIDEO_SUFFIXES + ANIMATION_SUFFIXES
FORMAT_SUFFIX = {
    "png": ".png",
    "jpg": ".jpg",
    "jpeg": ".jpg",
    "webp": ".webp",
    "tiff": ".tiff",
    "tif": ".tiff",
    "bmp": ".bmp",
}
GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    path: Path
    root: Path | None  # the folder it was found under, to mirror sub-folders in the output


@dataclass(frozen=True)
class Job:
    source: Path
    destination: Path


def collect_inputs(
    arguments: list[str], recursive: bool = False
) -> tuple[list[InputFile], list[str]]:
    """Files, folders and globs -> image files, plus the arguments that matched nothing."""
    found: list[InputFile] = []
    unmatched: list[str] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in path.glob(pattern) if p.is_file() and is_image_name(p))
            found += [InputFile(p, path) for p in files]
        elif path.exists() or not GLOB_CHARACTERS & set(argument):
            found.append(InputFile(path, None))  # a missing file is reported when it is read
        else:
            matches = sorted(Path(p) for p in glob.glob(argument, recursive=recursive))
            files = [p for p in matches if p.is_file()]
            if not files:
                unmatched.append(argument)
            found += [InputFile(p, None) for p in files]
    return unique(found), unmatched


def unique(items: list[InputFile]) -> list[InputFile]:
    seen: set[Path] = set()
    kept = []
    for item in items:
        key = item.path.resolve()
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def output_suffix(source: Path, format: str | None) -> str:
    if source.suffix.lower() in VIDEO_SUFFIXES:  # --format names still-image formats only
        return source.suffix.lower()
    if format:
        return FORMAT_SUFFIX[format.lower()]
    suffix = source.suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES + KEPT_SUFFIXES else ".png"


def plan_jobs(
    inputs: list[InputFile], output: Path | None, format: str | None, tag: str
) -> list[Job]:
    """Where each result goes.

    One input and an OUT with an image suffix: that file. Otherwise OUT is a folder
    (sub-folders of a folder input are mirrored). With no OUT, results sit beside their
    inputs as NAME_TAG.EXT, so an input is never overwritten by default.
    """
    single_file = output is not None and output.suffix.lower() in IMAGE_SUFFIXES + KEPT_SUFFIXES
    if output is not None and len(inputs) == 1 and single_file:
        return [Job(inputs[0].path, output)]
    jobs = []
    for item in inputs:
        suffix = output_suffix(item.path, format)
        if output is None:
            destination = item.path.with_name(f"{item.path.stem}_{tag}{suffix}")
        else:
            relative = item.path.relative_to(item.root).parent if item.root else Path()
            destination = output / relative / f"{item.path.stem}{suffix}"
        jobs.append(Job(item.path, destination))
    return jobs
