"""The spandrel architecture behind the `bicubic` card (models/zoo/bicubic.py): a network
that is one bicubic interpolation. Kept apart from the card so that listing the catalogue
imports no torch; the loader imports this module, which registers it with spandrel."""

from __future__ import annotations

import torch
from spandrel import MAIN_REGISTRY, Architecture, ArchSupport, ImageModelDescriptor, StateDict
from torch import nn

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
