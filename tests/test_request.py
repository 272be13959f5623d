"""One request, checked before any work: the rules, each surface's form of the same error,
the exact target size, --tile 0, --suffix, --alpha, and the output limit."""

from __future__ import annotations

import ast
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

import upres
from upres.cli.main import app
from upres.errors import (
    BadInputError,
    ModelUnavailableError,
    OutputError,
    OutputTooLargeError,
    RequestError,
    UpresError,
)
from upres.io.image import image_from_array
from upres.models.catalog import CATALOG, ModelCard
from upres.models.sources import UrlSource
from upres.request import UpscaleRequest, default_max_output_pixels

SRC = Path(upres.__file__).resolve().parent


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def runner(compact_checkpoint: Path) -> upres.ImageRunner:
    return upres.load(compact_checkpoint, device="cpu")


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    path = tmp_path / "small.png"
    PILImage.fromarray(rng.integers(0, 256, (14, 20, 3), np.uint8)).save(path)
    return path


# -- the rules, once -------------------------------------------------------------------

BAD_OPTIONS = [
    ({"scale": 0}, "scale must be greater than 0, not 0"),
    ({"scale": -1}, "scale must be greater than 0, not -1"),
    ({"scale": float("nan")}, "scale must be a finite number"),
    ({"tile": 1}, "tile must be 0 (no tiling), 'auto' or at least 32 pixels, not 1"),
    ({"tile": "big"}, "tile must be 'auto', 0 (no tiling) or a number of pixels"),
    ({"tile_overlap": -3}, "tile_overlap must be a whole number from 0 to 512"),
    ({"width": 0}, "width must be a positive number of pixels"),
    ({"scale": 2, "width": 100}, "width cannot be combined with scale"),
    ({"height": 10, "long_side": 20}, "long_side cannot be combined with height"),
    ({"format": "gif"}, "format must be one of png, jpg, webp, tiff, bmp, not 'gif'"),
    ({"quality": 0}, "quality must be a whole number from 1 to 100"),
    ({"sharpen": 2}, "sharpen must be between 0 and 1"),
    ({"alpha": "magic"}, "alpha must be one of model, bicubic"),
    ({"precision": "fp8"}, "precision must be one of auto, fp32, fp16, bf16"),
    ({"device": "gpu"}, "device must be auto, cpu, cuda, cuda:N or mps"),
    ({"max_output_pixels": 0}, "max_output_pixels must be a positive whole number"),
    ({"overwrite": True, "skip_existing": True}, "overwrite cannot be combined with skip_existing"),
    ({"suffix": "../x"}, "suffix must be a plain piece of a file name"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_a_bad_option_is_refused_with_one_message(options: dict, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        UpscaleRequest(**options)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)  # old callers catching ValueError still do


def test_tile_zero_means_no_tiling_and_auto_is_none() -> None:
    assert UpscaleRequest(tile=0).tile == 0
    assert UpscaleRequest(tile="0").tile == 0
    assert UpscaleRequest(tile="auto").tile is None
    assert UpscaleRequest(tile="64").tile == 64


def test_exact_sizes_keep_the_aspect() -> None:
    assert UpscaleRequest(width=100).output_size(20, 14, 2) == (100, 70)
    assert UpscaleRequest(height=35).output_size(20, 14, 2) == (50, 35)
    assert UpscaleRequest(long_side=40).output_size(14, 20, 2) == (28, 40)
    assert UpscaleRequest(scale=1.5).output_size(20, 14, 2) == (30, 21)
    assert UpscaleRequest().output_size(20, 14, 4) == (80, 56)


def test_the_default_output_limit_is_finite_and_can_be_set(monkeypatch) -> None:
    limit = default_max_output_pixels()
    assert 16_000_000 <= limit < 10**12
    monkeypatch.setenv("UPRES_MAX_OUTPUT_PIXELS", "12345")
    assert UpscaleRequest().output_limit() == 12345
    assert UpscaleRequest(max_output_pixels=99).output_limit() == 99
    monkeypatch.setenv("UPRES_MAX_OUTPUT_PIXELS", "lots")
    with pytest.raises(RequestError, match="UPRES_MAX_OUTPUT_PIXELS"):
        UpscaleRequest().output_limit()


# -- the same error on every surface ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scale", "0"), "--scale must be greater than 0, not 0"),
        (("--scale", "-1"), "--scale must be greater than 0, not -1"),
        (("--tile", "1"), "--tile must be 0 (no tiling), 'auto' or at least 32 pixels"),
        (("--width", "50", "--scale", "2"), "--width cannot be combined with scale"),
        (("--quality", "0"), "--quality must be a whole number from 1 to 100"),
        (("--alpha", "magic"), "--alpha must be one of model, bicubic"),
        (("--suffix", "a/b"), "--suffix must be a plain piece of a file name"),
    ],
)
def test_cli_usage_errors_exit_2_before_anything_loads(
    picture: Path, tmp_path: Path, args: tuple, message: str
) -> None:
    not_a_model = tmp_path / "broken.pth"
    not_a_model.write_bytes(b"not a checkpoint")  # loading it would be a different error
    result = cli("upscale", picture, "-m", not_a_model, *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_api_and_cli_say_the_same(runner: upres.ImageRunner, picture: Path) -> None:
    with pytest.raises(RequestError) as from_call:
        runner(np.zeros((8, 8, 3), np.uint8), scale=0)
    with pytest.raises(RequestError) as from_file:
        runner.upscale_file(picture, picture.with_name("o.png"), scale=0)
    with pytest.raises(RequestError) as from_load:
        upres.load("realesrgan-x4plus", tile=1)
    assert str(from_call.value) == str(from_file.value) == "scale must be greater than 0, not 0"
    with pytest.raises(RequestError) as from_request:
        UpscaleRequest(tile=1)
    assert str(from_load.value) == str(from_request.value)


# -- checked before the work, not after ---------------------------------------------------


def test_a_missing_input_is_reported_before_any_model_loads(tmp_path: Path) -> None:
    not_a_model = tmp_path / "broken.pth"
    not_a_model.write_bytes(b"loading this would fail with another message")
    result = cli("upscale", tmp_path / "missing.png", "-m", not_a_model)
    assert result.exit_code == 1
    assert result.stderr.count("error:") == 1
    assert "missing.png: file not found" in result.stderr and "checkpoint" not in result.stderr


def test_an_unwritable_format_is_refused_before_decoding(
    runner: upres.ImageRunner, tmp_path: Path, picture: Path
) -> None:
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(picture.read_bytes()[:60])  # decoding it would fail differently
    with pytest.raises(RequestError, match="format must be one of"):
        runner.upscale_file(truncated, tmp_path / "out.png", format="gif")
    with pytest.raises(OutputError, match=r"cannot write an image as \.xyz"):
        runner.upscale_file(truncated, tmp_path / "out.xyz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.png", "truncated.png"]


def test_an_output_that_is_a_folder_is_refused_before_the_upscale(
    picture: Path, tmp_path: Path, compact_checkpoint: Path
) -> None:
    folder = tmp_path / "existing_folder.png"
    folder.mkdir()
    result = cli("upscale", picture, "-o", folder, "--overwrite", "-m", compact_checkpoint)
    assert result.exit_code == 1
    assert "existing_folder.png: is a folder" in result.stderr
    assert "tiles" not in result.stdout and list(folder.iterdir()) == []


def test_a_folder_without_images_is_named(tmp_path: Path, compact_checkpoint: Path) -> None:
    empty = tmp_path / "holiday"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    result = cli("upscale", empty, "-m", compact_checkpoint)
    assert result.exit_code == 2
    assert "holiday: a folder with no images, animations or videos in it" in result.stderr
    named_like_an_image = tmp_path / "photo.png"
    named_like_an_image.mkdir()
    result = cli("upscale", named_like_an_image, "-m", compact_checkpoint)
    assert result.exit_code == 2 and "photo.png: a folder with no images" in result.stderr


def test_a_model_that_cannot_be_downloaded_has_its_own_exit_code(
    picture: Path, monkeypatch
) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on: offline
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    card = ModelCard(
        name="offline-weights-x2",
        arch="test",
        task="sr",
        scale=2,
        license="MIT",
        source=UrlSource(f"http://127.0.0.1:{port}/w.pth", "w.pth", page=""),
        summary="test",
        sha256=None,
    )
    monkeypatch.setitem(CATALOG, card.name, card)
    result = cli("upscale", picture, "-m", card.name)
    assert result.exit_code == 3, result.stderr
    assert "unreachable" in result.stderr or "cannot download" in result.stderr
    with pytest.raises(ModelUnavailableError):
        upres.load(card.name)
    assert cli("upscale", picture, "-m", "no-such-model-x9").exit_code == 2


# -- silent wrong results, now refused -----------------------------------------------------


def test_float_arrays_below_the_range_are_refused(runner: upres.ImageRunner) -> None:
    below = -np.ones((8, 8, 3), np.float32) * 0.2
    with pytest.raises(BadInputError, match="expected \\[0, 1\\]"):
        runner(below)
    with pytest.raises(BadInputError, match="down to -1"):
        runner(np.linspace(-1, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3))
    ringing = np.full((8, 8, 3), 0.5, np.float32)
    ringing[0, 0] = -0.01  # a model's small undershoot is clipped, not refused
    assert runner(ringing).shape == (16, 16, 3)


def test_the_output_limit_refuses_up_front_with_the_scale_that_fits(
    runner: upres.ImageRunner, picture: Path, tmp_path: Path
) -> None:
    started = time.perf_counter()
    with pytest.raises(OutputTooLargeError) as caught:
        runner(np.zeros((10, 10, 3), np.uint8), scale=1000, max_output_pixels=1_000_000)
    assert caught.value.largest_scale == 100.0 and "a scale of at most 100.00 fits" in str(
        caught.value
    )
    with pytest.raises(OutputTooLargeError):  # the finite default, with no option at all
        runner(np.zeros((10, 10, 3), np.uint8), scale=1e6)
    assert time.perf_counter() - started < 5  # refused, not attempted
    result = cli(
        "upscale", picture, "-m", runner.model.path, "--scale", "1000",
        "--max-output-pixels", "1000000", "-o", tmp_path / "big.png",
    )  # fmt: skip
    assert result.exit_code == 1 and "a scale of at most 59.76 fits" in result.stderr
    assert not (tmp_path / "big.png").exists()


# -- exact size, tiles, suffix, alpha ---------------------------------------------------------


def test_exact_sizes_on_every_surface(
    runner: upres.ImageRunner, picture: Path, tmp_path: Path
) -> None:
    pil = PILImage.open(picture)
    assert runner(pil, width=101).size == (101, 71)  # three x2 passes, then one resize
    assert runner(np.asarray(pil), height=50).shape[:2] == (50, 71)
    big = runner.upscale_file(picture, tmp_path / "long.png", long_side=90)
    assert big.report.output_size == (90, 63) and big.report.model_passes == 3  # 4.5x
    assert PILImage.open(tmp_path / "long.png").size == (90, 63)
    result = cli("upscale", picture, "-m", runner.model.path, "--width", "30", "--json")
    assert result.exit_code == 0, result.stderr
    assert PILImage.open(tmp_path / "small_w30.png").size == (30, 21)


def test_tile_zero_is_one_tile_and_matches_the_untiled_result(
    runner: upres.ImageRunner, compact_checkpoint: Path
) -> None:
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), np.uint8)
    whole = upres.load(compact_checkpoint, device="cpu", tile=0)
    tiled = upres.load(compact_checkpoint, device="cpu", tile=32)
    decoded = image_from_array(image)[0]
    one, report = whole.upscale_image(decoded)
    assert report.tiles == 1
    many, tiled_report = tiled.upscale_image(decoded)
    assert tiled_report.tiles > 1
    # Compact's receptive field fits in the overlap: tiling changes nothing.
    assert np.abs(one.pixels.astype(int) - many.pixels.astype(int)).max() <= 1


def test_suffix_names_results_beside_their_inputs(picture: Path, compact_checkpoint) -> None:
    result = cli("upscale", picture, "-m", compact_checkpoint, "--suffix", "out")
    assert result.exit_code == 0, result.stderr
    assert (picture.parent / "small_out.png").is_file()


def test_alpha_bicubic_skips_the_model(runner: upres.ImageRunner) -> None:
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (16, 16, 4), np.uint8)
    by_model = runner(rgba)
    bicubic = runner(rgba, alpha="bicubic")
    expected = cv2.resize(
        rgba[:, :, 3].astype(np.float32) / 255, (32, 32), interpolation=cv2.INTER_CUBIC
    )
    expected = np.rint(np.clip(expected, 0, 1) * 255).astype(np.uint8)
    assert np.abs(bicubic[:, :, 3].astype(int) - expected).max() <= 1
    assert np.array_equal(bicubic[:, :, :3], by_model[:, :, :3])
    assert not np.array_equal(bicubic[:, :, 3], by_model[:, :, 3])


# -- layering ------------------------------------------------------------------------------------


def test_io_imports_nothing_above_it() -> None:
    for module in (SRC / "io").glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = [
            node.module or ""
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        ] + [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ]
        above = [
            m
            for m in imported
            if m.startswith("upres.") and not m.startswith(("upres.io", "upres.errors"))
        ]
        assert not above, f"{module.name} imports {above}"


def test_typed_errors_share_one_base() -> None:
    for error in (RequestError, OutputError, OutputTooLargeError, ModelUnavailableError):
        assert issubclass(error, UpresError)


def test_a_chain_makes_the_exact_size_too(compact_checkpoint: Path) -> None:
    chain = upres.load([compact_checkpoint, compact_checkpoint], device="cpu")
    image = PILImage.fromarray(np.random.default_rng(2).integers(0, 256, (14, 20, 3), np.uint8))
    assert chain(image, width=70).size == (70, 49)  # x4 chain, then one resize to 3.5x
    with pytest.raises(OutputTooLargeError):
        chain(image, scale=100, max_output_pixels=10_000)


def test_batch_checks_its_options_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for args, message in (
        (("--scale", "0"), "--scale must be greater than 0, not 0"),
        (("--tile", "1"), "--tile must be 0 (no tiling), 'auto' or at least 32 pixels"),
        (("--format", "gif"), "--format must be one of png, jpg, webp, tiff, bmp"),
    ):
        result = cli("batch", tmp_path / "in", tmp_path / "out", *args)
        assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_folders_and_globs_take_stills_animations_and_videos(
    tmp_path: Path, compact_checkpoint: Path
) -> None:
    import av

    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(4)
    frames = [PILImage.fromarray(rng.integers(0, 256, (10, 12, 3), np.uint8)) for _ in range(3)]
    frames[0].save(folder / "still.png")
    frames[0].save(folder / "moving.gif", save_all=True, append_images=frames[1:], duration=90)
    with av.open(str(folder / "clip.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for _ in range(4):
            frame = rng.integers(0, 256, (16, 16, 3), np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    out = tmp_path / "out"
    result = cli("upscale", folder, "-o", out, "-m", compact_checkpoint, "--format", "jpg")
    assert result.exit_code == 0, result.stderr
    assert PILImage.open(out / "still.jpg").size == (24, 20)
    with PILImage.open(out / "moving.gif") as moving:  # --format cannot flatten it
        assert moving.n_frames == 3 and moving.size == (24, 20)
    with av.open(str(out / "clip.mp4")) as clip:
        assert clip.streams.video[0].codec_context.width == 32
        assert sum(1 for _ in clip.decode(video=0)) == 4
