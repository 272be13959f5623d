"""The user's own models: a models folder, and ncnn ``.param/.bin`` pairs anywhere.

The folder (``UPRES_MODELS_DIR``, ``--models-dir``; default ``custom`` in the per-user data
dir) holds checkpoints spandrel recognises (``.pth/.pt/.ckpt/.safetensors``) and ncnn
pairs; each is a model named after its file stem. `scan()` lists them with the detected
architecture and scale, or the reason a file cannot be used; a bad file is listed as
broken, never raised. Detection is cached per file on (mtime, size), so a rescan of an
unchanged folder costs one stat per file and a long-running server sees new files at once.

An ncnn pair is recognised (ncnn_graph.py), converted once and cached as safetensors under
the sha256 of the pair, so renaming or moving it converts nothing again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs

from upres.errors import ModelLoadError
from upres.models.cache import models_dir, store, verified

MODELS_DIR_ENV = "UPRES_MODELS_DIR"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
NCNN_SUFFIX = ".param"


def models_folder() -> Path:
    """Where the user keeps their models: $UPRES_MODELS_DIR, else <user data dir>/custom."""
    root = os.environ.get(MODELS_DIR_ENV)
    if root:
        return Path(root).expanduser()
    return Path(platformdirs.user_data_dir("upres")) / "custom"


@dataclass(frozen=True)
class UserModel:
    """One model file of the folder, as detected."""

    name: str  # the file stem
    path: Path  # the checkpoint, or the .param of an ncnn pair
    kind: Literal["checkpoint", "ncnn"]
    arch: str = ""
    scale: int | None = None
    problem: str | None = None  # why it cannot be used; never holds a path

    @property
    def ready(self) -> bool:
        return self.problem is None


# --------------------------------------------------------------------------- detection

_Stamp = tuple[int, int, int, int]  # mtime_ns and size of the file and of an ncnn .bin
_detected: dict[Path, tuple[_Stamp, UserModel]] = {}
_lock = threading.Lock()


def stamp(path: Path) -> _Stamp:
    info = path.stat()
    partner = path.with_suffix(".bin") if path.suffix.lower() == NCNN_SUFFIX else None
    other = partner.stat() if partner is not None and partner.is_file() else None
    if other is None:
        return (info.st_mtime_ns, info.st_size, 0, -1)
    return (info.st_mtime_ns, info.st_size, other.st_mtime_ns, other.st_size)


def detect(path: Path) -> UserModel:
    """Architecture and scale of one file; cached until the file (or its .bin) changes."""
    try:
        current = stamp(path)
    except OSError as error:
        return broken(path, f"cannot be read ({error.strerror})")
    with _lock:
        cached = _detected.get(path)
    if cached is not None and cached[0] == current:
        return cached[1]
    model = detect_now(path)
    with _lock:
        _detected[path] = (current, model)
    return model


def detect_now(path: Path) -> UserModel:
    try:
        if path.suffix.lower() == NCNN_SUFFIX:
            return detect_pair(path)
        return detect_checkpoint(path)
    except ModelLoadError as error:
        return broken(path, error.problem)
    except Exception as error:  # a listing must survive any file at all
        return broken(path, f"cannot be read ({type(error).__name__})")


def broken(path: Path, problem: str) -> UserModel:
    kind = "ncnn" if path.suffix.lower() == NCNN_SUFFIX else "checkpoint"
    return UserModel(path.stem, path, kind, problem=problem)


def detect_checkpoint(path: Path) -> UserModel:
    from upres.models.loader import descriptor_from_file

    descriptor = descriptor_from_file(path)
    return UserModel(
        path.stem, path, "checkpoint", arch=descriptor.architecture.name, scale=descriptor.scale
    )


def detect_pair(param: Path) -> UserModel:
    from upres.models.ncnn_graph import recognise

    if not bin_of(param).is_file():
        raise ModelLoadError(param, f"no {bin_of(param).name} beside it (an ncnn model is a pair)")
    arch = recognise(param)
    return UserModel(param.stem, param, "ncnn", arch=arch.description, scale=arch.scale)


def bin_of(param: Path) -> Path:
    return param.with_suffix(".bin")


# --------------------------------------------------------------------------- the folder


def scan(folder: Path | None = None) -> list[UserModel]:
    """Every model file in the folder (not its sub-folders), sorted by name, detected."""
    return [clash or detect(path) for path, clash in entries(folder)]


def find(name: str, folder: Path | None = None) -> UserModel | None:
    """The folder's model of that name (case-insensitive), broken or not.

    Only that file is detected: resolving `-m NAME` never reads the folder's other models.
    """
    wanted = name.lower()
    for path, clash in entries(folder):
        if path.stem.lower() == wanted:
            return clash or detect(path)
    return None


def entries(folder: Path | None = None) -> list[tuple[Path, UserModel | None]]:
    """The folder's model files, each with the reason its name is unusable (or None).

    A name used twice (a.pth and a.safetensors) or by a built-in model is broken: a name
    must mean one model. Costs a directory listing; no file is opened.
    """
    from upres.models.catalog import find_card

    folder = models_folder() if folder is None else folder
    try:
        paths = sorted(folder.iterdir(), key=lambda p: p.name.lower())
    except OSError:  # no folder yet: no user models
        return []
    found: list[tuple[Path, UserModel | None]] = []
    seen: set[str] = set()
    for path in paths:
        suffix = path.suffix.lower()
        if path.name.startswith(".") or suffix not in (*CHECKPOINT_SUFFIXES, NCNN_SUFFIX):
            continue
        if not path.is_file():
            continue
        key = path.stem.lower()
        clash = None
        card = find_card(path.stem)  # its name, or one it answers to (RealESRGAN_x4plus)
        if card is not None:
            clash = broken(path, f"the built-in model {card.name} has this name; rename the file")
        elif key in seen:
            clash = broken(path, f"another file in the folder is named {path.stem} too")
        seen.add(key)
        found.append((path, clash))
    return found


# --------------------------------------------------------------------------- ncnn pairs


def pair_sha256(param: Path) -> str:
    """One digest over the .param and the .bin: the pair's identity in the cache."""
    digest = hashlib.sha256()
    for path in (param, bin_of(param)):
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def ncnn_descriptor(param: Path):
    """The pair as a spandrel descriptor: converted (once, cached), then described."""
    from upres.models.loader import read_state_dict
    from upres.models.ncnn_graph import descriptor, recognise

    weights = ncnn_checkpoint(param)
    return descriptor(recognise(param), read_state_dict(weights), param)


def ncnn_checkpoint(param: Path) -> Path:
    """The pair converted to safetensors in the cache (converted now if not there yet)."""
    from safetensors.torch import save_file  # needs torch: only when converting

    from upres.models.ncnn_graph import convert, is_pro, recognise

    if not param.is_file():
        raise ModelLoadError(param, "no such file")
    if not bin_of(param).is_file():
        raise ModelLoadError(param, f"no {bin_of(param).name} beside it (an ncnn model is a pair)")
    # Real-CUGAN's pro marker comes from the file name, so it is part of the key.
    edition = "-pro" if is_pro(param) else ""
    target = models_dir() / "ncnn" / f"{pair_sha256(param)}{edition}.safetensors"
    if verified(target, None):
        return target
    arch = recognise(param)
    state = convert(param, bin_of(param), arch)
    metadata = {"upres_ncnn_source": param.name, "upres_arch": arch.description}
    return store(
        target,
        lambda path: save_file(state, str(path), metadata=metadata),
        None,
        f"converted ncnn pair {param.name}",
    )
