"""Evaluation gives the same number on every machine: whole images, RGB PSNR-B, researcher UX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

import upres
from conftest import tiny_swinir
from upres.cli.eval import register
from upres.engine import plan as plan_module
from upres.metrics.degradations import bicubic_downscale, jpeg_compress
from upres.metrics.evaluate import evaluate
from upres.metrics.quality import psnr, psnr_b
from upres.metrics.tasks import EvaluationError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def smooth_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A colour image with edges and gradients (blocks of random colour, lightly blurred)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(20, 235, size=(height // 6 + 1, width // 6 + 1, 3)).astype(np.float64)
    image = np.kron(blocks, np.ones((6, 6, 1)))[:height, :width]
    ramp = np.linspace(0, 30, width)[None, :, None]
    return np.clip(image * 0.85 + ramp, 0, 255).round().astype(np.uint8)


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def small_auto_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The automatic tile as on a machine with little memory: 32 px for the tiny SwinIR."""
    monkeypatch.setattr(plan_module, "CPU_TILE_BYTES", 1)


# -- whole-image inference ------------------------------------------------------------------


@pytest.fixture(scope="module")
def far_reaching_swinir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SwinIR x2 whose attention matters: at the default initialisation (std 0.02) its
    transformer branches are so weak that tiles agree with the whole image to 1e-7."""
    network = tiny_swinir()
    torch.manual_seed(1)
    for module in network.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=1.0)
    path = tmp_path_factory.mktemp("models") / "far-swinir-x2.pth"
    torch.save({"params": network.state_dict()}, path)
    return path


def test_image_larger_than_the_auto_tile_is_scored_whole(
    tmp_path: Path, far_reaching_swinir: Path, small_auto_tile: None
) -> None:
    hr = smooth_photo(256, 224)
    save(tmp_path / "set" / "HR" / "photo.png", hr)
    lr = bicubic_downscale(hr, 2)  # 128 x 112: four automatic tiles a side
    auto = upres.load(far_reaching_swinir, device="cpu", precision="fp32")
    assert auto._plan(None, image_width=112, image_height=128).tile < 112

    result = evaluate(str(far_reaching_swinir), tmp_path / "set", device="cpu")

    one_tile = upres.load(far_reaching_swinir, device="cpu", precision="fp32", tile=4096)
    expected = psnr(one_tile(lr), hr, 2, y_only=True)
    assert result.rows[0].psnr_y == expected  # exactly the whole-image score
    assert psnr(auto(lr), hr, 2, y_only=True) != expected  # which automatic tiles change
    assert result.whole_images and result.rows[0].tiling is None and not result.warnings
    document = result.to_dict()
    assert (document["device"], document["precision"]) == ("cpu", "float32")
    assert document["whole_images"] is True
    assert document["lr_sources"] == {"imresize": 1}
    assert {"python", "upres", "torch", "spandrel", "numpy"} <= set(document["versions"])


def test_when_the_whole_image_does_not_fit_the_tile_is_recorded_with_a_warning(
    tmp_path: Path, swinir_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(tmp_path / "set" / "photo.png", smooth_photo(96, 80))
    monkeypatch.setattr(plan_module, "free_memory_bytes", lambda device: 1)
    result = evaluate(str(swinir_checkpoint), tmp_path / "set", device="cpu")
    row = result.rows[0]
    assert row.tiling is not None and row.tiling["tile"] == 32 and row.tiling["overlap"] == 32
    assert "does not fit in memory" in row.tiling["why"]
    assert result.warnings == [f"photo: {row.tiling['why']}"]
    document = result.to_dict()
    assert document["whole_images"] is False
    assert document["images"][0]["tiling"]["tile"] == 32


# -- colour PSNR-B --------------------------------------------------------------------------


def swinir_psnrb(restored: np.ndarray, reference: np.ndarray) -> float:
    """SwinIR's calculate_psnrb with _blocking_effect_factor, transcribed in torch (HWC, 0..255)."""
    first = torch.from_numpy(restored.astype(np.float64)).permute(2, 0, 1)[None] / 255.0
    second = torch.from_numpy(reference.astype(np.float64)).permute(2, 0, 1)[None] / 255.0
    total = 0.0
    for c in range(first.shape[1]):
        im = first[:, c : c + 1]
        mse = torch.nn.functional.mse_loss(im, second[:, c : c + 1], reduction="none")
        mse = mse.view(1, -1).mean(1)
        height, width = im.shape[2], im.shape[3]
        block_h = torch.arange(7, width - 1, 8)
        block_v = torch.arange(7, height - 1, 8)
        inner_h = torch.from_numpy(np.setdiff1d(np.arange(0, width - 1), block_h.numpy()))
        inner_v = torch.from_numpy(np.setdiff1d(np.arange(0, height - 1), block_v.numpy()))
        edge = ((im[..., block_h] - im[..., block_h + 1]) ** 2).sum() + (
            (im[..., block_v, :] - im[..., block_v + 1, :]) ** 2
        ).sum()
        inner = ((im[..., inner_h] - im[..., inner_h + 1]) ** 2).sum() + (
            (im[..., inner_v, :] - im[..., inner_v + 1, :]) ** 2
        ).sum()
        n_edge = height * (width // 8 - 1) + width * (height // 8 - 1)
        n_inner = height * (width - 1) - height * (width // 8 - 1)
        n_inner += width * (height - 1) - width * (height // 8 - 1)
        edge_mean, inner_mean = edge / n_edge, inner / n_inner
        scaler = np.log2(8) / np.log2(min(height, width))
        bef = scaler * (edge_mean - inner_mean) if edge_mean > inner_mean else 0.0
        total += float(10 * torch.log10(1 / (mse + bef)))
    return total / first.shape[1]


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """SwinIR's to_y_channel: BT.601 Y on 0..255, unrounded, as H x W x 1."""
    unit = rgb.astype(np.float64) / 255.0
    y = np.dot(unit, [65.481, 128.553, 24.966]) + 16.0
    return y[..., None]


def test_colour_psnr_b_is_on_rgb_and_matches_an_independent_computation(tmp_path: Path) -> None:
    clean = smooth_photo(72, 96, seed=3)
    compressed = jpeg_compress(clean, 10)
    on_rgb = swinir_psnrb(compressed, clean)
    on_y = swinir_psnrb(y_channel(compressed), y_channel(clean))
    assert abs(on_rgb - on_y) > 0.1  # the two protocols really differ here
    assert psnr_b(compressed, clean) == pytest.approx(on_rgb, abs=1e-9)

    save(tmp_path / "colour" / "photo.png", clean)
    result = evaluate("identity", tmp_path / "colour", task="jpeg", quality=10)
    assert not result.spec.grey
    assert result.metric_names[-2:] == ("psnr_b", "psnr_b_y")
    assert result.rows[0].psnr_b == pytest.approx(on_rgb, abs=1e-9)
    assert result.rows[0].psnr_b_y == pytest.approx(on_y, abs=1e-9)


# -- what a researcher drives ---------------------------------------------------------------


def test_dataset_named_from_the_folder_above_hr_and_its_shipped_lr_used(tmp_path: Path) -> None:
    hr = smooth_photo(48, 40)
    save(tmp_path / "MySet" / "HR" / "a.png", hr)
    save(tmp_path / "MySet" / "HR" / "b.png", smooth_photo(40, 48, seed=1))
    shipped = np.clip(bicubic_downscale(hr, 2).astype(int) + 3, 0, 255).astype(np.uint8)
    save(tmp_path / "MySet" / "LR_bicubic" / "X2" / "ax2.png", shipped)
    result = evaluate("bicubic", tmp_path / "MySet" / "HR", scale=2, limit=1)
    assert result.dataset == "MySet" and [row.name for row in result.rows] == ["a"]
    assert result.rows[0].lr_source == "shipped ax2.png"
    assert result.to_dict()["lr_sources"] == {"shipped LR file": 1}
    with pytest.raises(EvaluationError, match="limit"):
        evaluate("bicubic", tmp_path / "MySet", scale=2, limit=0)


def test_save_images_writes_full_outputs(tmp_path: Path) -> None:
    save(tmp_path / "set" / "a.png", smooth_photo(48, 40))
    evaluate("bicubic", tmp_path / "set", scale=2, save_images=tmp_path / "out")
    with Image.open(tmp_path / "out" / "a_x2.png") as written:
        assert written.size == (40, 48) and written.mode == "RGB"


def test_builtin_model_scale_checked_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(tmp_path / "set" / "a.png", smooth_photo(48, 40))

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(upres, "load", no_load)
    with pytest.raises(EvaluationError, match="x4, not x2"):
        evaluate("dat-light-x4", tmp_path / "set", scale=2)
    with pytest.raises(EvaluationError, match="x1 model"):
        evaluate("dat-light-x4", tmp_path / "set", task="denoise")


def eval_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a group, so that `eval` is a subcommand as in the real CLI
        pass

    register(app)
    return app


def test_cli_json_keeps_progress_on_stderr_and_table_has_four_decimals(tmp_path: Path) -> None:
    save(tmp_path / "set" / "a.png", smooth_photo(48, 40))
    save(tmp_path / "set" / "b.png", smooth_photo(40, 48, seed=1))
    base = ["eval", "-m", "bicubic", "--dataset", str(tmp_path / "set"), "--scale", "2"]
    as_json = CliRunner().invoke(eval_app(), [*base, "--json"])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert "[1/2] a: PSNR-Y" in as_json.stderr and "[2/2] b: PSNR-Y" in as_json.stderr
    table = CliRunner().invoke(eval_app(), base)
    assert f"{document['mean']['psnr_y']:.4f}" in table.stdout
    too_few = CliRunner().invoke(eval_app(), [*base, "--limit", "0"])
    assert too_few.exit_code == 2 and "--limit" in too_few.stderr


# -- tiling sensitivity ---------------------------------------------------------------------


def test_results_hold_a_measured_tiling_sensitivity_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """RESULTS.md has the benchmark's table: measured offline models of the main families,
    with the models that have global operations marked as such."""
    import importlib.util
    import sys

    from upres.models.catalog import CATALOG
    from upres.models.sources import UrlSource

    spec = importlib.util.spec_from_file_location("sens", BENCHMARKS / "tiling_sensitivity.py")
    assert spec is not None and spec.loader is not None
    sensitivity = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "sens", sensitivity)  # dataclasses look their module up
    spec.loader.exec_module(sensitivity)
    offline = {
        name
        for name, card in CATALOG.items()
        if not isinstance(card.source, UrlSource) and card.task != "baseline"
    }
    assert set(sensitivity.OFFLINE_MODELS) == offline  # the script covers every learned one

    text = (BENCHMARKS / "RESULTS.md").read_text()
    section = text[text.index(sensitivity.HEADING) :]
    section = section.split("\n## ", 1)[0]  # up to the next section
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| ")]
    measured = {cells[1].strip(): cells for cells in rows[1:]}  # rows[0] is the header
    assert set(measured) <= offline
    # Real-ESRGAN (no family name on its cards), Real-CUGAN and DAT at least; the section
    # lists what a session could not measure.
    assert {"", "Real-CUGAN", "DAT"} <= {CATALOG[name].family for name in measured}
    for name, cells in measured.items():
        global_op = cells[3].strip()
        assert (global_op != "no") == (CATALOG[name].family in ("DAT", "Real-CUGAN")), name
        pooled = cells[4].split("/")[0].strip()
        assert pooled == "identical" or float(pooled) > 20  # a measured PSNR in dB
