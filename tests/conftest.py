"""Shared fixtures: tiny randomly initialised real architectures, saved as real checkpoints."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from spandrel import ImageModelDescriptor, ModelLoader
from spandrel.architectures.Compact import Compact
from spandrel.architectures.SwinIR import SwinIR

from upres.settings import SEED_NAMES

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# As the README says: ../shared/datasets beside the checkout, or $UPRES_DATASETS.
DATASETS = Path(os.environ.get("UPRES_DATASETS") or PROJECT_ROOT.parent / "shared" / "datasets")


def tiny_compact(scale: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    # 6 convolutions of 3x3 (first, 4 body, last): a receptive radius of 6 input pixels.
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=scale)


def tiny_swinir(scale: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SwinIR(
        upscale=scale,
        in_chans=3,
        img_size=32,
        window_size=8,
        img_range=1.0,
        depths=[2, 2],
        embed_dim=24,
        num_heads=[2, 2],
        mlp_ratio=2,
        upsampler="pixelshuffle",
    )


def descriptor_of(network: torch.nn.Module) -> ImageModelDescriptor:
    descriptor = ModelLoader().load_from_state_dict(network.state_dict())
    assert isinstance(descriptor, ImageModelDescriptor)
    return descriptor.eval()


@pytest.fixture(scope="session")
def compact_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Compact x2 checkpoint in the official Real-ESRGAN wrapper ({'params': ...})."""
    path = tmp_path_factory.mktemp("models") / "tiny-compact-x2.pth"
    torch.save({"params": tiny_compact().state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def swinir_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-swinir-x2.pth"
    torch.save({"params": tiny_swinir().state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photograph (Set5 baby, 512x512), H x W x 3 uint8."""
    with Image.open(DATASETS / "Set5" / "HR" / "baby.png") as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converted models go to one cache per test session, never the user's own."""
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "upres-cache"))
    # Nor the user's models folder: an absent one, unless a test makes its own.
    monkeypatch.setenv("UPRES_MODELS_DIR", str(tmp_path_factory.getbasetemp() / "no-models"))
    for knob in (
        "UPRES_TILE_SIZE",
        "UPRES_MAX_INPUT_SIZE",
        "UPRES_PRECISION",
        *SEED_NAMES.values(),
    ):
        monkeypatch.delenv(knob, raising=False)


# -- the web page tests: Debian's Chromium through Playwright --------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def bird(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96x64 crop of Set5's bird (its eye and beak), written to the test's own folder."""
    with Image.open(DATASETS / "Set5" / "HR" / "bird.png") as image:
        pixels = np.asarray(image.convert("RGB"))[20:84, 136:232]
    path = tmp_path_factory.mktemp("page-input") / "bird-crop.png"
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)
    return path


@pytest.fixture(autouse=True)
def no_thread_governor_left_behind() -> Iterator[None]:
    """A CLI run in-process sets up the process's thread governor; later tests start without."""
    yield
    from upres.engine import cores

    cores._governor = None
