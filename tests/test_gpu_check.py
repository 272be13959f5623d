"""The GPU session's one command, run here with tiny sizes on the CPU, so that the GPU run
does not fail on a typo (benchmarks/gpu/check.py)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load

from conftest import DATASETS, PROJECT_ROOT

CHECK = PROJECT_ROOT / "benchmarks" / "gpu" / "check.py"


def test_the_gpu_check_runs_every_part_on_a_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, str(CHECK), str(out), "--device", "cpu", "--tiny"]
    command += ["--parts", "tests", "bench", "photo", "video", "train"]
    command += ["--images", str(DATASETS / "Set5" / "HR")]
    command += ["--photo-models", "realesr-animevideov3-x4"]
    command += ["--train-config", str(PROJECT_ROOT / "configs" / "smoke-cpu.toml")]
    command += ["--train-data", str(DATASETS.parent / "train" / "t91")]  # as the GPU run does
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert all(summary[part]["ok"] for part in ("tests", "bench", "photo", "video", "train"))
    assert "skipped" in summary["tests"]["summary"]  # no CUDA here: the GPU tests skip
    (size,) = summary["bench"]["runs"]
    assert summary["bench"]["runs"][size]["report"]["models"][0]["speedup"] > 0
    photo = summary["photo"]["models"]["realesr-animevideov3-x4"]
    assert photo["output_size"] == [384, 288] and set(photo["stages_s"]) == {
        "decode",
        "model",
        "encode",
    }
    assert summary["video"]["fps_end_to_end"] > 0 and summary["video"]["frames"] == 6
    assert summary["train"]["set5"]["mean"]["psnr_y"] > 0
    assert summary["train"]["last.safetensors"] == ["last.safetensors.gz.00"]
    parts = sorted((out / "train").glob("last.safetensors.gz.*"))
    checkpoint = load(gzip.decompress(b"".join(part.read_bytes() for part in parts)))
    assert checkpoint  # whole again: `load` raises on a cut or damaged file
    # What the device tool brings back: at most 8 files, at most two folders down.
    files = [path for path in out.rglob("*") if path.is_file()]
    assert len(files) <= 8
    assert all(len(path.relative_to(out).parts) <= 3 for path in files)
    assert "Set5 PSNR-Y" in done.stdout  # the table printed last
