"""The Python API: any image kind in, the same kind out; files round-trip with everything kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import upres
from upres.errors import BadInputError, OutputExistsError
from upres.io.image import Image, read_image, write_image


@pytest.fixture(scope="module")
def tiny(compact_checkpoint):
    return upres.load(compact_checkpoint, device="cpu")


def test_pil_in_pil_out_keeps_the_mode(tiny, photo):
    for mode in ("RGB", "L", "RGBA", "LA"):
        source = PILImage.fromarray(photo[:30, :40]).convert(mode)
        result = tiny(source)
        assert isinstance(result, PILImage.Image)
        assert result.size == (80, 60)
        assert result.mode == mode


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_numpy_in_numpy_out_keeps_dtype_and_layout(tiny, photo, dtype):
    base = photo[:20, :24].astype(np.float32) / 255
    array = base if dtype == np.float32 else np.rint(base * np.iinfo(dtype).max).astype(dtype)
    result = tiny(array)
    assert result.dtype == dtype and result.shape == (40, 48, 3)
    grey = tiny(array[:, :, 0])
    assert grey.dtype == dtype and grey.shape == (40, 48)


def test_torch_tensors_come_back_as_tensors(tiny, photo):
    chw = torch.from_numpy(photo[:16, :16]).permute(2, 0, 1).float() / 255
    result = tiny(chw)
    assert isinstance(result, torch.Tensor) and result.shape == (3, 32, 32)
    batch = tiny(torch.stack([chw, chw]).to(torch.float64))
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.float64
    torch.testing.assert_close(batch[0].float(), result)


@pytest.mark.parametrize(("factor", "passes"), [(1.5, 1), (2, 1), (3, 2), (4, 2)])
def test_any_scale_factor(tiny, photo, factor, passes):
    result, report = tiny.upscale_image(
        Image(photo[:21, :30].astype(np.float32) / 255), scale=factor
    )
    assert result.pixels.shape[:2] == (round(21 * factor), round(30 * factor))
    assert report.model_passes == passes


def test_max_input_size_downsizes_first_and_says_so(tiny, photo, monkeypatch):
    image = Image(photo[:100, :60].astype(np.float32) / 255)
    result, report = tiny.upscale_image(image, max_input_size=50)
    assert result.pixels.shape[:2] == (100, 60)  # the input was 50 x 30, then x2
    assert "downsized to 30x50" in report.notes[0]
    monkeypatch.setenv("UPRES_MAX_INPUT_SIZE", "25")
    result, _ = tiny.upscale_image(image)
    assert result.pixels.shape[:2] == (50, 30)


def test_sharpen_adds_contrast_and_zero_changes_nothing(tiny, photo):
    image = Image(photo[:32, :32].astype(np.float32) / 255)
    plain, _ = tiny.upscale_image(image)
    same, _ = tiny.upscale_image(image, sharpen=0.0)
    sharp, _ = tiny.upscale_image(image, sharpen=1.0)
    assert np.array_equal(plain.pixels, same.pixels)
    assert sharp.pixels.astype(float).std() > plain.pixels.astype(float).std()
    with pytest.raises(ValueError):
        tiny.upscale_image(image, sharpen=1.5)


def test_upscale_file_round_trip_keeps_16_bits(tiny, tmp_path, photo):
    source = tmp_path / "deep.png"
    deep = photo[:24, :24].astype(np.float32) / 255 + 1 / 65535
    write_image(Image(deep, bit_depth=16), source)
    result = tiny.upscale_file(source, tmp_path / "out" / "deep_x2.png")
    assert result.status == "done"
    written = read_image(result.destination)
    assert written.bit_depth == 16 and written.pixels.shape == (48, 48, 3)


def test_upscale_file_never_overwrites_without_being_asked(tiny, tmp_path, photo):
    source = tmp_path / "in.png"
    PILImage.fromarray(photo[:16, :16]).save(source)
    original = source.read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        tiny.upscale_file(source, source)
    with pytest.raises(OutputExistsError, match="the input itself"):
        tiny.upscale_file(source, source, overwrite=True)
    assert source.read_bytes() == original
    destination = tmp_path / "out.png"
    destination.write_bytes(b"keep me")
    assert tiny.upscale_file(source, destination, skip_existing=True).status == "skipped"
    assert destination.read_bytes() == b"keep me"
    tiny.upscale_file(source, destination, overwrite=True)
    assert PILImage.open(destination).size == (32, 32)


def test_bad_objects_are_refused(tiny):
    with pytest.raises(BadInputError):
        tiny("not an image")
    with pytest.raises(BadInputError):
        tiny(np.zeros((0, 5, 3), np.uint8))


def test_transparent_edges_get_no_dark_fringe(photo, tmp_path):
    """A real photo cut out with a soft round mask; the transparent part stores black."""
    crop = photo[200:248, 150:198].astype(np.float32) / 255
    yy, xx = np.mgrid[:48, :48]
    alpha = np.clip(18 - np.hypot(yy - 23.5, xx - 23.5), 0, 1).astype(np.float32)
    rgba = np.dstack([crop * (alpha[..., None] > 0), alpha])
    source = tmp_path / "cutout.png"
    PILImage.fromarray(np.rint(rgba * 255).astype(np.uint8), "RGBA").save(source)

    upscaler = upres.load(device="cpu")  # the real default model
    upscaler.upscale_file(source, tmp_path / "cutout_x4.png")
    out = read_image(tmp_path / "cutout_x4.png")
    assert out.alpha is not None and out.pixels.shape == (192, 192, 3)
    # Reference: the same photo, fully opaque, through the same model.
    reference = upscaler(np.rint(crop * 255).astype(np.uint8)).astype(np.float32) / 255
    # Pixels at the soft edge must keep the photo's brightness: black bleeding in from the
    # transparent area would make some of them far darker (measured without the fill:
    # 1st percentile 0.15 of the reference; with it: 0.74).
    edge = (out.alpha > 0.02) & (out.alpha < 0.9)
    assert edge.sum() > 200
    ratio = out.pixels[edge].mean(axis=-1) / np.maximum(reference[edge].mean(axis=-1), 1e-3)
    assert np.quantile(ratio, 0.01) > 0.5, np.quantile(ratio, [0.01, 0.05, 0.5])
