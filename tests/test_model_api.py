"""`Model(scale_factor, model_path).infer(cv2 array)`: OpenCV's BGR order in and out."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

import upres
from upres import Model


@pytest.fixture(scope="module")
def rgb_runner(compact_checkpoint):
    return upres.load(compact_checkpoint, device="cpu")


@pytest.fixture
def red_and_blue(tmp_path, photo):
    """A PNG on disk whose left half is strongly red and right half strongly blue."""
    pixels = photo[:32, :48].copy()
    pixels[:, :24] = (pixels[:, :24] * 0.2).astype(np.uint8) + np.array([200, 0, 0], np.uint8)
    pixels[:, 24:] = (pixels[:, 24:] * 0.2).astype(np.uint8) + np.array([0, 0, 200], np.uint8)
    path = tmp_path / "in.png"
    PILImage.fromarray(pixels).save(path)
    return path, pixels


def test_infer_takes_and_returns_bgr_that_imwrite_saves_right(
    compact_checkpoint, rgb_runner, red_and_blue, tmp_path
):
    path, rgb = red_and_blue
    model = Model(scale_factor=2, model_path=str(compact_checkpoint), device="cpu")
    result = model.infer(cv2.imread(str(path)))
    assert result.dtype == np.uint8 and result.shape == (64, 96, 3)
    written = tmp_path / "out.png"
    assert cv2.imwrite(str(written), result)
    saved = np.asarray(PILImage.open(written).convert("RGB")).astype(int)
    # What cv2.imwrite saved is exactly what the RGB API gives for the RGB picture...
    assert np.array_equal(saved, rgb_runner(rgb))
    # ...and, to be sure no double swap hides in both, the red half is still red.
    left, right = saved[:, :40].mean(axis=(0, 1)), saved[:, 56:].mean(axis=(0, 1))
    assert left[0] > left[2] + 100 and right[2] > right[0] + 100


def test_bgra_keeps_alpha_and_order(compact_checkpoint, rgb_runner, photo, tmp_path):
    rgba = np.dstack([photo[:20, :20], np.linspace(0, 255, 400).reshape(20, 20)]).astype(np.uint8)
    path = tmp_path / "alpha.png"
    PILImage.fromarray(rgba, "RGBA").save(path)
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert bgra.shape == (20, 20, 4)
    model = Model(scale_factor=2, model_path=compact_checkpoint, device="cpu")
    result = model.infer(bgra)
    assert result.shape == (40, 40, 4)
    expected = rgb_runner(rgba)
    assert np.array_equal(result[:, :, [2, 1, 0, 3]], expected)


def test_grey_arrays_pass_untouched(compact_checkpoint, rgb_runner, photo, tmp_path):
    path = tmp_path / "grey.png"
    PILImage.fromarray(photo[:24, :24]).convert("L").save(path)
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    model = Model(scale_factor=2, model_path=compact_checkpoint, device="cpu")
    result = model.infer(grey)
    assert result.shape == (48, 48) and result.dtype == np.uint8
    assert np.array_equal(result, rgb_runner(grey))


def test_any_scale_factor_and_16_bits(compact_checkpoint, photo):
    model = Model(scale_factor=3, model_path=compact_checkpoint, device="cpu")
    deep = (photo[:10, :14].astype(np.uint16) * 257)[:, :, ::-1]
    result = model.infer(np.ascontiguousarray(deep))
    assert result.shape == (30, 42, 3) and result.dtype == np.uint16
    assert model.scale == 2  # the Upscaler's facts are the Model's


def test_load_takes_the_same_channel_order(compact_checkpoint, rgb_runner, photo):
    bgr_runner = upres.load(compact_checkpoint, device="cpu", channel_order="bgr")
    bgr = np.ascontiguousarray(photo[:16, :16, ::-1])
    assert np.array_equal(bgr_runner(bgr)[:, :, ::-1], rgb_runner(photo[:16, :16]))
    chain = upres.load([compact_checkpoint, compact_checkpoint], device="cpu", channel_order="BGR")
    assert chain.channel_order == "bgr" and chain(bgr).shape == (64, 64, 3)


def test_mistakes_are_clear(compact_checkpoint):
    with pytest.raises(ValueError, match="channel_order"):
        upres.load(compact_checkpoint, device="cpu", channel_order="bgra")
    with pytest.raises(ValueError, match="scale_factor"):
        Model(scale_factor=0, model_path=compact_checkpoint)
    model = Model(scale_factor=2, model_path=compact_checkpoint, device="cpu")
    with pytest.raises(ValueError, match=r"cv2\.imread"):
        model.infer(cv2.imread("/nonexistent/photo.jpg"))
    with pytest.raises(upres.ModelNotFoundError):
        Model(scale_factor=4, model_path="no-such-model-x4")


def test_a_built_in_model_by_name(photo):
    model = Model(scale_factor=4, model_path="realesr-animevideov3-x4", device="cpu")
    bgr = np.ascontiguousarray(photo[100:124, 100:132, ::-1])
    result = model.infer(bgr)
    assert result.shape == (96, 128, 3) and result.dtype == np.uint8
    # A real model keeps the colours: the upscale shrunk back is close to the input, in BGR.
    back = cv2.resize(result, (32, 24), interpolation=cv2.INTER_AREA)
    assert np.abs(back.astype(int) - bgr.astype(int)).mean() < 8
