"""Real-ESRGAN (Wang et al., ICCVW 2021, BSD-3-Clause): the official `.pth` release assets.

The names end in `-pth` where an offline ncnn conversion of the same weights already has
the plain name (`realesrgan-x4plus`, see realesrgan_ncnn.py): those need no network, these
are the original files. Like Real-ESRGAN's own loader, the RRDBNet files are read from
`params_ema`; the Compact (SRVGGNet) files hold `params`.

realesr-general-v3-x4 has a denoise strength: as the official inference script does, its
weights are interpolated with the weak-denoise set (`wdn`), strength*general +
(1-strength)*wdn; 1 is the general weights alone, 0 the weak-denoise ones, default 0.5.
"""

from __future__ import annotations

from upres.models.catalog import ModelCard, register
from upres.models.sources import UrlSource

RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download/"
PAPER = (
    "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic Data"
    " (Wang et al., ICCVW 2021)"
)
LICENSE = "BSD-3-Clause"
DEGRADED = "DF2K + OST with Real-ESRGAN's second-order synthetic degradations"
PHOTOS = "real-world photos: blur, noise, JPEG artefacts"


def card(name: str, release: str, filename: str, **fields) -> ModelCard:
    return ModelCard(
        name=name,
        task="real-sr",
        license=LICENSE,
        source=UrlSource(f"{RELEASES}{release}/{filename}", filename),
        family="Real-ESRGAN",
        paper=PAPER,
        # The official script runs these in fp16 on a GPU.
        preferred_precision="fp16",
        **fields,
    )


register(
    card(
        "realesrgan-x4plus-pth",
        "v0.1.0",
        "RealESRGAN_x4plus.pth",
        arch="RRDBNet (ESRGAN), 23 blocks",
        scale=4,
        summary="Real-ESRGAN x4plus, the original release file: general photos.",
        sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
        training_data=DEGRADED,
        expected_input=PHOTOS,
        params=16_697_987,
        weights_key="params_ema",
        memory_mb_per_mp=14000,
        notes="Same weights as the offline realesrgan-x4plus (ncnn conversion).",
    ),
    card(
        "realesrgan-x2plus-pth",
        "v0.2.1",
        "RealESRGAN_x2plus.pth",
        arch="RRDBNet (ESRGAN), 23 blocks, pixel-unshuffle x2 input",
        scale=2,
        summary="Real-ESRGAN x2plus: general photos at x2.",
        sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        training_data=DEGRADED,
        expected_input=PHOTOS,
        params=16_703_171,
        weights_key="params_ema",
        memory_mb_per_mp=4000,
        notes="Works at half resolution inside (pixel unshuffle), so it is about as fast as"
        " x4plus on a quarter of the pixels.",
    ),
    card(
        "realesrgan-x4plus-anime-pth",
        "v0.2.2.4",
        "RealESRGAN_x4plus_anime_6B.pth",
        arch="RRDBNet (ESRGAN), 6 blocks",
        scale=4,
        summary="Real-ESRGAN x4plus anime (6 blocks), the original release file.",
        sha256="f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
        training_data="anime images with Real-ESRGAN's synthetic degradations",
        expected_input="anime and illustrations",
        params=4_467_779,
        weights_key="params_ema",
        memory_mb_per_mp=14000,
        notes="Same weights as the offline realesrgan-x4plus-anime (ncnn conversion).",
    ),
    card(
        "realesr-general-v3-x4",
        "v0.2.5.0",
        "realesr-general-x4v3.pth",
        arch="SRVGGNetCompact, 32 convs, 64 features",
        scale=4,
        summary="Real-ESRGAN general v3: small and fast; --denoise-strength 0..1.",
        sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
        training_data=DEGRADED,
        expected_input=PHOTOS,
        params=1_213_296,
        weights_key="params",
        memory_mb_per_mp=1500,
        blend_with="realesr-general-wdn-v3-x4",
        default_denoise_strength=0.5,
        notes="Denoise strength blends with realesr-general-wdn-v3-x4 (fetched too unless 1).",
    ),
    card(
        "realesr-general-wdn-v3-x4",
        "v0.2.5.0",
        "realesr-general-wdn-x4v3.pth",
        arch="SRVGGNetCompact, 32 convs, 64 features",
        scale=4,
        summary="Real-ESRGAN general v3, weak denoise: keeps fine texture and grain.",
        sha256="1641f8c4464b9f097c9fdda5589273713f67cf59f3d909e0bd688f0cee269dca",
        training_data=DEGRADED + ", weak noise",
        expected_input="photos with little noise",
        params=1_213_296,
        weights_key="params",
        memory_mb_per_mp=1500,
    ),
)
