"""imresize, quality scores, degradations and dataset lookup against MATLAB/SwinIR references."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from upres.metrics import datasets as datasets_module
from upres.metrics.datasets import (
    DATASETS_ENV,
    DatasetNotFoundError,
    datasets_root,
    read_rgb,
    resolve_dataset,
)
from upres.metrics.degradations import (
    add_gaussian_noise,
    crop_to_multiple,
    jpeg_compress,
    rounded_luma,
)
from upres.metrics.imresize import contributions, imresize
from upres.metrics.quality import psnr, psnr_b, rgb_to_y, ssim

ROOT = datasets_root()
needs_datasets = pytest.mark.skipif(
    ROOT is None or not (ROOT / "Set5").is_dir(), reason="benchmark datasets not found"
)


def random_image(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# -- imresize ------------------------------------------------------------------------------


def set5_lr_max_difference(scale: int, as_float: bool) -> int:
    """Largest |ours - MATLAB| over every pixel of Set5's shipped LR images at ``scale``."""
    largest = 0
    for hr_path in sorted((ROOT / "Set5" / "HR").glob("*.png")):
        hr = crop_to_multiple(read_rgb(hr_path), scale)
        reference = read_rgb(
            ROOT / "Set5" / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"
        )
        if as_float:
            ours = np.clip(np.floor(imresize(hr.astype(np.float64), 1 / scale) + 0.5), 0, 255)
        else:
            ours = imresize(hr, 1 / scale)
        assert ours.shape == reference.shape
        largest = max(largest, int(np.abs(ours.astype(int) - reference.astype(int)).max()))
    return largest


@needs_datasets
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imresize_reproduces_matlab_set5_lr_exactly(scale: int) -> None:
    # Required: within 2 grey levels. Measured: 0 on every pixel (MATLAB's uint8 per-pass rounding).
    assert set5_lr_max_difference(scale, as_float=False) == 0


@needs_datasets
def test_imresize_set5_x8_within_two_levels() -> None:
    # The shipped X8 files were made by a float pipeline (one rounding at the end): exact that
    # way, and within 2 grey levels with MATLAB's uint8 semantics.
    assert set5_lr_max_difference(8, as_float=True) == 0
    assert set5_lr_max_difference(8, as_float=False) <= 2


def test_imresize_output_size_is_ceil_of_scaled_size() -> None:
    assert imresize(random_image((10, 7, 3)), 0.5).shape == (5, 4, 3)
    assert imresize(random_image((9, 9)), 1 / 3).shape == (3, 3)
    assert imresize(random_image((5, 6, 3)), 4).shape == (20, 24, 3)


def test_imresize_keeps_constant_images_and_dtypes() -> None:
    flat = np.full((12, 16, 3), 77, dtype=np.uint8)
    assert np.array_equal(imresize(flat, 0.25), np.full((3, 4, 3), 77, dtype=np.uint8))
    unit = np.full((12, 16, 3), 0.25, dtype=np.float32)
    resized = imresize(unit, 3)
    assert resized.dtype == np.float32
    np.testing.assert_allclose(resized, 0.25, atol=1e-6)


def test_imresize_float_is_linear_in_range() -> None:
    image = random_image((20, 24, 3)).astype(np.float64)
    np.testing.assert_allclose(imresize(image / 255, 0.5) * 255, imresize(image, 0.5), atol=1e-9)


def test_contributions_weights_sum_to_one_and_indices_stay_inside() -> None:
    for scale in (0.25, 1 / 3, 0.5, 2.0, 4.0):
        out_length = math.ceil(17 * scale)
        weights, indices = contributions(17, out_length, scale)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0)
        assert indices.min() >= 0 and indices.max() < 17


def test_imresize_upscale_matches_keys_cubic_at_known_points() -> None:
    # x2 upsampling of a ramp: the a=-0.5 cubic reproduces linear functions away from borders.
    ramp = np.tile(np.arange(16, dtype=np.float64), (4, 1))
    doubled = imresize(ramp, 2)
    centres = (np.arange(32) + 1) / 2 + 0.25 - 1  # MATLAB sample centres, 0-based
    np.testing.assert_allclose(doubled[0, 4:-4], centres[4:-4], atol=1e-12)


# -- colour and scores ---------------------------------------------------------------------


def test_rgb_to_y_is_matlab_rgb2ycbcr_luma() -> None:
    colours = np.array(
        [[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8
    )
    np.testing.assert_allclose(rgb_to_y(colours)[0], [16.0, 235.0, 81.481, 144.553, 40.966])
    image = random_image((6, 5, 3))
    r, g, b = (image[..., c].astype(np.float64) / 255 for c in range(3))
    np.testing.assert_allclose(rgb_to_y(image), 16 + 65.481 * r + 128.553 * g + 24.966 * b)


def test_psnr_known_values() -> None:
    grey = random_image((32, 32), seed=2).clip(0, 254)
    assert psnr(grey + 1, grey) == pytest.approx(48.1308, abs=1e-4)  # 10 log10(255^2 / 1)
    rgb = random_image((32, 32, 3), seed=3).clip(0, 254)
    # +1 on R, G and B moves Y by 219/255 (the weights sum to 219).
    expected = 20 * math.log10(255 * 255 / 219)
    assert psnr(rgb + 1, rgb, y_only=True) == pytest.approx(expected, abs=1e-9)
    assert psnr(rgb + 1, rgb) == pytest.approx(48.1308, abs=1e-4)
    assert psnr(rgb, rgb) == math.inf


def test_border_crop_ignores_edges() -> None:
    image = random_image((40, 40, 3), seed=4)
    spoiled = image.copy()
    spoiled[:3] = 0
    spoiled[:, -3:] = 255
    assert psnr(spoiled, image, crop_border=3) == math.inf
    assert math.isfinite(psnr(spoiled, image, crop_border=2))
    assert ssim(spoiled, image, crop_border=3) == pytest.approx(1.0)
    assert ssim(spoiled, image, crop_border=0) < 1.0


def test_ssim_of_identical_images_is_one() -> None:
    image = random_image((48, 40, 3), seed=5)
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert ssim(image, image, y_only=True) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_scikit_image_gaussian_ssim() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    clean = cv2.GaussianBlur(random_image((64, 80, 3), seed=6), (7, 7), 2)
    noisy = np.clip(clean + np.random.default_rng(7).normal(0, 12, clean.shape), 0, 255).astype(
        np.uint8
    )
    options = {
        "gaussian_weights": True,
        "sigma": 1.5,
        "use_sample_covariance": False,
        "data_range": 255,
    }
    reference_grey = metrics.structural_similarity(clean[..., 0], noisy[..., 0], **options)
    assert ssim(noisy[..., 0], clean[..., 0]) == pytest.approx(reference_grey, abs=1e-4)
    reference_rgb = metrics.structural_similarity(clean, noisy, channel_axis=2, **options)
    assert ssim(noisy, clean) == pytest.approx(reference_rgb, abs=1e-4)


def test_psnr_b_adds_blocking_penalty_only_for_block_edges() -> None:
    rng = np.random.default_rng(8)
    reference = rng.integers(60, 200, size=(64, 64), dtype=np.uint8)
    # Steps at every 8-pixel block edge and nowhere else: a pure blocking artefact.
    blocks = np.kron(rng.integers(60, 200, size=(8, 8)), np.ones((8, 8))).astype(np.uint8)
    assert psnr_b(blocks, reference) < psnr(blocks, reference)
    # A smooth ramp has no extra steps at block edges, so PSNR-B equals PSNR.
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 2, (64, 1))
    assert psnr_b(ramp, reference) == pytest.approx(psnr(ramp, reference), abs=1e-9)


def test_psnr_b_on_rgb_averages_channels_and_y_only_uses_luma() -> None:
    image = random_image((32, 32, 3), seed=9)
    other = random_image((32, 32, 3), seed=10)
    per_channel = [psnr_b(image[..., c], other[..., c]) for c in range(3)]
    assert psnr_b(image, other) == pytest.approx(np.mean(per_channel))
    assert psnr_b(image, other, y_only=True) != pytest.approx(psnr_b(image, other))


# -- degradations --------------------------------------------------------------------------


def test_gaussian_noise_is_the_reference_stream_in_bgr_order() -> None:
    clean = random_image((9, 7, 3), seed=11)
    state = np.random.get_state()
    try:
        np.random.seed(0)  # the published protocol's global seeding, per image
        bgr_noise = np.random.normal(0, 25 / 255.0, clean.shape)
    finally:
        np.random.set_state(state)
    expected = clean.astype(np.float32) / 255.0 + bgr_noise[..., ::-1]
    np.testing.assert_array_equal(add_gaussian_noise(clean, 25), expected)
    grey = clean[..., 0]
    assert add_gaussian_noise(grey, 15).shape == grey.shape


def test_jpeg_compress_matches_opencv_on_bgr() -> None:
    rgb = cv2.GaussianBlur(random_image((24, 32, 3), seed=12), (5, 5), 1)
    _, encoded = cv2.imencode(".jpg", rgb[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 20])
    expected = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(jpeg_compress(rgb, 20), expected)
    assert jpeg_compress(rgb[..., 0].copy(), 20).shape == (24, 32)


def test_rounded_luma_is_rounded_rgb_to_y() -> None:
    rgb = random_image((16, 16, 3), seed=13)
    assert np.abs(rounded_luma(rgb).astype(float) - rgb_to_y(rgb)).max() <= 0.5 + 1e-6


# -- datasets ------------------------------------------------------------------------------


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_named_dataset_resolves_case_insensitively_under_env_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_png(tmp_path / "Set5" / "HR" / "b.png", random_image((8, 8, 3)))
    write_png(tmp_path / "Set5" / "HR" / "a.png", random_image((8, 8, 3)))
    (tmp_path / "Set5" / "HR" / ".DS_Store").write_bytes(b"junk")
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    dataset = resolve_dataset("sET5")
    assert dataset.name == "Set5"
    assert [p.name for p in dataset.images()] == ["a.png", "b.png"]


def test_unknown_dataset_and_missing_folder_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="unknown dataset"):
        resolve_dataset("Urban100")
    with pytest.raises(DatasetNotFoundError, match="not found"):
        resolve_dataset(tmp_path / "missing" / "folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no images"):
        resolve_dataset(tmp_path / "empty")


def test_root_falls_back_to_shared_datasets_beside_the_project(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DATASETS_ENV, raising=False)
    candidates = datasets_module.root_candidates()
    assert candidates[0].parts[-2:] == ("shared", "datasets")
    package_file = Path(datasets_module.__file__).resolve()
    assert package_file.parents[3] / "shared" / "datasets" in candidates  # beside src/


def test_shipped_lr_is_found_by_reference_naming(tmp_path: Path) -> None:
    write_png(tmp_path / "HR" / "bird.png", random_image((8, 8, 3)))
    write_png(tmp_path / "LR_bicubic" / "X2" / "birdx2.png", random_image((4, 4, 3)))
    dataset = resolve_dataset(tmp_path)
    hr = dataset.images()[0]
    assert dataset.shipped_lr(hr, 2) == tmp_path / "LR_bicubic" / "X2" / "birdx2.png"
    assert dataset.shipped_lr(hr, 3) is None
