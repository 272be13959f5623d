"""Shared fixtures: tiny randomly initialised real architectures, saved as real checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from spandrel import ImageModelDescriptor, ModelLoader
from spandrel.architectures.Compact import Compact
from spandrel.architectures.SwinIR import SwinIR

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("UPRES_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))


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
    from PIL import Image

    with Image.open(DATASETS / "Set5" / "HR" / "baby.png") as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converted models go to one cache per test session, never the user's own."""
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "upres-cache"))
    for knob in ("UPRES_TILE_SIZE", "UPRES_MAX_INPUT_SIZE", "UPRES_PRECISION"):
        monkeypatch.delenv(knob, raising=False)
