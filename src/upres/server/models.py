"""Which built-in model a request gets: an explicit name, or the role its options ask for.

"Detail reconstruction" on picks the real-world restoration model (it cleans compression
artefacts and invents plausible texture); off picks the faithful model (PSNR-oriented:
no invented detail). Only catalogue names are served: a request can never make the
server load a file of its choosing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from upres.errors import ModelNotFoundError
from upres.models.catalog import CATALOG, ModelCard, closest_names, get_card
from upres.server.config import ServeConfig
from upres.server.limits import ServiceError

# Classical (bicubic-degradation) SR models: the faithful kind.
FAITHFUL_TASKS = ("sr",)
_SCALE_SUFFIX = re.compile(r"-x(\d+)$")


@dataclass(frozen=True)
class Choice:
    card: ModelCard
    notes: list[str] = field(default_factory=list)


def available(card: ModelCard) -> bool:
    """Here already, or obtainable without the network (e.g. from an installed package)."""
    try:
        return card.source.is_local(card) or card.source.can_fetch(card)
    except Exception:  # a broken source must not break the model list
        return False


def role_of(card: ModelCard) -> str:
    if card.task in FAITHFUL_TASKS:
        return "faithful"
    return "restoration" if card.task == "real-sr" else "other"


def explicit(name: str) -> Choice:
    try:
        card = get_card(name)
    except ModelNotFoundError:
        raise ServiceError(
            404,
            "unknown_model",
            f"unknown model {name!r}" + did_you_mean(name),
            extra={"available": sorted(c.name for c in CATALOG.values() if available(c))},
        ) from None
    if not available(card):
        raise ServiceError(
            422,
            "model_unavailable",
            f"model {card.name!r} is in the catalogue but its weights are not on this server",
        )
    return Choice(card)


def did_you_mean(name: str) -> str:
    nearest = closest_names(name)
    return f"; did you mean {', '.join(nearest)}?" if nearest else ""


def for_scale(card: ModelCard, scale: float | None) -> ModelCard:
    """The same family's model with the requested integer scale, when there is one."""
    match = _SCALE_SUFFIX.search(card.name)
    if scale is None or not match or scale != int(scale) or int(scale) == card.scale:
        return card
    sibling = CATALOG.get(_SCALE_SUFFIX.sub(f"-x{int(scale)}", card.name))
    return sibling if sibling is not None and available(sibling) else card


def restoration(config: ServeConfig) -> ModelCard:
    card = CATALOG.get(config.restoration_model.lower())
    if card is not None and available(card):
        return card
    fallback = next((c for c in CATALOG.values() if c.task == "real-sr" and available(c)), None)
    if fallback is None:
        raise ServiceError(422, "model_unavailable", "no restoration model is available here")
    return fallback


def faithful(config: ServeConfig, scale: float | None = None) -> Choice:
    """The configured faithful model, else any classical SR model, else restoration."""
    card = CATALOG.get(config.faithful_model.lower())
    if card is not None and available(card):
        return Choice(for_scale(card, scale))
    candidates = [c for c in CATALOG.values() if c.task in FAITHFUL_TASKS and available(c)]
    # Prefer the scale asked for, then the largest (one pass covers more).
    candidates.sort(key=lambda c: (c.scale != scale, -c.scale, c.name))
    if candidates:
        return Choice(candidates[0])
    used = restoration(config)
    note = (
        f"no faithful model is available here ({config.faithful_model} is not);"
        f" used {used.name}, which reconstructs detail"
    )
    return Choice(used, [note])


def choose(name: str | None, detail: bool, scale: float | None, config: ServeConfig) -> Choice:
    if name:
        return explicit(name)
    if detail:
        return Choice(for_scale(restoration(config), scale))
    return faithful(config, scale)


def catalogue(config: ServeConfig) -> dict:
    """The body of GET /v1/models."""
    models = [
        {
            "name": card.name,
            "task": card.task,
            "role": role_of(card),
            "scale": card.scale,
            "arch": card.arch,
            "license": card.license,
            "summary": card.summary,
            "available": available(card),
        }
        for card in CATALOG.values()
    ]
    try:
        on = choose(None, True, None, config).card.name
        off_choice = choose(None, False, None, config)
        off, off_notes = off_choice.card.name, off_choice.notes
    except ServiceError:
        on = off = None
        off_notes = ["no model is available"]
    return {"models": models, "defaults": {"detail_on": on, "detail_off": off}, "notes": off_notes}
