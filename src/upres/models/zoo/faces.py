"""Face restorers for aligned 512x512 faces (`--face-enhance`), run through spandrel.

GFPGAN v1.3/v1.4 and RestoreFormer are the official release files of TencentARC's GFPGAN
repository; CodeFormer is the authors' release. CodeFormer's weights are under the S-Lab
License 1.0, which allows non-commercial use only: it is listed with that licence, needs
the opt-in `spandrel_extra_arches` package, and is never a default.

RestoreFormer++ is not here: spandrel 0.4.2 cannot load it (its loader covers the
original RestoreFormer only).
"""

from __future__ import annotations

from upres.models.catalog import ModelCard, register
from upres.models.sources import UrlSource

GFPGAN_RELEASES = "https://github.com/TencentARC/GFPGAN/releases/download/"
CODEFORMER_RELEASES = "https://github.com/sczhou/CodeFormer/releases/download/"
DEFAULT_FACE_MODEL = "gfpgan-v1.4"
FFHQ = "FFHQ faces (70,000, aligned 512x512) with synthetic blur, noise, downscaling, JPEG"
ALIGNED = "an aligned 512x512 face crop (upres aligns and pastes back)"


def card(name: str, url: str, filename: str, **fields) -> ModelCard:
    return ModelCard(
        name=name,
        task="face",
        scale=1,
        source=UrlSource(url + filename, filename),
        training_data=FFHQ,
        expected_input=ALIGNED,
        memory_mb_per_mp=None,
        **fields,
    )


register(
    card(
        "gfpgan-v1.4",
        GFPGAN_RELEASES + "v1.3.0/",
        "GFPGANv1.4.pth",
        arch="GFPGANv1Clean (StyleGAN2 prior)",
        license="Apache-2.0",
        summary="GFPGAN v1.4: face restoration, more detail than v1.3 (the face default).",
        sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        family="GFPGAN",
        paper="Wang et al., Towards Real-World Blind Face Restoration with Generative Facial"
        " Prior, CVPR 2021",
    ),
    card(
        "gfpgan-v1.3",
        GFPGAN_RELEASES + "v1.3.0/",
        "GFPGANv1.3.pth",
        arch="GFPGANv1Clean (StyleGAN2 prior)",
        license="Apache-2.0",
        summary="GFPGAN v1.3: face restoration, more natural, a little softer.",
        sha256="c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70",
        family="GFPGAN",
        paper="Wang et al., Towards Real-World Blind Face Restoration with Generative Facial"
        " Prior, CVPR 2021",
    ),
    card(
        "restoreformer",
        GFPGAN_RELEASES + "v1.3.4/",
        "RestoreFormer.pth",
        arch="RestoreFormer (VQ dictionary, cross attention)",
        license="Apache-2.0",
        summary="RestoreFormer: face restoration from a learnt high-quality dictionary.",
        sha256="07404d446d62ca3d5ed38b1de09a947a1e77d46dbccec961a74d713a8f24ace0",
        family="RestoreFormer",
        paper="Wang et al., RestoreFormer: High-Quality Blind Face Restoration from Undegraded"
        " Key-Value Pairs, CVPR 2022",
    ),
    card(
        "codeformer",
        CODEFORMER_RELEASES + "v0.1.0/",
        "codeformer.pth",
        arch="CodeFormer (VQGAN codebook + transformer)",
        license="S-Lab License 1.0: NON-COMMERCIAL use only",
        summary="CodeFormer: face restoration; non-commercial licence, never a default.",
        sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        family="CodeFormer",
        paper="Zhou et al., Towards Robust Blind Face Restoration with Codebook Lookup"
        " Transformer, NeurIPS 2022",
        extra_arches=True,
        notes="Needs the opt-in architectures package: pip install 'upres[codeformer]'"
        " (spandrel_extra_arches). Its S-Lab License 1.0 forbids commercial use.",
    ),
)
