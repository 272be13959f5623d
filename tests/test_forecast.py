"""The visible plan: tile counts and passes as the engine runs them, the memory forecast, and
`upres upscale --dry-run` / `--json`."""

from __future__ import annotations

import json
import re
from dataclasses import astuple

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

import upres
from conftest import descriptor_of, tiny_compact
from upres.cli.main import app
from upres.engine import forecast as forecast_module
from upres.engine.forecast import PassShape, forecast_image, tile_count
from upres.engine.plan import make_plan
from upres.engine.run import TileRunner
from upres.io.image import Image
from upres.io.probe import probe

CPU = torch.device("cpu")
MB = 1024 * 1024
cli = CliRunner()


@pytest.fixture(scope="module")
def tiny(compact_checkpoint):
    return upres.load(compact_checkpoint, device="cpu")


# -- pure maths, checked against the runner ---------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "tile", "width_hint"),
    [(20, 20, 64, None), (100, 70, 32, None), (97, 130, 48, None), (64, 900, None, 900)],
)
def test_tile_count_is_what_the_runner_runs(height, width, tile, width_hint):
    descriptor = descriptor_of(tiny_compact(scale=2))
    plan = make_plan(descriptor, CPU, tile=tile, overlap=8, image_width=width_hint)
    runner = TileRunner(descriptor, plan, lambda dtype: descriptor.model.to(dtype))
    runner.run(np.zeros((height, width, 3), np.float32), np.dtype(np.uint8))
    assert tile_count(height, width, plan) == runner.tiles_run


def shape(side: int, plan, family: str = "Compact") -> PassShape:
    return PassShape(side, side, 3, 3, 2, plan, family)


def test_forecast_grows_with_the_image_and_the_family():
    descriptor = descriptor_of(tiny_compact(scale=2))
    plan = make_plan(descriptor, CPU, tile=256)
    common = {"output_channels": 3, "output_itemsize": 1, "resized": False, "sharpened": False}

    def host(side: int, family: str = "Compact", **extra) -> int:
        return forecast_image(
            [shape(side, plan, family)],
            input_bytes=side * side * 12,
            output_size=(2 * side, 2 * side),
            baseline_bytes=500 * MB,
            **common | extra,
        ).host_bytes

    assert 500 * MB < host(64) < host(256) < host(1024)
    assert host(256, "ESRGAN") > host(256, "Compact")
    # Never below what the process has already reached.
    assert host(64, peak_so_far_bytes=10_000 * MB) == 10_000 * MB
    # Tiles bound the activations: past one tile, an image grows the forecast only by its
    # arrays (input, output, band), not by a bigger forward pass.
    arrays = 2048 * 2048 * 12 + 4096 * 4096 * 3 * 2
    assert host(2048) - host(1024) < 2 * arrays


def test_device_forecast_only_off_the_host():
    descriptor = descriptor_of(tiny_compact(scale=2))
    plan = make_plan(descriptor, CPU, tile=64)
    result = forecast_image(
        [shape(100, plan)],
        input_bytes=0,
        output_size=(200, 200),
        output_channels=3,
        output_itemsize=1,
        resized=False,
        sharpened=False,
        baseline_bytes=0,
    )
    assert result.device_bytes is None


# -- the Upscaler's plan agrees with what it then does ------------------------------------


@pytest.mark.parametrize(
    ("size", "channels", "alpha", "scale"),
    [((40, 30), 3, False, None), ((70, 50), 3, True, 3), ((33, 21), 1, False, 1.5)],
)
def test_plan_image_matches_the_run(tiny, photo, size, channels, alpha, scale):
    width, height = size
    pixels = photo[:height, :width, :channels].astype(np.float32) / 255
    image = Image(pixels, alpha=np.ones((height, width), np.float32) if alpha else None)
    plan = tiny.plan_image(width, height, channels, alpha=alpha, scale=scale)
    _result, report = tiny.upscale_image(image, scale=scale)
    assert plan.tiles == report.tiles
    assert plan.model_passes == report.model_passes
    assert plan.output_size == report.output_size
    assert plan.device == "cpu" and plan.precision in ("fp32", "bf16")
    # The measured peak is reported beside the forecast, and the forecast holds.
    assert report.plan is not None and report.peak_host_bytes is not None
    assert report.plan.forecast.host_bytes >= report.peak_host_bytes


def test_a_chain_plans_every_stage(compact_checkpoint):
    chain = upres.load([compact_checkpoint, compact_checkpoint], device="cpu")
    plan = chain.plan_image(30, 20)
    assert plan.model_passes == 2 and plan.output_size == (120, 80)


# -- headers and the CLI ------------------------------------------------------------------


def test_probe_reads_headers_only(tmp_path, photo):
    PILImage.fromarray(photo[:10, :20]).convert("LA").save(tmp_path / "la.png")
    PILImage.fromarray(photo[:10, :20]).save(tmp_path / "rgb.jpg")
    (photo[:10, :20, 0].astype(np.uint16) * 257).tofile(tmp_path / "raw")
    PILImage.fromarray(photo[:10, :20, 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: width and height swap
    PILImage.fromarray(photo[:10, :20]).save(tmp_path / "turned.jpg", exif=exif)
    facts = lambda name: astuple(probe(tmp_path / name))[:5]  # noqa: E731
    assert facts("la.png") == (20, 10, 1, True, 8)
    assert facts("rgb.jpg") == (20, 10, 3, False, 8)
    assert facts("deep.png") == (20, 10, 1, False, 16)
    assert facts("turned.jpg")[:2] == (10, 20)
    with pytest.raises(upres.BadInputError, match="raw"):
        probe(tmp_path / "raw")


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, photo, compact_checkpoint, monkeypatch):
    source = tmp_path / "in"
    source.mkdir()
    PILImage.fromarray(photo[:60, :90]).save(source / "a.png")
    PILImage.fromarray(photo[:300, :500]).save(source / "b.jpg")
    (source / "c.png").write_bytes(b"not an image")

    def no_inference(*_args, **_kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(TileRunner, "run", no_inference)
    out = tmp_path / "out"
    args = ["upscale", str(source), "-o", str(out), "-m", str(compact_checkpoint), "--dry-run"]
    result = cli.invoke(app, [*args, "--tile", "128"], catch_exceptions=False)
    assert result.exit_code == 1  # c.png is not an image, and says so
    assert "a.png: 90x60 -> 180x120" in result.stdout
    assert "tile 128, 12 tile(s), 1 model pass(es)" in result.stdout
    assert "predicted peak: host" in result.stdout and "MiB" in result.stdout
    assert re.search(r"precision (bf16|fp32): this CPU", result.stdout)
    assert "CPU thread(s): " in result.stdout and "usable core(s)" in result.stdout
    assert "c.png" in result.stderr
    assert not out.exists()

    as_json = cli.invoke(app, [*args, "--json", "--scale", "4"], catch_exceptions=False)
    rows = {row["input"].rsplit("/", 1)[-1]: row for row in json.loads(as_json.stdout)["images"]}
    planned = rows["b.jpg"]
    assert planned["status"] == "planned" and planned["output_size"] == [2000, 1200]
    assert planned["model_passes"] == 2 and planned["device"] == "cpu"
    assert planned["forecast_peak_host_bytes"] > 0
    assert planned["forecast_peak_device_bytes"] is None
    assert rows["c.png"]["status"] == "failed"
    assert planned["precision_reason"].startswith(planned["precision"] + ": ")
    assert planned["threads"]["threads"] >= 1 and "usable core(s)" in planned["threads"]["reason"]
    fp32 = cli.invoke(app, [*args, "--json", "--precision", "fp32"], catch_exceptions=False)
    by_name = {row["input"].rsplit("/", 1)[-1]: row for row in json.loads(fp32.stdout)["images"]}
    assert by_name["b.jpg"]["precision_reason"] == "fp32: as asked"


def test_a_real_run_reports_the_measured_peak_beside_the_forecast(
    tmp_path, photo, compact_checkpoint
):
    PILImage.fromarray(photo[:64, :64]).save(tmp_path / "a.png")
    args = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png")]
    result = cli.invoke(
        app, [*args, "-m", str(compact_checkpoint), "--json"], catch_exceptions=False
    )
    row = json.loads(result.stdout)["images"][0]
    assert row["plan"]["tiles"] == row["tiles"]
    assert row["plan"]["forecast_peak_host_bytes"] >= row["peak_host_bytes"] > 0
    assert row["peak_device_bytes"] is None


def test_calibrated_families_are_the_measured_ones():
    # The benchmark calibrates these two; keep them below the planner's rough figures.
    from upres.engine.plan import BYTES_PER_PIXEL_FP32

    for family in ("Compact", "ESRGAN"):
        assert forecast_module.ACTIVATION_BYTES_PER_PIXEL[family] < BYTES_PER_PIXEL_FP32[family]
