"""Built-in models answer to the names people already type: their projects' own names and
the official file names, in any case, with or without the file ending; a typo gets the
three nearest names, not the whole catalogue."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from upres.cli.main import app
from upres.errors import ModelNotFoundError
from upres.models.catalog import (
    CATALOG,
    ModelCard,
    find_card,
    get_card,
    name_index,
    names_of,
    release_names,
)
from upres.models.loader import names_a_file
from upres.models.sources import UrlSource

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lighthouse.png"


@pytest.mark.parametrize(
    ("typed", "card"),
    [
        ("RealESRGAN_x4plus", "realesrgan-x4plus"),  # the offline model, not the -pth download
        ("RealESRGAN_x4plus.pth", "realesrgan-x4plus"),
        ("realesrgan_x4plus_anime_6b", "realesrgan-x4plus-anime"),
        ("RealESRGAN_x4plus_anime_6B.pth", "realesrgan-x4plus-anime"),
        ("realesr-animevideov3", "realesr-animevideov3-x4"),
        ("RealESRGAN_x2plus", "realesrgan-x2plus-pth"),
        ("realesr-general-x4v3.pth", "realesr-general-v3-x4"),
        ("Swin2SR_ClassicalSR_X4_64", "swin2sr-classical-x4"),
        ("swin2SR-classical-sr-x4-64", "swin2sr-classical-x4"),
        ("Swin2SR_CompressedSR_X4_48.pth", "swin2sr-compressed-x4"),
        ("001_classicalSR_DF2K_s64w8_SwinIR-M_x4", "swinir-classical-x4"),
        ("001_classicalSR_DIV2K_s48w8_SwinIR-M_x2.pth", "swinir-classical-div2k-x2"),
        ("005_colorDN_DFWB_s128w8_SwinIR-M_noise50", "swinir-denoise-colour-sigma50-x1"),
        ("006_colorCAR_DFWB_s126w7_SwinIR-M_jpeg10.pth", "swinir-jpeg-colour-q10-x1"),
        ("HAT_SRx4", "hat-x4"),
        ("hat-l_srx2_imagenet-pretrain.pth", "hat-l-x2"),
        ("Real_HAT_GAN_SRx4_sharper", "hat-realgan-sharper-x4"),
        ("DAT_light_x3.pth", "dat-light-x3"),
        ("up2x-latest-no-denoise.pth", "realcugan-se-x2"),
        ("up4x-latest-conservative", "realcugan-se-x4-conservative"),
        ("pro-denoise3x-up3x.pth", "realcugan-pro-x3-denoise3x"),
        ("REALESRGAN_X4PLUS_UP4X", "realesrgan-x4plus"),
        ("DF2K", "realsr-df2k-x4"),
        ("SWINIR-CLASSICAL-X4", "swinir-classical-x4"),
    ],
)
def test_official_and_project_names_find_the_model(typed, card):
    assert find_card(typed).name == card
    assert get_card(typed).name == card


def test_every_card_answers_to_its_release_file_name_with_and_without_ending():
    for card in CATALOG.values():
        for name in release_names(card):
            found = find_card(name)
            # Only where an offline card claims the same official name does another win,
            # and then it holds the same weights (Real-ESRGAN's ncnn conversions).
            assert found is card or name in found.aliases, (card.name, name)
            assert find_card(name + ".pth") is found
            assert find_card(name.upper()) is found
    assert len(name_index()) > 2 * len(CATALOG)  # every card has at least one more name


def test_an_alias_that_names_two_models_is_refused_when_the_index_is_built(monkeypatch):
    import upres.models.catalog as catalog

    first = CATALOG["hat-x4"]
    clash = ModelCard(**{**vars(first), "name": "hat-clash-x4", "aliases": ("HAT-S_SRx2",)})
    other = ModelCard(**{**vars(first), "name": "hat-other-x4", "aliases": ("HAT-S_SRx2",)})
    monkeypatch.setitem(CATALOG, clash.name, clash)
    monkeypatch.setitem(CATALOG, other.name, other)
    with pytest.raises(ValueError, match="names both"):
        catalog.name_index()


def test_a_card_added_later_is_found_by_its_names(monkeypatch):
    first = CATALOG["hat-x4"]
    source = UrlSource(None, "HAT_late_SRx4.pth")
    late = dataclasses.replace(first, name="hat-late-x4", aliases=("HAT_late",), source=source)
    assert find_card("HAT_late") is None
    monkeypatch.setitem(CATALOG, late.name, late)
    assert find_card("hat_late.pth") is late and find_card("HAT-LATE-X4") is late
    assert find_card("hat_late_srx4") is late


def test_names_of_lists_the_card_name_first():
    names = names_of(CATALOG["realesrgan-x4plus"])
    assert names[0] == "realesrgan-x4plus"
    assert "RealESRGAN_x4plus" in names and "REALESRGAN_X4PLUS_UP4X" in names


@pytest.mark.parametrize(
    ("typed", "nearest"),
    [
        ("RealESRGAN_x4plu", "realesrgan-x4plus"),
        ("swinir-classic-x4", "swinir-classical-x4"),
        ("hat4", "hat-x4"),
        ("Swin2SR_ClassicalSR_X2", "swin2sr-classical-x2"),
        ("realcugan-se-2x", "realcugan-se-x2"),
    ],
)
def test_a_typo_gets_the_three_nearest_names_and_not_the_whole_list(typed, nearest):
    with pytest.raises(ModelNotFoundError) as caught:
        get_card(typed)
    message = str(caught.value)
    assert f"unknown model {typed!r}" in message
    suggested = message.split("did you mean ")[1].split("?")[0].split(", ")
    assert len(suggested) == 3 and nearest in suggested
    assert all(name in CATALOG for name in suggested)
    others = [name for name in CATALOG if name not in suggested and name in message]
    assert not others


def test_a_name_far_from_everything_gets_no_guess():
    with pytest.raises(ModelNotFoundError) as caught:
        get_card("qqqqqqqq")
    assert "did you mean" not in str(caught.value)
    assert "upres models" in str(caught.value)


def test_a_checkpoint_path_stays_a_path(tmp_path):
    assert names_a_file(Path("RealESRGAN_x4plus.pth")) is False  # the built-in model
    assert names_a_file(Path("weights/RealESRGAN_x4plus.pth")) is True  # a missing file
    assert names_a_file(Path("my-own-model.pth")) is True
    local = tmp_path / "RealESRGAN_x4plus.pth"
    local.write_bytes(b"x")
    assert names_a_file(local) is True  # a file that is there is always the file


def test_cli_upscales_with_real_esrgans_own_name(tmp_path):
    crop = tmp_path / "crop.png"
    PILImage.open(EXAMPLE).crop((20, 20, 44, 44)).save(crop)
    result = runner.invoke(
        app, ["upscale", str(crop), "-m", "RealESRGAN_x4plus.pth", "-o", str(tmp_path / "o.png")]
    )
    assert result.exit_code == 0, result.stderr
    assert "model realesrgan-x4plus " in result.stderr
    assert PILImage.open(tmp_path / "o.png").size == (96, 96)


def test_cli_unknown_model_is_one_line_with_suggestions(tmp_path):
    crop = tmp_path / "crop.png"
    PILImage.open(EXAMPLE).crop((0, 0, 16, 16)).save(crop)
    result = runner.invoke(app, ["upscale", str(crop), "-m", "RealESRGAN_x4pluss"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "did you mean realesrgan-x4plus" in lines[0]
    assert "swinir-jpeg" not in lines[0]
    info = runner.invoke(app, ["models", "info", "HAT_SRx4", "--json"])
    assert info.exit_code == 0 and '"name": "hat-x4"' in info.stdout


def test_the_service_suggests_names_and_takes_official_ones(tmp_path):
    from upres.server.config import ServeConfig
    from upres.server.limits import ServiceError
    from upres.server.models import explicit, served_target

    config = ServeConfig(data_dir=tmp_path)
    with pytest.raises(ServiceError) as caught:
        explicit("RealESRGAN_x4pls", config)
    assert caught.value.status == 404
    assert "did you mean realesrgan-x4plus" in caught.value.detail
    choice = explicit("RealESRGAN_x4plus.pth", config)
    assert choice.name == "realesrgan-x4plus"
    assert served_target(choice.name, config) == "realesrgan-x4plus"
