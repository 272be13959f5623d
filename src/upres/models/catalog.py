"""Named models: what a model is (its card), separate from a loaded model.

The catalogue is data. Each family's cards live in `upres.models.zoo.<family>` and are
registered here; adding a model means adding a `ModelCard`, not a code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from upres.errors import ModelNotFoundError
from upres.models.sources import Source

# "face": a face restorer for aligned 512x512 crops (upres.faces), never an image model.
# "baseline": not a learned model (bicubic); never picked automatically, only by name.
Task = Literal["sr", "real-sr", "denoise", "jpeg", "compressed-sr", "face", "baseline"]

DEFAULT_MODEL = "realesrgan-x4plus"


@dataclass(frozen=True)
class ModelCard:
    name: str  # lowercase family-variant-xN
    arch: str
    task: Task
    scale: int
    license: str
    source: Source
    summary: str
    # sha256 of the file the source produces (download or conversion); a mismatch means
    # a changed upstream file or a broken converter, and the file is refused.
    sha256: str | None = None
    notes: str = ""
    family: str = ""
    paper: str = ""
    training_data: str = ""
    expected_input: str = ""
    # Reflection padding added around the whole image before the model and cropped after,
    # for models trained to expect it (Real-ESRGAN's pre_pad, Real-CUGAN's 18 px).
    pre_pad: int = 0
    preferred_precision: str = "auto"
    # What running it takes, checked against the loaded network: a grey model (1 channel)
    # runs colour images channel by channel.
    input_channels: int = 3
    params: int | None = None  # parameter count of the network
    # Which entry of the official wrapper the official test script loads ("params" or
    # "params_ema"); None lets spandrel choose (it prefers params_ema).
    weights_key: str | None = None
    # Peak working memory per input megapixel in fp32, untiled (MiB); tiling bounds it.
    # Rough: growth of peak RSS between 112 and 224 px inputs on a CPU, per family.
    memory_mb_per_mp: int | None = None
    # A second weight set that `denoise_strength` interpolates with this one (by name).
    blend_with: str | None = None
    default_denoise_strength: float | None = None
    # Architectures spandrel keeps in its opt-in `spandrel_extra_arches` package.
    extra_arches: bool = False


CATALOG: dict[str, ModelCard] = {}


def register(*cards: ModelCard) -> None:
    for card in cards:
        if card.name in CATALOG:
            raise ValueError(f"model name {card.name!r} registered twice")
        CATALOG[card.name] = card


def get_card(name: str) -> ModelCard:
    try:
        return CATALOG[name.lower()]
    except KeyError:
        known = ", ".join(sorted(CATALOG))
        raise ModelNotFoundError(
            f"unknown model {name!r}: not a built-in name ({known}) and not a file"
        ) from None


# Importing the zoo registers every family's cards.
import upres.models.zoo  # noqa: E402, F401
