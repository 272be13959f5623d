"""Named models: what a model is (its card), separate from a loaded model.

The catalogue is data. Each family's cards live in `upres.models.zoo.<family>` and are
registered here; adding a model means adding a `ModelCard`, not a code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from upres.errors import ModelNotFoundError
from upres.models.sources import Source

Task = Literal["sr", "real-sr", "denoise", "jpeg", "compressed-sr"]

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
