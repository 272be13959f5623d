"""The seed's variable names (MAX_INPUT_SIZE, TILE_SIZE, FP16_ENABLE) are read as aliases
of UPRES_MAX_INPUT_SIZE, UPRES_TILE_SIZE and UPRES_PRECISION; ours win when both are set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

import upres
from upres.cli.main import app
from upres.settings import setting


@pytest.mark.parametrize(
    ("env", "name", "expected"),
    [
        ({"TILE_SIZE": "96"}, "UPRES_TILE_SIZE", "96"),
        ({"TILE_SIZE": "96", "UPRES_TILE_SIZE": "64"}, "UPRES_TILE_SIZE", "64"),
        ({"TILE_SIZE": "96", "UPRES_TILE_SIZE": ""}, "UPRES_TILE_SIZE", "96"),  # empty: unset
        ({"MAX_INPUT_SIZE": "512"}, "UPRES_MAX_INPUT_SIZE", "512"),
        ({"FP16_ENABLE": "true"}, "UPRES_PRECISION", "fp16"),
        ({"FP16_ENABLE": "1"}, "UPRES_PRECISION", "fp16"),
        ({"FP16_ENABLE": "False"}, "UPRES_PRECISION", "fp32"),
        ({"FP16_ENABLE": "true", "UPRES_PRECISION": "bf16"}, "UPRES_PRECISION", "bf16"),
        ({}, "UPRES_PRECISION", None),
    ],
)
def test_seed_names_are_aliases_and_ours_win(monkeypatch, env, name, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert setting(name) == expected


def test_a_bad_fp16_switch_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("FP16_ENABLE", "sometimes")
    with pytest.raises(ValueError, match="FP16_ENABLE must be true or false, not 'sometimes'"):
        setting("UPRES_PRECISION")


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "in.png"
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(path)
    return path


def upscale(picture, checkpoint, env: dict) -> dict:
    output = ["-o", str(picture.with_name("out.png")), "--overwrite"]
    result = CliRunner().invoke(
        app,
        ["upscale", str(picture), "-m", str(checkpoint), "--device", "cpu", "--json", *output],
        env=env,
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["images"][0]


def test_tile_size_and_max_input_size_reach_the_engine(picture, compact_checkpoint):
    untiled = upscale(picture, compact_checkpoint, {})
    assert untiled["tiles"] == 1 and untiled["output_size"] == [80, 96]
    assert upscale(picture, compact_checkpoint, {"TILE_SIZE": "32"})["tiles"] > 1
    ours = {"TILE_SIZE": "32", "UPRES_TILE_SIZE": "auto"}
    assert upscale(picture, compact_checkpoint, ours)["tiles"] == 1
    smaller = upscale(picture, compact_checkpoint, {"MAX_INPUT_SIZE": "24"})
    assert smaller["output_size"] == [40, 48]
    both = {"MAX_INPUT_SIZE": "24", "UPRES_MAX_INPUT_SIZE": "32"}
    assert upscale(picture, compact_checkpoint, both)["output_size"] == [54, 64]


def test_fp16_enable_sets_the_precision(compact_checkpoint, monkeypatch):
    explicit = {
        name: upres.load(compact_checkpoint, device="cpu", precision=name).dtype
        for name in ("fp16", "fp32", "bf16")
    }
    monkeypatch.setenv("FP16_ENABLE", "true")
    assert upres.load(compact_checkpoint, device="cpu").dtype == explicit["fp16"]
    monkeypatch.setenv("FP16_ENABLE", "false")
    assert upres.load(compact_checkpoint, device="cpu").dtype == torch.float32
    monkeypatch.setenv("UPRES_PRECISION", "bf16")
    assert upres.load(compact_checkpoint, device="cpu").dtype == explicit["bf16"]
