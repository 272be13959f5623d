"""Messages keep their brackets, a device that is not there is one line, and torch's
developer warnings never reach the person running a command."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from upres.cli.main import app

SRC = Path(__file__).resolve().parents[1] / "src"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lighthouse.png"
runner = CliRunner()


def test_the_ray_hint_keeps_its_extra(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec

    def without_ray(name, *args):
        return None if name == "ray" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_ray)
    result = runner.invoke(app, ["batch", str(tmp_path), str(tmp_path / "out"), "--engine", "ray"])
    assert result.exit_code == 2
    assert "pip install 'upres[ray]'" in result.stderr


def test_file_names_with_brackets_are_shown_whole(tmp_path):
    missing = tmp_path / "photo[1].png"
    result = runner.invoke(app, ["upscale", str(missing), "-m", "realesr-animevideov3-x4"])
    assert result.exit_code == 2  # brackets make it a glob, which matched nothing
    assert "photo[1].png: matched no files" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_one_line_and_a_usage_error(device, tmp_path):
    result = runner.invoke(app, ["upscale", str(EXAMPLE), "--device", device, "-o", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: device {device}: no CUDA GPU is available here")
    assert lines[0].endswith("use cpu or auto") and "NVIDIA" not in result.stderr


def test_an_unknown_device_is_named(tmp_path):
    result = runner.invoke(app, ["upscale", str(EXAMPLE), "--device", "gpu", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "device must be auto, cpu, cuda, cuda:N or mps, not 'gpu'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_api_refuses_a_missing_device_with_a_value_error():
    import upres

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA GPU is available here"):
        upres.load("realesr-animevideov3-x4", device="cuda")


def run_python(code: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_no_torch_warning_reaches_the_command_line(tmp_path, swinir_checkpoint):
    # SwinIR builds its attention with torch.meshgrid, which warns about its indexing.
    crop = tmp_path / "crop.png"
    from PIL import Image

    Image.open(EXAMPLE).crop((0, 0, 20, 20)).save(crop)
    code = (
        "import sys; from upres.cli.main import run; "
        f"sys.argv = ['upres', 'upscale', {str(crop)!r}, '-m', {str(swinir_checkpoint)!r}, "
        f"'-o', {str(tmp_path / 'out.png')!r}]; run()"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    # The same network built directly does warn: the check above is not vacuous.
    direct = run_python(
        "from spandrel.architectures.SwinIR import SwinIR; SwinIR(img_size=16, depths=[1],"
        " num_heads=[1], embed_dim=8, window_size=8)"
    )
    assert "meshgrid" in direct.stderr


def test_loading_through_the_api_is_quiet_too(swinir_checkpoint):
    done = run_python(f"import upres; upres.load({str(swinir_checkpoint)!r}, device='cpu')")
    assert done.returncode == 0, done.stderr
    assert "meshgrid" not in done.stderr, done.stderr


def test_configure_cpu_does_for_a_program_what_the_cli_does_for_itself(monkeypatch):
    import upres
    from upres.engine import allocator, cores

    kept = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: kept.append(True) or True)
    before = torch.get_num_threads()
    try:
        choice = upres.configure_cpu(threads=1)
        assert choice.threads == 1 and torch.get_num_threads() == 1
        assert cores.current_choice() is choice and choice.reason == "set by --threads"
        assert kept == [True]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [0, -2, 1.5, True, "4"])
def test_configure_cpu_refuses_a_thread_count_that_is_not_one(threads):
    import upres
    from upres.engine import cores

    with pytest.raises(upres.RequestError, match="threads must be a whole number"):
        upres.configure_cpu(threads)
    assert cores._governor is None  # nothing half set up
