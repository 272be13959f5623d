"""Sharpen on a visible scale: measured on a real photo, and no halos at an edge."""

from __future__ import annotations

import numpy as np
import pytest

import upres
from upres.engine.sharpen import STRIP_ROWS, sharpen, sharpen_curve
from upres.io.image import Image


def mean_change(before: np.ndarray, after: np.ndarray) -> float:
    """Mean absolute change in 8-bit grey levels."""
    return float(np.abs(after.astype(np.float64) - before.astype(np.float64)).mean())


def test_point_three_is_visible_and_one_is_strong_on_a_photo(photo):
    gentle = mean_change(photo, sharpen(photo, 0.3))
    strong = mean_change(photo, sharpen(photo, 1.0))
    # The old curve changed this photo by 0.15 levels at 0.3: invisible. One grey level on
    # average means several levels on every edge and texture.
    assert 2.0 <= gentle <= 10.0, gentle
    assert strong >= 1.5 * gentle and strong >= 6.0, strong
    assert mean_change(photo, sharpen(photo, 0.0)) == 0.0


def blurred_step(width: int = 64) -> np.ndarray:
    """A soft dark-to-light edge, as an upscaled edge looks: 40 -> 200 over ~8 pixels."""
    x = np.arange(width, dtype=np.float32)
    ramp = 40 + 160 / (1 + np.exp(-(x - width / 2) / 2.0))
    return np.repeat(np.rint(ramp)[None, :, None], 16, axis=0).repeat(3, axis=2).astype(np.uint8)


@pytest.mark.parametrize("value", [0.3, 0.6, 1.0])
def test_no_halo_at_an_edge_but_a_steeper_one(value):
    edge = blurred_step()
    result = sharpen(edge, value)
    # No overshoot: nothing darker than the dark side or brighter than the light side.
    assert result.min() >= edge.min() and result.max() <= edge.max()
    steepest_before = np.abs(np.diff(edge[8, :, 0].astype(int))).max()
    steepest_after = np.abs(np.diff(result[8, :, 0].astype(int))).max()
    assert steepest_after > steepest_before
    # The same strength without the clamp would draw rims (this is what the clamp removes).
    amount, _sigma = sharpen_curve(value)
    assert amount > 1.0


def test_dtypes_channels_and_strips_agree_with_one_piece(photo):
    tall = np.concatenate([photo, photo[::-1]], axis=0)[: STRIP_ROWS + 300]
    whole = sharpen(tall, 0.5)
    assert whole.dtype == np.uint8 and whole.shape == tall.shape
    # Strips overlap by the filters' reach, so a strip boundary leaves no trace: compare
    # with one strip as tall as the image.
    import upres.engine.sharpen as module

    saved, module.STRIP_ROWS = module.STRIP_ROWS, tall.shape[0]
    try:
        assert np.array_equal(sharpen(tall, 0.5), whole)
    finally:
        module.STRIP_ROWS = saved
    grey = sharpen(photo[:, :, :1], 0.5)
    assert grey.shape == (*photo.shape[:2], 1)
    deep = sharpen(photo.astype(np.uint16) * 257, 0.5)
    assert deep.dtype == np.uint16
    eight = sharpen(photo, 0.5).astype(int)
    assert np.abs(np.rint(deep / 257).astype(int) - eight).max() <= 1
    floats = sharpen(photo.astype(np.float32) / 255, 0.5)
    assert floats.dtype == np.float32 and floats.min() >= 0.0 and floats.max() <= 1.0
    with pytest.raises(ValueError):
        sharpen(photo, 1.5)


def test_the_upscaler_applies_the_same_curve(compact_checkpoint, photo):
    tiny = upres.load(compact_checkpoint, device="cpu")
    image = Image(photo[:48, :48].astype(np.float32) / 255)
    plain, _ = tiny.upscale_image(image, out_dtype=np.uint8)
    sharp, _ = tiny.upscale_image(image, sharpen=0.3, out_dtype=np.uint8)
    assert np.array_equal(sharp.pixels, sharpen(plain.pixels, 0.3))
