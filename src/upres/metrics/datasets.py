"""Finding benchmark sets on disk and reading their images.

A dataset is named (Set5, Set14, B100, Kodak24, Set12, BSD68, CBSD68, McMaster, classic5, LIVE1;
any case) and looked up under the datasets root, or given as a folder of HR images (a folder
named ``HR`` stands for the set above it, which is then the dataset's name). The root is
``$UPRES_DATASETS`` if set, else the first existing of ``../shared/datasets`` relative to the
current directory and ``shared/datasets`` beside any folder above this file (the project root's
sibling ``shared/``).

Layout: HR images are in ``<set>/HR`` when that folder exists, else directly in ``<set>``;
MATLAB-bicubic LR images, when shipped, are ``<set>/LR_bicubic/X<s>/<stem>x<s>.<ext>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from upres.errors import UpresError

DATASETS_ENV = "UPRES_DATASETS"
KNOWN_DATASETS = (
    "Set5",
    "Set14",
    "B100",
    "Kodak24",
    "Set12",
    "BSD68",
    "CBSD68",
    "McMaster",
    "classic5",
    "LIVE1",
)
ALIASES = {"bsd100": "B100", "bsds100": "B100", "kodak": "Kodak24"}
IMAGE_SUFFIXES = frozenset(
    {".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp", ".ppm", ".pgm"}
)
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


class DatasetNotFoundError(UpresError):
    """A dataset name that is not under the datasets root, or a folder without images."""


@dataclass(frozen=True)
class Dataset:
    """A set of ground-truth images, with the folder that may hold shipped LR versions."""

    name: str
    folder: Path

    @property
    def hr_folder(self) -> Path:
        hr = self.folder / "HR"
        return hr if hr.is_dir() else self.folder

    def images(self) -> list[Path]:
        """HR image files, sorted by name (the order the reference scripts use)."""
        return sorted(p for p in self.hr_folder.iterdir() if is_image_file(p))

    def shipped_lr(self, hr_path: Path, scale: int) -> Path | None:
        """The reference LR file for ``hr_path`` at ``scale``, if the dataset ships one."""
        folder = self.folder / "LR_bicubic" / f"X{scale}"
        candidate = folder / f"{hr_path.stem}x{scale}{hr_path.suffix}"
        if candidate.is_file():
            return candidate
        matches = sorted(folder.glob(f"{hr_path.stem}x{scale}.*")) if folder.is_dir() else []
        return matches[0] if matches else None


def is_image_file(path: Path) -> bool:
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
    )


def datasets_root() -> Path | None:
    """Where named datasets live, or None when no candidate folder exists."""
    configured = os.environ.get(DATASETS_ENV)
    if configured:
        return Path(configured)
    for candidate in root_candidates():
        if candidate.is_dir():
            return candidate
    return None


def root_candidates() -> list[Path]:
    from_cwd = Path.cwd() / ".." / "shared" / "datasets"
    beside_ancestors = [
        parent / "shared" / "datasets" for parent in Path(__file__).resolve().parents
    ]
    return [from_cwd.resolve(), *beside_ancestors]


def resolve_dataset(name_or_folder: str | Path) -> Dataset:
    """A dataset by name (case-insensitive) under the datasets root, or a folder of HR images."""
    as_path = Path(name_or_folder).expanduser()
    if as_path.is_dir():
        if as_path.resolve().name.lower() == "hr":
            # <set>/HR given: the set is the folder above, whose LR_bicubic holds its LR files.
            as_path = as_path.resolve().parent
        return checked(Dataset(name=as_path.resolve().name, folder=as_path))
    text = str(name_or_folder)
    if os.sep in text or "/" in text:
        raise DatasetNotFoundError(f"dataset folder not found: {text}")
    root = datasets_root()
    if root is None:
        raise DatasetNotFoundError(
            f"dataset {text!r}: no datasets folder found; set {DATASETS_ENV} or pass a folder"
        )
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset {text!r}: {DATASETS_ENV}={root} is not a folder")
    folder = find_folder_ignoring_case(root, ALIASES.get(text.lower(), text))
    if folder is None:
        known = ", ".join(KNOWN_DATASETS)
        raise DatasetNotFoundError(
            f"unknown dataset {text!r} under {root}: expected one of {known}, or a folder of images"
        )
    return checked(Dataset(name=folder.name, folder=folder))


def find_folder_ignoring_case(root: Path, name: str) -> Path | None:
    wanted = name.lower()
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name.lower() == wanted:
            return entry
    return None


def checked(dataset: Dataset) -> Dataset:
    if not dataset.images():
        raise DatasetNotFoundError(f"no images in {dataset.hr_folder}")
    return dataset


def is_greyscale_file(path: Path) -> bool:
    """True when the file stores one channel (colour sets hold a few, e.g. Set14's bridge)."""
    with Image.open(path) as image:
        return image.mode in GREY_MODES


def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB; a greyscale file becomes three equal channels, as in the reference."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_grey(path: Path) -> np.ndarray:
    """H x W uint8; colour files are reduced with OpenCV's BGR2GRAY weights like ``cv2.imread``."""
    with Image.open(path) as image:
        if image.mode == "L":
            return np.asarray(image, dtype=np.uint8).copy()
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
