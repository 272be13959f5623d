"""The command line, run as users run it: real files, real models, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from upres.cli.main import app

runner = CliRunner()


def upres_cli(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def folder(tmp_path, photo) -> Path:
    """Two good images (one in a sub-folder), a corrupt one and an empty one."""
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    PILImage.fromarray(photo[:20, :28]).save(source / "a.png")
    PILImage.fromarray(photo[40:60, 40:60]).save(source / "sub" / "b.jpg", quality=90)
    good = (source / "a.png").read_bytes()
    (source / "c_truncated.png").write_bytes(good[: len(good) // 2])
    (source / "d_empty.png").write_bytes(b"")
    return source


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if "upres-tmp" in p.name or p.name.endswith(".tmp")]


def test_version_from_the_installed_console_script():
    result = subprocess.run(
        [sys.executable, "-m", "upres", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("upres ")


def test_a_batch_with_bad_files_processes_the_rest_and_fails(folder, tmp_path, compact_checkpoint):
    out = tmp_path / "out"
    result = upres_cli("upscale", folder, "-r", "-o", out, "-m", compact_checkpoint, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"]) == (2, 2)
    assert PILImage.open(out / "a.png").size == (56, 40)
    assert PILImage.open(out / "sub" / "b.jpg").size == (40, 40)
    assert "c_truncated.png" in result.stderr and "truncated" in result.stderr.lower()
    assert "d_empty.png" in result.stderr and "empty" in result.stderr
    failed = {
        Path(r["input"]).name: r["error"] for r in summary["images"] if r["status"] == "failed"
    }
    assert set(failed) == {"c_truncated.png", "d_empty.png"}
    assert not (out / "c_truncated.png").exists() and no_temporary_files(out)


def test_skip_existing_and_overwrite(folder, tmp_path, compact_checkpoint):
    out = tmp_path / "out.png"
    args = ("upscale", folder / "a.png", "-o", out, "-m", compact_checkpoint)
    assert upres_cli(*args).exit_code == 0
    again = upres_cli(*args)
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert upres_cli(*args, "--skip-existing").exit_code == 0
    assert upres_cli(*args, "--overwrite").exit_code == 0


def test_globs_formats_scale_and_sharpen(folder, tmp_path, compact_checkpoint):
    out = tmp_path / "jpgs"
    result = upres_cli(
        "upscale",
        str(folder / "*.png"),
        "-o",
        out,
        "-m",
        compact_checkpoint,
        "--format",
        "jpg",
        "--quality",
        "80",
        "--scale",
        "3",
        "--sharpen",
        "0.5",
        "--tile",
        "32",
    )
    assert result.exit_code == 1  # the truncated and empty PNGs match the glob too
    image = PILImage.open(out / "a.jpg")
    assert image.format == "JPEG" and image.size == (84, 60)


def test_default_output_sits_beside_the_input(folder, compact_checkpoint):
    result = upres_cli("upscale", folder / "a.png", "-m", compact_checkpoint)
    assert result.exit_code == 0, result.stderr
    assert (folder / "a_x2.png").is_file()
    assert "wrote" in result.stdout


def test_the_default_model_upscales_the_example(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "lighthouse.png"
    crop = tmp_path / "crop.png"
    PILImage.open(example).crop((20, 20, 52, 52)).save(crop)
    result = upres_cli("upscale", crop, "-o", tmp_path / "big.png")
    assert result.exit_code == 0, result.stderr
    assert PILImage.open(tmp_path / "big.png").size == (128, 128)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-m", "no-such-model"), "unknown model 'no-such-model'"),
        (("--precision", "fp8"), "precision must be"),
        (("--tile", "big"), "tile must be"),
        (("--format", "gif"), "--format must be"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(folder, args, message):
    result = upres_cli("upscale", folder / "a.png", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_file_that_is_not_a_model(folder, tmp_path):
    fake = tmp_path / "model.pth"
    fake.write_text("not a model")
    result = upres_cli("upscale", folder / "a.png", "-m", fake)
    assert result.exit_code == 2 and "model.pth: not a PyTorch checkpoint" in result.stderr


def test_missing_inputs(tmp_path):
    result = upres_cli("upscale", tmp_path / "nothing-*.png")
    assert result.exit_code == 2 and "matched no files" in result.stderr
    result = upres_cli("upscale", tmp_path / "missing.png", "-m", "realesr-animevideov3-x4")
    assert result.exit_code == 1 and "missing.png" in result.stderr


def test_models_lists_the_catalogue_as_json():
    result = upres_cli("models", "--json")
    rows = json.loads(result.stdout)
    default = next(row for row in rows if row["name"] == "realesrgan-x4plus")
    assert default["default"] and default["available"] and default["scale"] == 4
    assert {"name", "task", "scale", "license", "available"} <= set(default)


def test_grey_and_alpha_survive_the_cli(tmp_path, photo, compact_checkpoint):
    grey = tmp_path / "grey.png"
    PILImage.fromarray(photo[:16, :16, 0]).save(grey)
    rgba = tmp_path / "rgba.png"
    alpha = np.full((16, 16, 1), 128, np.uint8)
    PILImage.fromarray(np.dstack([photo[:16, :16], alpha])).save(rgba)
    out = tmp_path / "out"
    assert upres_cli("upscale", grey, rgba, "-o", out, "-m", compact_checkpoint).exit_code == 0
    assert PILImage.open(out / "grey.png").mode == "L"
    assert PILImage.open(out / "rgba.png").mode == "RGBA"
