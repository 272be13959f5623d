"""Chains of models (`-m a -m b`, `upres.load([a, b])`) and the `restore` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from spandrel.architectures.SwinIR import SwinIR
from typer.testing import CliRunner

import upres
from conftest import tiny_compact
from upres.cli.main import app
from upres.io.image import image_from_array

runner = CliRunner()


def upres_cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def x2_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("chain")
    first, second = folder / "first-x2.pth", folder / "second-x2.pth"
    torch.save({"params": tiny_compact(scale=2, seed=1).state_dict()}, first)
    torch.save({"params": tiny_compact(scale=2, seed=2).state_dict()}, second)
    return first, second


@pytest.fixture(scope="module")
def x1_checkpoint(tmp_path_factory) -> Path:
    """A restoration layout (SwinIR denoise: no upsampler), small."""
    torch.manual_seed(0)
    network = SwinIR(
        upscale=1,
        in_chans=3,
        img_size=64,
        window_size=8,
        depths=[2],
        embed_dim=12,
        num_heads=[2],
        mlp_ratio=2.0,
        upsampler="",
        resi_connection="1conv",
    )
    path = tmp_path_factory.mktemp("restore") / "tiny-denoise-x1.pth"
    torch.save({"params": network.state_dict()}, path)
    return path


def test_two_models_chained_give_the_product_scale(x2_checkpoints, photo):
    chain = upres.load(list(x2_checkpoints), device="cpu")
    assert isinstance(chain, upres.Pipeline)
    assert chain.scale == 4 and chain.name == "first-x2+second-x2"
    image = photo[:13, :17]
    assert chain(image).shape == (52, 68, 3)
    # The same as running the two models one after the other (float in between).
    first, second = (upres.load(path, device="cpu") for path in x2_checkpoints)
    middle = first(image.astype(np.float32) / 255)
    expected = second(middle)
    got = chain(image.astype(np.float32) / 255)
    assert np.allclose(got, expected, atol=1e-5)


def test_scale_applies_to_the_chain_total(x2_checkpoints, photo):
    chain = upres.load_chain(x2_checkpoints, device="cpu")
    image = photo[:10, :12]
    assert chain(image, scale=3).shape == (30, 36, 3)  # 2 x 2 then down to x3
    assert chain(image, scale=8).shape == (80, 96, 3)  # the last model runs twice
    _result, report = chain.upscale_image(image_from_array(image)[0], scale=8)
    assert report.model_passes == 3


def test_a_single_name_in_a_list_is_a_plain_upscaler(x2_checkpoints):
    assert isinstance(upres.load([x2_checkpoints[0]], device="cpu"), upres.Upscaler)


def test_chains_keep_greyscale_alpha_and_16_bit(x2_checkpoints, photo):
    chain = upres.load(list(x2_checkpoints), device="cpu")
    grey = PILImage.fromarray(photo[:8, :8, 0])
    assert chain(grey).mode == "L" and chain(grey).size == (32, 32)
    deep = photo[:8, :8].astype(np.uint16) * 257
    assert chain(deep).dtype == np.uint16


def test_cli_chains_models_in_order(x2_checkpoints, photo, tmp_path):
    source = tmp_path / "in.png"
    PILImage.fromarray(photo[:12, :10]).save(source)
    first, second = x2_checkpoints
    result = upres_cli("upscale", source, "-m", first, "-m", second, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == "first-x2+second-x2"
    assert summary["images"][0]["output_size"] == [40, 48]
    assert PILImage.open(tmp_path / "in_x4.png").size == (40, 48)
    result = upres_cli(
        "upscale", source, "-m", first, "-m", second, "--scale", "2", "-o", tmp_path / "o.png"
    )
    assert result.exit_code == 0 and PILImage.open(tmp_path / "o.png").size == (20, 24)


def test_restore_keeps_the_size_and_tags_by_task(x1_checkpoint, photo, tmp_path):
    source = tmp_path / "noisy.png"
    PILImage.fromarray(photo[:19, :23]).save(source)
    result = upres_cli("restore", "--task", "denoise", source, "-m", x1_checkpoint, "--json")
    assert result.exit_code == 0, result.output
    assert PILImage.open(tmp_path / "noisy_denoise.png").size == (23, 19)


def test_restore_refuses_models_that_change_the_size_or_do_another_task(
    x2_checkpoints, photo, tmp_path
):
    source = tmp_path / "in.png"
    PILImage.fromarray(photo[:8, :8]).save(source)
    result = upres_cli("restore", "--task", "jpeg", source, "-m", x2_checkpoints[0])
    assert result.exit_code == 2 and "restore keeps the size" in result.stderr
    result = upres_cli("restore", "--task", "jpeg", source, "-m", "swinir-denoise-grey-sigma15-x1")
    assert result.exit_code == 2 and "is a denoise model, not jpeg" in result.stderr
    result = upres_cli("restore", source)
    assert result.exit_code == 2 and "--task" in result.stderr
    assert not list(tmp_path.glob("in_*"))


def test_restore_then_upscale_as_one_chain(x1_checkpoint, x2_checkpoints, photo, tmp_path):
    source = tmp_path / "in.png"
    PILImage.fromarray(photo[:9, :11]).save(source)
    result = upres_cli(
        "upscale", source, "-m", x1_checkpoint, "-m", x2_checkpoints[0], "-o", tmp_path / "o.png"
    )
    assert result.exit_code == 0, result.output
    assert PILImage.open(tmp_path / "o.png").size == (22, 18)


def test_denoise_strength_is_refused_for_models_without_one(x2_checkpoints, photo, tmp_path):
    source = tmp_path / "in.png"
    PILImage.fromarray(photo[:8, :8]).save(source)
    result = upres_cli("upscale", source, "-m", x2_checkpoints[0], "--denoise-strength", "0.5")
    assert result.exit_code == 2 and "denoise strength" in result.stderr
