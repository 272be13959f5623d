"""The command line's run options: --fast/--no-fast, --compile and --threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

import upres.api
import upres.batch.driver
from conftest import tiny_compact
from upres.cli.main import app

runner = CliRunner()


def upres_cli(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """--threads sets a process-wide torch setting: give the rest of the session its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def picture(tmp_path, photo):
    path = tmp_path / "in" / "a.png"
    path.parent.mkdir()
    PILImage.fromarray(photo[100:140, 200:236]).save(path)
    return path


@pytest.fixture(scope="module")
def x1_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-compact-x1.pth"
    torch.save({"params": tiny_compact(scale=1).state_dict()}, path)
    return path


def pixels(path) -> np.ndarray:
    with PILImage.open(path) as image:
        return np.asarray(image).astype(int)


def test_no_fast_writes_what_the_fast_path_writes(picture, tmp_path, compact_checkpoint):
    common = ("-m", compact_checkpoint, "--precision", "fp32", "--device", "cpu")
    fast = upres_cli("upscale", picture, "-o", tmp_path / "fast.png", *common)
    reference = upres_cli("upscale", picture, "-o", tmp_path / "ref.png", "--no-fast", *common)
    assert fast.exit_code == 0 and reference.exit_code == 0, fast.stderr + reference.stderr
    assert pixels(tmp_path / "ref.png").shape == (80, 72, 3)
    assert np.abs(pixels(tmp_path / "fast.png") - pixels(tmp_path / "ref.png")).max() <= 1


def test_threads_sets_torch_cpu_threads(picture, tmp_path, compact_checkpoint):
    torch.set_num_threads(2)
    result = upres_cli(
        "upscale", picture, "-o", tmp_path / "out.png", "-m", compact_checkpoint, "--threads", "1"
    )
    assert result.exit_code == 0, result.stderr
    assert torch.get_num_threads() == 1
    assert pixels(tmp_path / "out.png").shape == (80, 72, 3)


def test_threads_default_comes_from_the_environment(
    picture, tmp_path, compact_checkpoint, monkeypatch
):
    torch.set_num_threads(2)
    monkeypatch.setenv("UPRES_THREADS", "1")
    result = upres_cli("upscale", picture, "-o", tmp_path / "out.png", "-m", compact_checkpoint)
    assert result.exit_code == 0, result.stderr
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--threads", "0"), None, "--threads must be a positive number of CPU threads, not 0"),
        (("--threads", "-2"), None, "--threads must be a positive number of CPU threads, not -2"),
        ((), "many", "UPRES_THREADS must be a positive number of CPU threads, not 'many'"),
    ],
)
@pytest.mark.parametrize("command", ["upscale", "batch"])
def test_bad_threads_is_a_usage_error(
    command, args, env, message, picture, tmp_path, compact_checkpoint, monkeypatch
):
    if env is not None:
        monkeypatch.setenv("UPRES_THREADS", env)
    before = torch.get_num_threads()
    where = (picture,) if command == "upscale" else (picture.parent, tmp_path / "out")
    result = upres_cli(command, *where, "-m", compact_checkpoint, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert torch.get_num_threads() == before
    assert not (tmp_path / "out").exists()


class Refused(ValueError):
    pass


def test_fast_and_compile_reach_the_loader(picture, compact_checkpoint, monkeypatch):
    seen = []

    def recording_load(*args, **kwargs):
        seen.append(kwargs)
        raise Refused("stopped before loading")

    # The command imports upres.api.load when it runs (so that --help stays light).
    monkeypatch.setattr(upres.api, "load", recording_load)
    for flags in ((), ("--no-fast",), ("--compile",)):
        result = upres_cli("upscale", picture, "-m", compact_checkpoint, *flags)
        assert result.exit_code == 2 and "stopped before loading" in result.stderr
    assert [(kw["fast"], kw["compile"]) for kw in seen] == [
        (True, False),
        (False, False),
        (True, True),
    ]


def test_restore_runs_the_reference_modules_with_one_thread(tmp_path, picture, x1_checkpoint):
    result = upres_cli(
        "restore",
        picture,
        "--task",
        "denoise",
        "-m",
        x1_checkpoint,
        "-o",
        tmp_path / "restored.png",
        "--no-fast",
        "--threads",
        "1",
    )
    assert result.exit_code == 0, result.stderr
    assert torch.get_num_threads() == 1
    assert pixels(tmp_path / "restored.png").shape == (40, 36, 3)


def test_batch_passes_run_options_to_the_runner_spec(picture, tmp_path, compact_checkpoint):
    destination = tmp_path / "out"
    result = upres_cli(
        "batch",
        picture.parent,
        destination,
        "-m",
        compact_checkpoint,
        "--device",
        "cpu",
        "--no-fast",
        "--threads",
        "1",
    )
    assert result.exit_code == 0, result.stderr  # the spec's fields: the next test
    assert pixels(destination / "a.png").shape == (80, 72, 3)


def test_batch_spec_carries_fast_compile_and_threads(picture, tmp_path, monkeypatch):
    specs = []

    def recording_run_batch(src, dst, spec, options, **kwargs):
        specs.append(spec)
        raise Refused("stopped before loading")

    monkeypatch.setattr(upres.batch.driver, "run_batch", recording_run_batch)
    flags = ("--no-fast", "--compile", "--threads", "3")
    result = upres_cli("batch", picture.parent, tmp_path / "out", *flags)
    assert result.exit_code == 2 and "stopped before loading" in result.stderr
    assert (specs[0].fast, specs[0].compile, specs[0].threads) == (False, True, 3)


def test_help_explains_the_run_options():
    for command in ("upscale", "restore", "batch"):
        text = upres_cli(command, "--help").stdout
        assert "--no-fast" in text and "--compile" in text and "--threads" in text
