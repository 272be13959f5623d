"""`bicubic`: plain bicubic x4 upsampling as a catalogued model, no learned weights.

It exists so that a batch's own cost shows (benchmarks/scale_100k.py): the network is
one `torch.nn.functional.interpolate` call, so almost all the time a run takes is the
framework's (listing, decoding, planning, encoding, writing, the manifest). It runs
through the same loader and engine as every other model: its "checkpoint" is a one-tensor
safetensors file made on first use, recognised by a spandrel architecture registered here.
`upres eval -m bicubic` keeps its MATLAB-imresize baseline (metrics.runners), which is what
published tables compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from spandrel import MAIN_REGISTRY, Architecture, ArchSupport, ImageModelDescriptor, StateDict
from torch import nn

from upres.models.cache import models_dir, store, verified
from upres.models.catalog import ModelCard, register

MARKER = "upres_bicubic_scale"  # the one tensor of the file (and the module): the factor


class Bicubic(nn.Module):
    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        # A buffer, so the state dict round-trips and the engine sees the device to use.
        self.register_buffer(MARKER, torch.tensor([scale]))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        upscaled = nn.functional.interpolate(
            image, scale_factor=self.scale, mode="bicubic", align_corners=False
        )
        return upscaled.clamp(0.0, 1.0)  # bicubic overshoots at edges


class BicubicArch(Architecture[Bicubic]):
    def __init__(self) -> None:
        super().__init__(id="UpresBicubic", name="Bicubic", detect=lambda sd: MARKER in sd)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[Bicubic]:
        scale = int(state_dict[MARKER].reshape(-1)[0])
        return ImageModelDescriptor(
            Bicubic(scale),
            state_dict,
            architecture=self,
            purpose="SR",
            tags=[f"{scale}x"],
            supports_half=True,
            supports_bfloat16=True,
            scale=scale,
            input_channels=3,
            output_channels=3,
        )


MAIN_REGISTRY.add(ArchSupport.from_architecture(BicubicArch()), ignore_duplicates=True)


@dataclass(frozen=True)
class GeneratedSource:
    """Weights made here on first use (no download, no package): a file holding the scale."""

    scale: int

    def describe(self) -> str:
        return "built in (generated on first use; no download)"

    def target(self, card: ModelCard) -> Path:
        return models_dir() / f"{card.name}.safetensors"

    def is_local(self, card: ModelCard) -> bool:
        return self.target(card).is_file()

    def can_fetch(self, card: ModelCard) -> bool:
        return True

    def fetch(self, card: ModelCard) -> Path:
        target = self.target(card)
        if verified(target, card.sha256):
            return target
        tensors = {MARKER: torch.tensor([self.scale])}
        return store(target, lambda path: save_file(tensors, str(path)), card.sha256, card.name)


register(
    ModelCard(
        name="bicubic",
        arch="bicubic interpolation (torch), no weights",
        task="baseline",  # so the service never falls back to it as a "faithful" model
        scale=4,
        license="n/a (no weights)",
        source=GeneratedSource(4),
        summary="Plain bicubic x4: a baseline, and the cheap model that shows batch overhead.",
        family="Bicubic",
        expected_input="any image; RGB in [0, 1]",
        notes="Not a learned model: for measuring the framework and as a visual baseline.",
        params=0,
        memory_mb_per_mp=100,
    ),
)
