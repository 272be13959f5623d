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
MEDIA_SUFFIXES = IMAGE_SUFFIXES + KEPT_SUFFIXES
# What an animation can be written as; other formats would keep one frame only.
ANIMATION_WRITE_SUFFIXES = (".gif", ".png", ".apng", ".webp")
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
    """Files, folders and globs -> inputs, plus one line for each argument that gave none.

    Folders yield stills, animations and videos (anything with a media suffix, hidden
    names left out). An entry named like media that is not a readable file (a folder
    called x.png, a dangling link) is kept, so the pre-flight names it instead of it
    vanishing silently; a missing file is kept for the same reason.
    """
    found: list[InputFile] = []
    problems: list[str] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            entries = sorted(p for p in path.glob(pattern) if is_media_name(p))
            if not entries:
                where = " or its sub-folders" if recursive else " (sub-folders need -r)"
                problems.append(
                    f"{argument}: a folder with no images, animations or videos in it{where}"
                )
            found += [InputFile(p, path) for p in entries]
        elif path.exists() or path.is_symlink() or not GLOB_CHARACTERS & set(argument):
            found.append(InputFile(path, None))  # the pre-flight says what is wrong with it
        else:
            matches = sorted(Path(p) for p in glob.glob(argument, recursive=recursive))
            files = [p for p in matches if p.is_file() or is_media_name(p)]
            if not files:
                problems.append(f"{argument}: matched no files")
            found += [InputFile(p, None) for p in files]
    return unique(found), problems


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


def is_media_name(path: Path) -> bool:
    """A still image, an animation or a video by its name (hidden names are skipped)."""
    return path.suffix.lower() in MEDIA_SUFFIXES and not path.name.startswith(".")


def output_suffix(source: Path, format: str | None, animated: bool = False) -> str:
    if source.suffix.lower() in VIDEO_SUFFIXES:  # --format names still-image formats only
        return source.suffix.lower()
    if format:
        wanted = FORMAT_SUFFIX[format.lower()]
        if not animated or wanted in ANIMATION_WRITE_SUFFIXES:
            return wanted
    suffix = source.suffix.lower()
    if suffix in ANIMATION_SUFFIXES and not animated:
        return ".png"  # a one-frame GIF is a still image: PNG keeps it losslessly
    return suffix if suffix in IMAGE_SUFFIXES + KEPT_SUFFIXES else ".png"


def plan_jobs(
    inputs: list[InputFile],
    output: Path | None,
    format: str | None,
    tag: str,
    animations: frozenset[Path] = frozenset(),
) -> list[Job]:
    """Where each result goes.

    One input and an OUT with an image suffix: that file. Otherwise OUT is a folder
    (sub-folders of a folder input are mirrored). With no OUT, results sit beside their
    inputs as NAME_TAG.EXT, so an input is never overwritten by default. `animations`
    keep their own format when --format names one that holds a single frame.
    """
    single_file = output is not None and output.suffix.lower() in IMAGE_SUFFIXES + KEPT_SUFFIXES
    if output is not None and len(inputs) == 1 and single_file:
        return [Job(inputs[0].path, output)]
    jobs = []
    for item in inputs:
        suffix = output_suffix(item.path, format, item.path in animations)
        if output is None:
            destination = item.path.with_name(f"{item.path.stem}_{tag}{suffix}")
        else:
            relative = item.path.relative_to(item.root).parent if item.root else Path()
            destination = output / relative / f"{item.path.stem}{suffix}"
        jobs.append(Job(item.path, destination))
    return jobs
