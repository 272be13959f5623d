"""The per-user model cache: where weights live, hashing, and verified atomic stores."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import platformdirs

from upres.errors import ModelLoadError


def cache_dir() -> Path:
    """Per-user cache (UPRES_CACHE_DIR overrides), e.g. ~/.cache/upres."""
    root = os.environ.get("UPRES_CACHE_DIR") or platformdirs.user_cache_dir("upres")
    return Path(root)


def models_dir() -> Path:
    return cache_dir() / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verified(path: Path, expected: str | None) -> bool:
    """True when the file exists and matches its recorded sha256 (and the expected one)."""
    sidecar = sidecar_of(path)
    if not (path.is_file() and sidecar.is_file()):
        return False
    recorded = sidecar.read_text().split()[0]
    return recorded == sha256_of(path) and expected in (None, recorded)


def store(target: Path, write: Callable[[Path], None], expected: str | None, label: str) -> Path:
    """Write through `write(temporary)`, check the sha256, then rename into place with a sidecar."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        digest = sha256_of(temporary)
        if expected is not None and digest != expected:
            raise ModelLoadError(target, f"{label} has sha256 {digest}, expected {expected}")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    sidecar_of(target).write_text(f"{digest}  {target.name}\n")
    return target
