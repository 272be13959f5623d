"""Models with global operations run as one tile when memory allows, else with a larger overlap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from spandrel import ImageModelDescriptor
from spandrel.architectures.DAT import DAT
from spandrel.architectures.RealCUGAN import UpCunet2x

from conftest import descriptor_of, tiny_compact, tiny_swinir
from upres.api import Upscaler
from upres.engine import plan as plan_module
from upres.engine.plan import DEFAULT_OVERLAP, global_operation, make_plan
from upres.io.image import image_from_array
from upres.models.loader import LoadedModel

CPU = torch.device("cpu")


def tiny_dat() -> ImageModelDescriptor:
    torch.manual_seed(0)
    network = DAT(
        img_size=16,
        embed_dim=32,
        split_size=[4, 8],
        depth=[2],
        num_heads=[2],
        expansion_factor=2.0,
        upscale=2,
    )
    return descriptor_of(network)


@pytest.fixture
def small_auto_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module, "CPU_TILE_BYTES", 1)  # automatic tiles of 32 px


@pytest.fixture
def no_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module, "free_memory_bytes", lambda device: 1)


def test_global_operations_are_found_in_the_network() -> None:
    assert global_operation(tiny_dat()) == "channel attention over the whole input"
    cugan = descriptor_of(UpCunet2x(in_channels=3, out_channels=3))
    assert "squeeze-excitation" in (global_operation(cugan) or "")
    assert global_operation(descriptor_of(tiny_compact())) is None
    assert global_operation(descriptor_of(tiny_swinir())) is None


def test_global_model_is_one_tile_when_the_image_fits(small_auto_tile: None) -> None:
    dat = tiny_dat()
    plan = make_plan(dat, CPU, image_width=100, image_height=70)
    assert plan.whole_image and plan.tile >= 100 and plan.overlap == DEFAULT_OVERLAP
    assert plan.why.startswith("one tile: channel attention")
    # A model without global operations keeps the automatic tile ...
    compact = make_plan(descriptor_of(tiny_compact()), CPU, image_width=100, image_height=70)
    assert not compact.whole_image and compact.tile == 32 and compact.global_operation is None
    # ... unless the whole image is asked for (evaluation).
    asked = make_plan(
        descriptor_of(tiny_compact()), CPU, image_width=100, image_height=70, prefer_whole=True
    )
    assert asked.whole_image and asked.why.startswith("one tile: whole image asked for")
    # An explicit tile is obeyed, and the reason says what it costs.
    explicit = make_plan(dat, CPU, tile=32, image_width=100, image_height=70)
    assert not explicit.whole_image and explicit.tile == 32
    assert "differs slightly from the whole-image one" in explicit.why


def test_global_model_gets_a_larger_overlap_when_the_image_does_not_fit(
    no_free_memory: None,
) -> None:
    plan = make_plan(tiny_dat(), CPU, image_width=100, image_height=70)
    assert not plan.whole_image and plan.tile == 32
    assert plan.overlap == plan_module.GLOBAL_OVERLAP_FACTOR * DEFAULT_OVERLAP
    assert "does not fit in memory" in plan.why
    summary = plan.summary()
    assert summary["overlap"] == plan.overlap and summary["whole_image"] is False


def upscaler_for(descriptor: ImageModelDescriptor, **options: object) -> Upscaler:
    model = LoadedModel(descriptor, "tiny-dat-x2", None, Path("tiny-dat-x2.pth"))
    return Upscaler(model, device="cpu", precision="fp32", **options)  # type: ignore[arg-type]


def test_report_says_what_happened_and_one_tile_equals_the_whole_image(
    small_auto_tile: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pixels = np.random.default_rng(0).random((72, 96, 3)).astype(np.float32)
    image, _ = image_from_array(pixels)
    planned, report = upscaler_for(tiny_dat()).upscale_image(image, out_dtype=np.float32)
    assert report.tiling[0]["whole_image"] and report.tiles == 1
    assert any(note.startswith("one tile: channel attention") for note in report.notes)
    forced, _ = upscaler_for(tiny_dat(), tile=4096).upscale_image(image, out_dtype=np.float32)
    np.testing.assert_array_equal(planned.pixels, forced.pixels)
    small_tiles = upscaler_for(tiny_dat(), tile=32, tile_overlap=4)
    tiled, _ = small_tiles.upscale_image(image, out_dtype=np.float32)
    assert np.abs(tiled.pixels - forced.pixels).max() > 1e-4  # why it matters

    monkeypatch.setattr(plan_module, "free_memory_bytes", lambda device: 1)
    _, squeezed = upscaler_for(tiny_dat()).upscale_image(image, out_dtype=np.float32)
    assert squeezed.tiling[0]["overlap"] == 2 * DEFAULT_OVERLAP and squeezed.tiles > 1
    assert any("does not fit in memory" in note for note in squeezed.notes)
