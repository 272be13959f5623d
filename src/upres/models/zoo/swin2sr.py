"""Swin2SR (Conde et al., ECCV Workshops 2022, Apache-2.0): the official release assets.

SwinIR with Swin Transformer V2 blocks. Hyperparameters and wrapper keys follow
`define_model` in the official `main_test_swin2sr.py`: `params` everywhere except the
real-world model (`params_ema`). The official compressed-input network (`pixelshuffle_aux`)
returns the image and a low-resolution auxiliary output; spandrel's port returns the image
alone, and the engine keeps the first element of any tuple a network returns.
"""

from __future__ import annotations

from upres.models.catalog import ModelCard, register
from upres.models.sources import UrlSource

RELEASE = "https://github.com/mv-lab/swin2sr/releases/download/v0.0.1/"
PAPER = (
    "Swin2SR: SwinV2 Transformer for Compressed Image Super-Resolution and Restoration"
    " (Conde et al., ECCV Workshops 2022)"
)
LICENSE = "Apache-2.0"
M_ARCH = "Swin2SR-M: 6 RSTB x 6 SwinV2 layers, 180 dim, window 8"
DF2K = "DIV2K + Flickr2K (DF2K)"


def card(name: str, filename: str, **fields) -> ModelCard:
    """A Swin2SR release file; `fields` are the ModelCard's own (task, scale, arch, ...)."""
    fields.setdefault("weights_key", "params")
    return ModelCard(
        name=name,
        license=LICENSE,
        source=UrlSource(RELEASE + filename, filename),
        family="Swin2SR",
        paper=PAPER,
        # spandrel marks Swin2SR unsafe in fp16; bf16 keeps fp32's range.
        preferred_precision="bf16",
        **fields,
    )


register(
    card(
        "swin2sr-classical-x2",
        "Swin2SR_ClassicalSR_X2_64.pth",
        aliases=("swin2SR-classical-sr-x2-64",),
        task="sr",
        scale=2,
        arch=f"{M_ARCH}, pixelshuffle",
        params=12_091_571,
        summary="Swin2SR classical x2: bicubic-downscaled photos.",
        training_data=f"{DF2K}, 64 px patches",
        expected_input="clean images downscaled with bicubic",
        memory_mb_per_mp=8200,
    ),
    card(
        "swin2sr-classical-x4",
        "Swin2SR_ClassicalSR_X4_64.pth",
        aliases=("swin2SR-classical-sr-x4-64",),
        task="sr",
        scale=4,
        arch=f"{M_ARCH}, pixelshuffle",
        params=12_239_283,
        summary="Swin2SR classical x4: bicubic-downscaled photos.",
        training_data=f"{DF2K}, 64 px patches",
        expected_input="clean images downscaled with bicubic",
        memory_mb_per_mp=8200,
    ),
    card(
        "swin2sr-lightweight-x2",
        "Swin2SR_Lightweight_X2_64.pth",
        aliases=("swin2SR-lightweight-x2-64",),
        task="sr",
        scale=2,
        arch="Swin2SR-S: 4 RSTB x 6 SwinV2 layers, 60 dim, window 8, pixelshuffledirect",
        params=1_005_348,
        summary="Swin2SR lightweight x2: about 1M parameters, bicubic inputs.",
        training_data="DIV2K, 64 px patches",
        expected_input="clean images downscaled with bicubic",
        memory_mb_per_mp=5200,
    ),
    card(
        "swin2sr-compressed-x4",
        "Swin2SR_CompressedSR_X4_48.pth",
        aliases=("swin2SR-compressed-sr-x4-48",),
        task="compressed-sr",
        scale=4,
        arch=f"{M_ARCH}, pixelshuffle_aux (image + auxiliary output)",
        params=12_244_598,
        summary="Swin2SR compressed-input x4: upscales low-resolution JPEGs (AIM 2022).",
        training_data=f"{DF2K}, inputs x4 bicubic then JPEG compressed (AIM 2022 setting)",
        expected_input="small, JPEG-compressed images",
        memory_mb_per_mp=8200,
        notes="The official network also returns a low-resolution auxiliary image;"
        " upres keeps the main one.",
    ),
    card(
        "swin2sr-realworld-x4",
        "Swin2SR_RealworldSR_X4_64_BSRGAN_PSNR.pth",
        aliases=("swin2SR-realworld-sr-x4-64-bsrgan-psnr",),
        task="real-sr",
        scale=4,
        arch=f"{M_ARCH}, nearest+conv",
        params=12_054_643,
        summary="Swin2SR real-world x4 (PSNR-trained): photos with unknown degradations.",
        training_data=f"{DF2K} with BSRGAN degradations",
        expected_input="real-world low-quality photos",
        memory_mb_per_mp=8200,
        weights_key="params_ema",
    ),
)
