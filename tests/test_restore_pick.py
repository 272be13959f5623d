"""`upres restore` picks the model that fits each input: the JPEG model nearest to the
quality read from the file's quantisation tables (real JPEGs, saved by Pillow and OpenCV at
many qualities), the denoising model nearest to --sigma, grey models for grey images."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from spandrel.architectures.SwinIR import SwinIR
from typer.testing import CliRunner

from upres.cli.main import app
from upres.io.jpeg import estimate_quality, jpeg_quality
from upres.models.catalog import CATALOG
from upres.models.restoration import nearest, pick_denoise, pick_jpeg

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lighthouse.png"
runner = CliRunner()


@pytest.fixture(scope="module")
def picture() -> PILImage.Image:
    return PILImage.open(EXAMPLE).convert("RGB")


def saved_jpeg(picture: PILImage.Image, folder: Path, quality: int, mode: str = "RGB") -> Path:
    path = folder / f"q{quality}-{mode}.jpg"
    picture.convert(mode).save(path, quality=quality)
    return path


@pytest.mark.parametrize("quality", [3, 10, 15, 20, 23, 30, 37, 40, 55, 75, 90, 97])
def test_the_quality_is_read_back_from_pillow_and_opencv_jpegs(picture, tmp_path, quality):
    assert jpeg_quality(saved_jpeg(picture, tmp_path, quality)) == quality
    assert jpeg_quality(saved_jpeg(picture, tmp_path, quality, "L")) == quality
    ok, encoded = cv2.imencode(
        ".jpg", np.asarray(picture)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok and jpeg_quality(io.BytesIO(encoded.tobytes())) == quality


def test_tables_not_made_by_the_ijg_rule_get_the_nearest_strength():
    # A quality-30 luminance table with every step one coarser: still about 30.
    from upres.io.jpeg import LUMINANCE, ijg_table

    coarser = [value + 1 for value in ijg_table(LUMINANCE, 30)]
    assert abs(estimate_quality({0: coarser}) - 30) <= 2


def test_files_that_are_not_jpegs_have_no_quality(tmp_path):
    assert jpeg_quality(EXAMPLE) is None
    assert jpeg_quality(tmp_path / "missing.jpg") is None
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"not an image")
    assert jpeg_quality(fake) is None


@pytest.mark.parametrize(
    ("quality", "model"),
    [
        (8, "swinir-jpeg-colour-q10-x1"),
        (20, "swinir-jpeg-colour-q20-x1"),
        (25, "swinir-jpeg-colour-q20-x1"),  # halfway: the stronger model
        (27, "swinir-jpeg-colour-q30-x1"),
        (36, "swinir-jpeg-colour-q40-x1"),
        (85, "swinir-jpeg-colour-q40-x1"),
    ],
)
def test_the_nearest_jpeg_model_is_picked(picture, tmp_path, quality, model):
    pick = pick_jpeg(saved_jpeg(picture, tmp_path, quality))
    assert pick.model == model and f"JPEG quality {quality}" in pick.reason
    assert pick.model in CATALOG


def test_grey_jpegs_get_the_grey_model_and_the_override_wins(picture, tmp_path):
    grey = saved_jpeg(picture, tmp_path, 12, "L")
    assert pick_jpeg(grey).model == "swinir-jpeg-grey-q10-x1"
    pick = pick_jpeg(grey, quality=33)
    assert pick.model == "swinir-jpeg-grey-q30-x1" and pick.reason == "--jpeg-quality 33"
    png = pick_jpeg(EXAMPLE)
    assert png.model == "swinir-jpeg-colour-q40-x1" and "not a JPEG" in png.reason


@pytest.mark.parametrize(
    ("sigma", "model"),
    [(None, "sigma25"), (15, "sigma15"), (20, "sigma15"), (25, "sigma25"), (40, "sigma50")],
)
def test_the_nearest_denoising_model_is_picked(sigma, model):
    pick = pick_denoise(EXAMPLE, sigma)
    assert pick.model == f"swinir-denoise-colour-{model}-x1" and pick.model in CATALOG
    assert nearest(50, (15, 25, 50)) == 50


def tiny_x1(channels: int) -> dict:
    torch.manual_seed(0)
    network = SwinIR(
        upscale=1,
        in_chans=channels,
        img_size=64,
        window_size=8,
        depths=[2],
        embed_dim=12,
        num_heads=[2],
        mlp_ratio=2.0,
        upsampler="",
        resi_connection="1conv",
    )
    return {"params": network.state_dict()}


@pytest.fixture
def hand_placed_models(tmp_path, monkeypatch) -> Path:
    """Tiny real SwinIR x1 networks saved in a fresh cache under the official file names
    (as a person saves downloaded files there), so the run needs no network."""
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    monkeypatch.setenv("UPRES_CACHE_DIR", str(cache))
    for name in ("swinir-jpeg-colour-q20-x1", "swinir-jpeg-colour-q40-x1"):
        assert CATALOG[name].sha256 is None  # recorded on first use, so a stand-in is taken
        torch.save(tiny_x1(3), cache / "models" / CATALOG[name].source.filename)
    torch.save(tiny_x1(1), cache / "models" / CATALOG["swinir-jpeg-grey-q20-x1"].source.filename)
    return cache


def test_cli_restores_each_jpeg_with_its_own_model_and_says_which(
    picture, tmp_path, hand_placed_models
):
    folder = tmp_path / "in"
    folder.mkdir()
    small = picture.crop((0, 0, 40, 32))
    small.save(folder / "low.jpg", quality=18)
    small.save(folder / "high.jpg", quality=80)
    small.convert("L").save(folder / "grey.jpg", quality=22)
    result = runner.invoke(
        app, ["restore", "--task", "jpeg", str(folder), "-o", str(tmp_path / "out"), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    rows = {Path(row["input"]).name: row for row in json.loads(result.stdout)["images"]}
    assert rows["low.jpg"]["model"] == "swinir-jpeg-colour-q20-x1"
    assert rows["low.jpg"]["pick"].startswith("JPEG quality 18")
    assert rows["high.jpg"]["model"] == "swinir-jpeg-colour-q40-x1"
    assert rows["grey.jpg"]["model"] == "swinir-jpeg-grey-q20-x1"
    for name in rows:
        assert PILImage.open(tmp_path / "out" / name).size == (40, 32)

    again = ["-o", str(tmp_path / "again.png")]
    shown = runner.invoke(
        app, ["restore", "--task", "jpeg", str(folder / "high.jpg"), "--jpeg-quality", "21", *again]
    )
    assert shown.exit_code == 0, shown.stderr
    assert "--jpeg-quality 21 -> swinir-jpeg-colour-q20-x1" in " ".join(shown.stderr.split())


@pytest.mark.parametrize(
    "args",
    [
        ["--task", "jpeg", "--sigma", "25"],
        ["--task", "denoise", "--jpeg-quality", "30"],
        ["--task", "denoise", "--sigma", "15", "-m", "swinir-denoise-colour-sigma15-x1"],
        ["--task", "jpeg", "--jpeg-quality", "0"],
    ],
)
def test_level_options_in_the_wrong_place_are_usage_errors(args):
    result = runner.invoke(app, ["restore", str(EXAMPLE), *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
