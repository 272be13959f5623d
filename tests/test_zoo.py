"""The model zoo: every family's official checkpoint layout loads by name and by file.

No network: each test builds a randomly initialised network with the official key names,
hyperparameters (depth and width reduced where full size is slow on a CPU; the slow test
uses full size) and wrapper ({"params": ...} or {"params_ema": ...}), saves it under the
official file name where the card's UrlSource looks, and runs it through the engine.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from spandrel.architectures.Compact import Compact
from spandrel.architectures.HAT import HAT
from spandrel.architectures.Swin2SR import Swin2SR
from spandrel.architectures.SwinIR import SwinIR

import upres
from upres.errors import ModelLoadError, ModelNotFoundError
from upres.models.cache import models_dir
from upres.models.catalog import CATALOG, ModelCard
from upres.models.loader import load_model
from upres.models.sources import UrlSource

RESTORATION_TASKS = {"denoise", "jpeg"}
# family-variant-xN; the Real-ESRGAN releases keep their own xNplus spelling.
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
SCALE_TOKEN = re.compile(r"^x(\d+)(plus)?$")
# Image models; the face restorers (task "face") have their own tests (test_faces.py).
URL_CARDS = [
    card for card in CATALOG.values() if isinstance(card.source, UrlSource) and card.task != "face"
]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A cache of this test's own: official file names with test weights never leak."""
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path / "cache"))
    return models_dir()


# -- official layouts, small ---------------------------------------------------------------

TINY_SWIN = {"depths": [2], "embed_dim": 12, "num_heads": [2], "mlp_ratio": 2.0}


def swinir(**official) -> torch.nn.Module:
    torch.manual_seed(0)
    return SwinIR(**(TINY_SWIN | {"resi_connection": "1conv"} | official))


def swin2sr(**official) -> torch.nn.Module:
    torch.manual_seed(0)
    return Swin2SR(**(TINY_SWIN | {"resi_connection": "1conv"} | official))


def hat(**official) -> torch.nn.Module:
    torch.manual_seed(0)
    hyper = {"img_size": 64, "window_size": 16, "compress_ratio": 3, "squeeze_factor": 30}
    hyper |= {"conv_scale": 0.01, "overlap_ratio": 0.5, "img_range": 1.0, "mlp_ratio": 2.0}
    # 60 channels: the smallest width whose squeeze (//3 //30) keeps a channel.
    hyper |= {"depths": [2], "embed_dim": 60, "num_heads": [2], "upsampler": "pixelshuffle"}
    return HAT(in_chans=3, resi_connection="1conv", **(hyper | official))


def rrdbnet_state_dict(
    scale: int, num_block: int = 1, num_feat: int = 8, empty: bool = False
) -> dict[str, torch.Tensor]:
    """BasicSR's RRDBNet keys (conv_first, body.N.rdbK.convJ, conv_up1 ...), as released.

    Scale 2 works on a pixel-unshuffled input (12 channels); growth is 32 as upstream.
    """
    grow, generator = 32, torch.Generator().manual_seed(scale)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, cin: int, cout: int) -> None:
        shape = (cout, cin, 3, 3)
        weight = torch.empty(shape) if empty else torch.randn(shape, generator=generator) * 0.02
        state[f"{name}.weight"], state[f"{name}.bias"] = weight, torch.zeros(cout)

    conv("conv_first", 3 * {4: 1, 2: 4}[scale], num_feat)
    for block in range(num_block):
        for rdb in (1, 2, 3):
            for k in range(1, 6):
                cin, cout = num_feat + (k - 1) * grow, grow if k < 5 else num_feat
                conv(f"body.{block}.rdb{rdb}.conv{k}", cin, cout)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, num_feat, num_feat)
    conv("conv_last", num_feat, 3)
    return state


def compact(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=4)


def place(name: str, state_dict: dict, wrapper: str | None) -> Path:
    """Save as the official file, where the card's source looks for it."""
    card = CATALOG[name]
    path = card.source.target(card)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({wrapper: state_dict} if wrapper else state_dict, path)
    return path


def unverified(monkeypatch, name: str) -> ModelCard:
    """The card without its official sha256, which a test file cannot match."""
    from dataclasses import replace

    card = replace(CATALOG[name], sha256=None)
    monkeypatch.setitem(CATALOG, name, card)
    return card


# One row per family and special case: (name, network or state dict, wrapper, arch id).
FAMILIES = [
    pytest.param(
        "swinir-classical-x4",
        lambda: swinir(upscale=4, img_size=64, window_size=8, upsampler="pixelshuffle"),
        "params",
        "SwinIR",
        id="swinir-classical",
    ),
    pytest.param(
        "swinir-lightweight-x2",
        lambda: swinir(upscale=2, img_size=64, window_size=8, upsampler="pixelshuffledirect"),
        "params",
        "SwinIR",
        id="swinir-lightweight",
    ),
    pytest.param(
        "swinir-realworld-x4",
        lambda: swinir(upscale=4, img_size=64, window_size=8, upsampler="nearest+conv"),
        "params_ema",
        "SwinIR",
        id="swinir-realworld",
    ),
    pytest.param(
        "swinir-denoise-grey-sigma25-x1",
        lambda: swinir(upscale=1, in_chans=1, img_size=128, window_size=8, upsampler=""),
        "params",
        "SwinIR",
        id="swinir-grey-denoise",
    ),
    pytest.param(
        "swinir-denoise-colour-sigma15-x1",
        lambda: swinir(upscale=1, in_chans=3, img_size=128, window_size=8, upsampler=""),
        "params",
        "SwinIR",
        id="swinir-colour-denoise",
    ),
    pytest.param(
        "swinir-jpeg-grey-q10-x1",
        lambda: swinir(
            upscale=1, in_chans=1, img_size=126, window_size=7, img_range=255.0, upsampler=""
        ),
        "params",
        "SwinIR",
        id="swinir-grey-jpeg-window7",
    ),
    pytest.param(
        "swin2sr-classical-x4",
        lambda: swin2sr(upscale=4, img_size=64, window_size=8, upsampler="pixelshuffle"),
        "params",
        "Swin2SR",
        id="swin2sr-classical",
    ),
    pytest.param(
        "swin2sr-compressed-x4",
        lambda: swin2sr(upscale=4, img_size=48, window_size=8, upsampler="pixelshuffle_aux"),
        "params",
        "Swin2SR",
        id="swin2sr-compressed",
    ),
    pytest.param(
        "swin2sr-realworld-x4",
        lambda: swin2sr(upscale=4, img_size=64, window_size=8, upsampler="nearest+conv"),
        "params_ema",
        "Swin2SR",
        id="swin2sr-realworld",
    ),
    pytest.param("hat-x4", lambda: hat(upscale=4), "params_ema", "HAT", id="hat"),
    pytest.param(
        "realesrgan-x4plus-pth",
        lambda: rrdbnet_state_dict(4),
        "params_ema",
        "ESRGAN",
        id="realesrgan-rrdbnet-x4",
    ),
    pytest.param(
        "realesrgan-x2plus-pth",
        lambda: rrdbnet_state_dict(2),
        "params_ema",
        "ESRGAN",
        id="realesrgan-rrdbnet-x2-unshuffle",
    ),
    pytest.param(
        "realesr-general-wdn-v3-x4", compact, "params", "Compact", id="realesrgan-compact"
    ),
]


@pytest.mark.parametrize(("name", "build", "wrapper", "arch"), FAMILIES)
def test_official_layout_loads_by_name_and_file_and_runs(
    monkeypatch, photo, name, build, wrapper, arch
):
    card = unverified(monkeypatch, name)
    network = build()
    state = network if isinstance(network, dict) else network.state_dict()
    path = place(name, state, wrapper)

    by_name = load_model(name)
    assert by_name.card is card and by_name.path == path
    descriptor = by_name.descriptor
    assert descriptor.architecture.id == arch
    assert (descriptor.scale, descriptor.input_channels) == (card.scale, card.input_channels)
    assert load_model(path).descriptor.architecture.id == arch  # and by file

    upscaler = upres.load(name, device="cpu", tile=32)
    image = photo[:20, :27]  # not a multiple of any window: padding is exercised
    result = upscaler(image)
    assert result.shape == (20 * card.scale, 27 * card.scale, 3) and result.dtype == np.uint8
    if card.task in RESTORATION_TASKS:
        assert card.scale == 1


def test_grey_models_take_one_channel_and_run_colour_images_per_channel(monkeypatch, photo):
    name = "swinir-jpeg-grey-q10-x1"
    unverified(monkeypatch, name)
    network = swinir(
        upscale=1, in_chans=1, img_size=126, window_size=7, img_range=255.0, upsampler=""
    )
    place(name, network.state_dict(), "params")
    upscaler = upres.load(name, device="cpu")
    colour = photo[:21, :14]
    result = upscaler(colour)
    # Each channel went through the grey network on its own.
    red = upscaler(np.ascontiguousarray(colour[:, :, 0]))
    assert np.array_equal(result[:, :, 0], red)


def test_the_card_picks_the_wrapper_the_official_script_loads(monkeypatch):
    """SwinIR's classical script loads `params`; spandrel alone would take `params_ema`."""
    name = "swinir-classical-x4"
    unverified(monkeypatch, name)
    plain = swinir(upscale=4, img_size=64, window_size=8, upsampler="pixelshuffle")
    torch.manual_seed(1)
    ema = SwinIR(upscale=4, img_size=64, window_size=8, upsampler="pixelshuffle", **TINY_SWIN)
    path = place(name, {}, None)
    torch.save({"params": plain.state_dict(), "params_ema": ema.state_dict()}, path)
    key = "conv_first.weight"
    by_name = load_model(name).descriptor.model.state_dict()[key]
    by_file = load_model(path).descriptor.model.state_dict()[key]
    assert torch.equal(by_name, plain.state_dict()[key])
    assert torch.equal(by_file, ema.state_dict()[key])


def test_denoise_strength_blends_the_two_weight_sets_like_dni(monkeypatch):
    general, weak = "realesr-general-v3-x4", "realesr-general-wdn-v3-x4"
    unverified(monkeypatch, general)
    unverified(monkeypatch, weak)
    strong_net, weak_net = compact(seed=1), compact(seed=2)
    place(general, strong_net.state_dict(), "params")
    key = "body.0.weight"
    # Strength 1 is the general weights alone and needs no second file.
    alone = load_model(general, denoise_strength=1.0).descriptor.model.state_dict()[key]
    assert torch.equal(alone, strong_net.state_dict()[key])
    with pytest.raises(ModelNotFoundError):
        load_model(general)  # the default (0.5) blends: the weak set must be fetched
    place(weak, weak_net.state_dict(), "params")
    blended = load_model(general, denoise_strength=0.3).descriptor.model.state_dict()[key]
    expected = 0.3 * strong_net.state_dict()[key] + 0.7 * weak_net.state_dict()[key]
    assert torch.allclose(blended, expected)
    upscaler = upres.load(general, device="cpu", denoise_strength=0.25)
    assert upscaler.scale == 4
    with pytest.raises(ValueError, match="no denoise strength"):
        load_model(weak, denoise_strength=0.5)


def test_a_hand_dropped_file_of_the_wrong_network_is_refused(monkeypatch):
    name = "swin2sr-classical-x4"
    unverified(monkeypatch, name)
    wrong = swinir(upscale=2, img_size=64, window_size=8, upsampler="pixelshuffle")
    place(name, wrong.state_dict(), "params")
    with pytest.raises(ModelLoadError, match=r"x2 model .* but swin2sr-classical-x4 is x4"):
        load_model(name)


def test_hat_without_its_file_says_where_to_get_and_put_it(cache):
    with pytest.raises(ModelNotFoundError, match=r"drive\.google\.com") as caught:
        load_model("hat-x4")
    assert str(cache / "HAT_SRx4.pth") in str(caught.value)


def test_rrdbnet_layout_has_the_official_parameter_counts():
    for name, scale in (("realesrgan-x4plus-pth", 4), ("realesrgan-x2plus-pth", 2)):
        state = rrdbnet_state_dict(scale, num_block=23, num_feat=64, empty=True)
        assert sum(t.numel() for t in state.values()) == CATALOG[name].params


# -- the catalogue as data -------------------------------------------------------------------


@pytest.mark.parametrize("card", URL_CARDS, ids=lambda card: card.name)
def test_every_zoo_card_is_complete_and_consistent(card):
    assert NAME.match(card.name), card.name
    scales = [SCALE_TOKEN.match(token) for token in card.name.split("-")]
    assert [int(m.group(1)) for m in scales if m] == [card.scale], card.name
    assert card.task in ("sr", "real-sr", "denoise", "jpeg", "compressed-sr")
    assert (card.scale == 1) == (card.task in RESTORATION_TASKS)
    assert card.params and card.license and card.paper and card.training_data
    assert card.expected_input and card.family and card.memory_mb_per_mp
    assert card.weights_key in ("params", "params_ema")
    assert card.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", card.sha256)
    source = card.source
    assert isinstance(source, UrlSource)
    if source.url is None:
        assert source.page.startswith("https://")
    else:
        assert source.url.startswith("https://github.com/") and source.url.endswith(
            "/" + source.filename
        )
    assert card.input_channels == (1 if "-grey-" in card.name else 3)
    if card.blend_with:
        assert CATALOG[card.blend_with].arch == card.arch


def test_the_required_names_exist():
    for name in ("swin2sr-classical-x4", "swinir-classical-x4", "hat-x4"):
        assert name in CATALOG
    filenames = [card.source.filename for card in URL_CARDS]
    assert len(filenames) == len(set(filenames))  # one cache file per card


# -- full size (slow): the official hyperparameters give the card's parameter count --------

FULL_M = {"depths": [6] * 6, "embed_dim": 180, "num_heads": [6] * 6, "mlp_ratio": 2.0}
FULL_SIZE = [
    ("swinir-classical-x4", "params", lambda: SwinIR(
        upscale=4, img_size=64, window_size=8, upsampler="pixelshuffle", **FULL_M)),
    ("swinir-realworld-large-x4", "params_ema", lambda: SwinIR(
        upscale=4, img_size=64, window_size=8, depths=[6] * 9, embed_dim=240,
        num_heads=[8] * 9, mlp_ratio=2.0, upsampler="nearest+conv", resi_connection="3conv")),
    ("swinir-jpeg-grey-q40-x1", "params", lambda: SwinIR(
        upscale=1, in_chans=1, img_size=126, window_size=7, img_range=255.0, upsampler="",
        **FULL_M)),
    ("swin2sr-compressed-x4", "params", lambda: Swin2SR(
        upscale=4, img_size=48, window_size=8, upsampler="pixelshuffle_aux", **FULL_M)),
    ("swin2sr-lightweight-x2", "params", lambda: Swin2SR(
        upscale=2, img_size=64, window_size=8, depths=[6] * 4, embed_dim=60,
        num_heads=[6] * 4, mlp_ratio=2.0, upsampler="pixelshuffledirect")),
    ("hat-l-x4", "params_ema", lambda: hat(
        upscale=4, depths=[6] * 12, embed_dim=180, num_heads=[6] * 12)),
    ("realesr-general-v3-x4", "params", lambda: Compact(
        num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4)),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("name", "wrapper", "build"), FULL_SIZE, ids=[f[0] for f in FULL_SIZE])
def test_full_size_official_networks_load_by_name(monkeypatch, name, wrapper, build):
    card = unverified(monkeypatch, name)
    place(name, build().state_dict(), wrapper)
    loaded = load_model(name, denoise_strength=1.0 if card.blend_with else None)
    assert sum(p.numel() for p in loaded.descriptor.model.parameters()) == card.params
    assert loaded.descriptor.scale == card.scale


def test_preferred_precision_applies_on_accelerators_only(monkeypatch):
    from types import SimpleNamespace

    from upres.api import card_precision

    model = SimpleNamespace(card=CATALOG["swinir-jpeg-colour-q10-x1"])
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert card_precision("auto", model, cuda) == "fp32"  # 0..255 inside: no bf16
    assert card_precision("auto", SimpleNamespace(card=CATALOG["hat-x4"]), cuda) == "bf16"
    assert card_precision("auto", model, cpu) == "auto"
    assert card_precision("fp16", model, cuda) == "fp16"  # an explicit request wins
    monkeypatch.setenv("UPRES_PRECISION", "fp16")
    assert card_precision("auto", model, cuda) == "auto"  # and so does the environment
