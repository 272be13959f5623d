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

from upres.models.cache import models_dir, store, verified
from upres.models.catalog import ModelCard, register


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
        import torch  # here, not at the top: listing the catalogue stays torch-free
        from safetensors.torch import save_file

        from upres.models.bicubic_arch import MARKER

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
