"""HAT (Chen et al., CVPR 2023, Apache-2.0): Hybrid Attention Transformer.

The official weights are published only in a Google Drive folder (and Baidu Netdisk),
which has no stable direct file URL, so these cards are download-by-hand: the error and
`upres models info` name the page and the exact cache path to save the file as.
Hyperparameters follow the official `options/test/*.yml`; every one loads `params_ema`.
HAT's window is 16, so tiles are cut on multiples of 16.
"""

from __future__ import annotations

from upres.models.catalog import ModelCard, Task, register
from upres.models.sources import UrlSource

PAGE = "https://drive.google.com/drive/folders/1HpmReFfoUqUbnAOQ7rvOeNU3uf_m69w0"
PAPER = "Activating More Pixels in Image Super-Resolution Transformer (Chen et al., CVPR 2023)"
LICENSE = "Apache-2.0"
DF2K = "DIV2K + Flickr2K (DF2K)"

# Parameter counts of the official networks (spandrel's HAT with these hyperparameters).
PARAMS = {
    "HAT": {2: 20_624_795, 3: 20_809_435, 4: 20_772_507},
    "HAT-L": {2: 40_698_863, 3: 40_883_503, 4: 40_846_575},
    "HAT-S": {2: 9_473_471, 3: 9_658_111, 4: 9_621_183},
}
ARCH = {
    "HAT": "HAT: 6 RHAG x 6 blocks, 180 dim, window 16, pixelshuffle",
    "HAT-L": "HAT-L: 12 RHAG x 6 blocks, 180 dim, window 16, pixelshuffle",
    "HAT-S": "HAT-S: 6 RHAG x 6 blocks, 144 dim, window 16, pixelshuffle",
}
# Rough peak fp32 working memory per input megapixel, measured per variant at x4.
MEMORY = {"HAT": 36000, "HAT-L": 35000, "HAT-S": 38000}


def card(
    name: str,
    filename: str,
    *,
    variant: str,
    task: Task,
    scale: int,
    summary: str,
    training_data: str,
    expected_input: str,
) -> ModelCard:
    return ModelCard(
        name=name,
        arch=ARCH[variant],
        task=task,
        scale=scale,
        license=LICENSE,
        source=UrlSource(None, filename, page=PAGE),
        summary=summary,
        notes="Official weights are on Google Drive only: download by hand (see source).",
        family="HAT",
        paper=PAPER,
        training_data=training_data,
        expected_input=expected_input,
        preferred_precision="bf16",
        params=PARAMS[variant][scale],
        weights_key="params_ema",
        memory_mb_per_mp=MEMORY[variant],
    )


def classical(variant: str, scale: int) -> ModelCard:
    large = variant == "HAT-L"
    prefix = {"HAT": "hat", "HAT-L": "hat-l", "HAT-S": "hat-s"}[variant]
    return card(
        f"{prefix}-x{scale}",
        f"{variant}_SRx{scale}{'_ImageNet-pretrain' if large else ''}.pth",
        variant=variant,
        task="sr",
        scale=scale,
        summary=f"{variant} classical x{scale}: bicubic-downscaled photos.",
        training_data=f"ImageNet pre-training, then {DF2K}" if large else DF2K,
        expected_input="clean images downscaled with bicubic",
    )


def realworld(sharper: bool) -> ModelCard:
    return card(
        "hat-realgan-sharper-x4" if sharper else "hat-realgan-x4",
        f"Real_HAT_GAN_SRx4{'_sharper' if sharper else ''}.pth",
        variant="HAT",
        task="real-sr",
        scale=4,
        summary="Real_HAT_GAN x4"
        + (" sharper: more perceptual detail." if sharper else ": real-world photos, fidelity."),
        training_data=f"{DF2K} + OST, Real-ESRGAN degradations"
        + (", sharpened (USM) ground truth" if sharper else ""),
        expected_input="real-world low-quality photos",
    )


register(
    *(classical(variant, scale) for variant in ("HAT", "HAT-L", "HAT-S") for scale in (2, 3, 4)),
    realworld(sharper=False),
    realworld(sharper=True),
)
