"""Which model a request gets: an explicit name, or the role its options ask for.

"Detail reconstruction" on picks the real-world restoration model (it cleans compression
artefacts and invents plausible texture); off picks the faithful model (PSNR-oriented:
no invented detail). Only catalogue names and the stems of the operator's models folder
are served: a request can never make the server load a file of its choosing.

A model that is not ready (models/state.py) is refused when the job is submitted, unless
the operator allows downloads and the model only needs one; the worker then downloads it
with the progress in the job's status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from upres.models.catalog import CATALOG, ModelCard, closest_names, find_card
from upres.models.state import ModelState, card_state, model_states, of_card, state_of
from upres.server.config import ServeConfig
from upres.server.limits import ServiceError

# Classical (bicubic-degradation) SR models: the faithful kind.
FAITHFUL_TASKS = ("sr",)
_SCALE_SUFFIX = re.compile(r"-x(\d+)$")


@dataclass(frozen=True)
class Choice:
    name: str
    scale: int
    notes: list[str] = field(default_factory=list)
    card: ModelCard | None = None  # None for a model of the models folder

    @classmethod
    def of(cls, card: ModelCard, notes: list[str] | None = None) -> Choice:
        return cls(card.name, card.scale, notes or [], card)


def usable(state: ModelState, config: ServeConfig | None = None) -> bool:
    """Ready here, or only a download away when the operator allows downloads."""
    allow = config is not None and config.allow_downloads
    return state.ready or (allow and state.state == "download")


def available(card: ModelCard, config: ServeConfig | None = None) -> bool:
    """Here already, or obtainable without the network (e.g. from an installed package)."""
    return usable(of_card(card), config)


def not_ready(state: ModelState) -> ServiceError:
    return ServiceError(
        409,
        "model_not_ready",
        f"model {state.name!r} is not ready on this server ({state.state}):"
        f" {state.reason or 'it cannot be run here'}",
        extra={"model": state.name, "state": state.state},
    )


def role_of(card: ModelCard) -> str:
    if card.task == "face":
        return "face"
    if card.task in FAITHFUL_TASKS:
        return "faithful"
    return "restoration" if card.task == "real-sr" else "other"


def explicit(name: str, config: ServeConfig) -> Choice:
    state = state_of(name, config.models_dir) if is_plain_name(name) else None
    if state is None:
        usable_names = sorted(s.name for s in model_states(config.models_dir) if usable(s, config))
        raise ServiceError(
            404,
            "unknown_model",
            f"unknown model {name!r}" + did_you_mean(name),
            extra={"available": usable_names},
        )
    if state.card is not None and state.card.task == "face":
        raise ServiceError(
            422,
            "face_model",
            f"{state.card.name!r} restores faces: send it as face={state.card.name}",
        )
    if not usable(state, config):
        raise not_ready(state)
    if state.card is not None:
        return Choice.of(state.card)
    return Choice(state.name, state.scale or 1)


FACE_OFF = ("", "off", "false", "0", "no")
FACE_ON = ("on", "true", "1", "yes")


def choose_face(value: str | None, config: ServeConfig | None = None) -> str | None:
    """The `face` field: off (None), on (the default face model), or a face model's name."""
    from upres.models.zoo.faces import DEFAULT_FACE_MODEL

    wanted = (value or "").strip().lower()
    if wanted in FACE_OFF:
        return None
    if wanted in FACE_ON:
        return DEFAULT_FACE_MODEL
    card = find_card(wanted)
    faces = sorted(c.name for c in CATALOG.values() if c.task == "face")
    if card is None or card.task != "face":
        raise ServiceError(
            422,
            "unknown_face_model",
            f"face must be on, off or a face model ({', '.join(faces)}), not {value!r}",
        )
    if not available(card, config):
        raise not_ready(of_card(card))
    return card.name


def is_plain_name(name: str) -> bool:
    """A model name, not a path: nothing with a path separator reaches the folder lookup."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def did_you_mean(name: str) -> str:
    nearest = closest_names(name)
    return f"; did you mean {', '.join(nearest)}?" if nearest else ""


def served_target(name: str, config: ServeConfig) -> str | Path:
    """What the worker loads for a job's model name: a folder model's file, else the name."""
    if find_card(name) is not None:
        return name
    state = state_of(name, config.models_dir)
    return state.user.path if state is not None and state.user is not None else name


def for_scale(card: ModelCard, scale: float | None, config: ServeConfig) -> ModelCard:
    """The same family's model with the requested integer scale, when there is one."""
    match = _SCALE_SUFFIX.search(card.name)
    if scale is None or not match or scale != int(scale) or int(scale) == card.scale:
        return card
    sibling = CATALOG.get(_SCALE_SUFFIX.sub(f"-x{int(scale)}", card.name))
    return sibling if sibling is not None and available(sibling, config) else card


def restoration(config: ServeConfig) -> ModelCard:
    card = CATALOG.get(config.restoration_model.lower())
    if card is not None and available(card, config):
        return card
    fallback = next(
        (c for c in CATALOG.values() if c.task == "real-sr" and available(c, config)), None
    )
    if fallback is None:
        raise ServiceError(422, "model_unavailable", "no restoration model is available here")
    return fallback


def faithful(config: ServeConfig, scale: float | None = None) -> Choice:
    """The configured faithful model, else any classical SR model, else restoration."""
    card = CATALOG.get(config.faithful_model.lower())
    if card is not None and available(card, config):
        return Choice.of(for_scale(card, scale, config))
    candidates = [c for c in CATALOG.values() if c.task in FAITHFUL_TASKS and available(c, config)]
    # Prefer the scale asked for, then the largest (one pass covers more).
    candidates.sort(key=lambda c: (c.scale != scale, -c.scale, c.name))
    if candidates:
        return Choice.of(candidates[0])
    used = restoration(config)
    note = (
        f"no faithful model is available here ({config.faithful_model} is not);"
        f" used {used.name}, which reconstructs detail"
    )
    return Choice.of(used, [note])


def choose(name: str | None, detail: bool, scale: float | None, config: ServeConfig) -> Choice:
    if name:
        return explicit(name, config)
    if detail:
        return Choice.of(for_scale(restoration(config), scale, config))
    return faithful(config, scale)


def needs_download(name: str, config: ServeConfig) -> ModelCard | None:
    """The card whose weights a job must download first (when the operator allows it)."""
    card = find_card(name)
    if card is None or not config.allow_downloads:
        return None
    return card if card_state(card) == "download" else None


def model_body(state: ModelState, config: ServeConfig) -> dict:
    card = state.card
    return {
        "name": state.name,
        "kind": state.kind,
        "task": state.task,
        "role": role_of(card) if card is not None else "user",
        "scale": state.scale,
        "arch": state.arch,
        "license": card.license if card is not None else "",
        "summary": state.summary,
        "state": state.state,
        "ready": state.ready,
        # Can a job use it now: ready, or a download the operator allows.
        "available": usable(state, config),
        "reason": state.reason,
    }


def catalogue(config: ServeConfig) -> dict:
    """The body of GET /v1/models: ready models first, then the others with the reason."""
    states = model_states(config.models_dir)
    states.sort(key=lambda state: not usable(state, config))  # stable: catalogue order kept
    models = [model_body(state, config) for state in states]
    try:
        on = choose(None, True, None, config).name
        off_choice = choose(None, False, None, config)
        off, off_notes = off_choice.name, off_choice.notes
    except ServiceError:
        on = off = None
        off_notes = ["no model is available"]
    return {
        "models": models,
        "defaults": {"detail_on": on, "detail_off": off},
        "notes": off_notes,
        "allow_downloads": config.allow_downloads,
    }
