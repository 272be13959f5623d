"""SwinIR (Liang et al., ICCVW 2021, Apache-2.0): the official release assets.

Hyperparameters and the wrapper key each file is read from follow `define_model` in the
official `main_test_swinir.py`: classical, lightweight, denoising and JPEG models load
`params`, the real-world GAN models `params_ema`. The JPEG models use window 7 (so
windows never line up with JPEG's 8x8 blocks) and scale pixels to 0..255 inside the
network; spandrel sets that range from the window size. Grey denoise/JPEG models take
one channel; colour images run through them channel by channel.
"""

from __future__ import annotations

from upres.models.catalog import ModelCard, register
from upres.models.sources import UrlSource

RELEASE = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
PAPER = "SwinIR: Image Restoration Using Swin Transformer (Liang et al., ICCVW 2021)"
LICENSE = "Apache-2.0"
DF2K = "DIV2K + Flickr2K (DF2K)"
DFWB = "DIV2K + Flickr2K + BSD500 + WED"
M_ARCH = "SwinIR-M: 6 RSTB x 6 layers, 180 dim, window 8"

# sha256 of the release assets where it is published by several independent sources;
# the others are recorded on first download.
SHA256 = {
    "001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth": (
        "4e78e33f22c1aa8a773db0cf4a7381bae97c2362c717f155439ebc690cbd9215"
    ),
    "003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth": (
        "b9afb61e65e04eb7f8aba5095d070bbe9af28df76acd0c9405aeb33b814bcfc6"
    ),
    "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth": (
        "99adfa91350a84c99e946c1eb3d8fce34bc28f57d807b09dc8fe40a316328c0a"
    ),
    "005_colorDN_DFWB_s128w8_SwinIR-M_noise15.pth": (
        "917cd972f7ba80786871add249ad43e4477ce2db59b4ad63e2fa446f7221d013"
    ),
    "006_colorCAR_DFWB_s126w7_SwinIR-M_jpeg10.pth": (
        "0005b707e0e6f75b4d13c7447e2f184858ddbdcec95aa7eb8c07e8afa1d26bd9"
    ),
}

# Parameter counts of the official networks (spandrel's SwinIR with these hyperparameters).
CLASSICAL_PARAMS = {2: 11_752_487, 3: 11_937_127, 4: 11_900_199, 8: 12_047_911}
LIGHTWEIGHT_PARAMS = {2: 910_152, 3: 918_267, 4: 929_628}


def card(name: str, filename: str, **fields) -> ModelCard:
    """A SwinIR release file; `fields` are the ModelCard's own (task, scale, arch, ...)."""
    fields.setdefault("weights_key", "params")
    fields.setdefault("preferred_precision", "bf16")
    return ModelCard(
        name=name,
        license=LICENSE,
        source=UrlSource(RELEASE + filename, filename),
        sha256=SHA256.get(filename),
        family="SwinIR",
        paper=PAPER,
        **fields,
    )


def classical(scale: int, *, div2k: bool) -> ModelCard:
    setting = "DIV2K_s48w8" if div2k else "DF2K_s64w8"
    return card(
        f"swinir-classical-div2k-x{scale}" if div2k else f"swinir-classical-x{scale}",
        f"001_classicalSR_{setting}_SwinIR-M_x{scale}.pth",
        task="sr",
        scale=scale,
        arch=f"{M_ARCH}, pixelshuffle",
        params=CLASSICAL_PARAMS[scale],
        summary=f"SwinIR-M classical x{scale}: bicubic-downscaled photos, highest PSNR.",
        training_data="DIV2K (800 images), 48 px patches" if div2k else f"{DF2K}, 64 px patches",
        expected_input="clean images downscaled with bicubic; not for noisy or JPEG inputs",
        memory_mb_per_mp=7000,
        notes="" if div2k else "The DIV2K-trained setting of the paper's Table 2: *-div2k-*.",
    )


def lightweight(scale: int) -> ModelCard:
    return card(
        f"swinir-lightweight-x{scale}",
        f"002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{scale}.pth",
        task="sr",
        scale=scale,
        arch="SwinIR-S: 4 RSTB x 6 layers, 60 dim, window 8, pixelshuffledirect",
        params=LIGHTWEIGHT_PARAMS[scale],
        summary=f"SwinIR-S lightweight x{scale}: under 1M parameters, bicubic inputs.",
        training_data="DIV2K (800 images), 64 px patches",
        expected_input="clean images downscaled with bicubic",
        memory_mb_per_mp=6500,
    )


def realworld(large: bool) -> ModelCard:
    if large:
        return card(
            "swinir-realworld-large-x4",
            "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth",
            task="real-sr",
            scale=4,
            arch="SwinIR-L: 9 RSTB x 6 layers, 240 dim, window 8, nearest+conv, 3conv",
            params=28_013_059,
            summary="SwinIR-L real-world x4 (GAN): photos with unknown blur, noise and JPEG.",
            training_data=f"{DF2K} + OST + WED + FFHQ (2000) + Manga109 + SCUT-CTW1500,"
            " BSRGAN degradations",
            expected_input="real-world low-quality photos of any origin",
            memory_mb_per_mp=8200,
            weights_key="params_ema",
        )
    return card(
        "swinir-realworld-x4",
        "003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth",
        task="real-sr",
        scale=4,
        arch=f"{M_ARCH}, nearest+conv",
        params=11_715_559,
        summary="SwinIR-M real-world x4 (GAN): photos with unknown blur, noise and JPEG.",
        training_data=f"{DF2K} + OST, BSRGAN degradations",
        expected_input="real-world low-quality photos of any origin",
        memory_mb_per_mp=9400,
        weights_key="params_ema",
    )


def denoise(sigma: int, *, colour: bool) -> ModelCard:
    kind = "colour" if colour else "grey"
    prefix = "005_colorDN" if colour else "004_grayDN"
    return card(
        f"swinir-denoise-{kind}-sigma{sigma}-x1",
        f"{prefix}_DFWB_s128w8_SwinIR-M_noise{sigma}.pth",
        task="denoise",
        scale=1,
        arch=f"{M_ARCH}, no upsampler",
        params=11_504_163 if colour else 11_497_681,
        summary=f"SwinIR-M {kind} denoising, trained for Gaussian noise sigma {sigma}.",
        training_data=f"{DFWB}, additive Gaussian noise of sigma {sigma} (of 255)",
        expected_input=f"{kind} images with Gaussian-like noise around sigma {sigma}",
        memory_mb_per_mp=8700,
        input_channels=3 if colour else 1,
        notes="" if colour else "One channel: colour images are denoised channel by channel.",
    )


def jpeg(quality: int, *, colour: bool) -> ModelCard:
    kind = "colour" if colour else "grey"
    prefix = "006_colorCAR" if colour else "006_CAR"
    return card(
        f"swinir-jpeg-{kind}-q{quality}-x1",
        f"{prefix}_DFWB_s126w7_SwinIR-M_jpeg{quality}.pth",
        task="jpeg",
        scale=1,
        arch="SwinIR-M: 6 RSTB x 6 layers, 180 dim, window 7, range 0..255, no upsampler",
        params=11_492_067 if colour else 11_485_585,
        summary=f"SwinIR-M {kind} JPEG artefact removal, trained for quality {quality}.",
        training_data=f"{DFWB}, JPEG compressed at quality {quality}",
        expected_input=f"{kind} JPEGs saved at about quality {quality}",
        memory_mb_per_mp=10000,
        input_channels=3 if colour else 1,
        # Inside the network pixels span 0..255, where bf16's 8-bit mantissa is too coarse.
        preferred_precision="fp32",
        notes=(
            "Window 7, so attention windows never align with JPEG's 8x8 blocks."
            + ("" if colour else " One channel: colour images run channel by channel.")
        ),
    )


register(
    *(classical(scale, div2k=False) for scale in (2, 3, 4, 8)),
    *(classical(scale, div2k=True) for scale in (2, 3, 4, 8)),
    *(lightweight(scale) for scale in (2, 3, 4)),
    realworld(large=False),
    realworld(large=True),
    *(denoise(sigma, colour=colour) for colour in (False, True) for sigma in (15, 25, 50)),
    *(jpeg(quality, colour=colour) for colour in (False, True) for quality in (10, 20, 30, 40)),
)
