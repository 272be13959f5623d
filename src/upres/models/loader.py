"""From a name or a file to a spandrel model descriptor, loaded safely.

Checkpoints are read with safetensors or torch's weights-only loader, never plain pickle.
Built-in models are obtained by their card's source (see sources.py) into a per-user cache.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from spandrel import (
    ImageModelDescriptor,
    ModelLoader,
    UnsupportedModelError,
    canonicalize_state_dict,
)

from upres.errors import ModelLoadError
from upres.models.catalog import DEFAULT_MODEL, ModelCard, get_card

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: the spandrel descriptor plus where it came from."""

    descriptor: ImageModelDescriptor
    name: str
    card: ModelCard | None
    path: Path


def load_model(name_or_path: str | Path | None = None) -> LoadedModel:
    """Resolve a built-in name or a checkpoint path to a loaded model on the CPU."""
    target = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    path = Path(target).expanduser()
    if path.is_file() or path.suffix.lower() in CHECKPOINT_SUFFIXES:
        if not path.is_file():
            raise ModelLoadError(path, "no such file")
        return LoadedModel(descriptor_from_file(path), path.stem, None, path)
    card = get_card(target)
    weights = card.source.fetch(card)
    return LoadedModel(descriptor_from_file(weights), card.name, card, weights)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read tensors only: safetensors, or a pickle through torch's weights-only unpickler."""
    if path.stat().st_size == 0:
        raise ModelLoadError(path, "empty file, not a model")
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelLoadError(path, f"not a valid safetensors file ({error})") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelLoadError(path, unpickling_problem(str(error))) from None
    except Exception as error:  # garbage makes the unpickler fail in arbitrary ways
        raise ModelLoadError(path, f"not a PyTorch checkpoint ({type(error).__name__})") from None
    if not isinstance(loaded, dict):
        raise ModelLoadError(path, f"expected a state dict, found {type(loaded).__name__}")
    return loaded


def unpickling_problem(message: str) -> str:
    """Say why torch's weights-only unpickler stopped, in one line."""
    # torch names the forbidden callable as "GLOBAL module.name"; anything else is garbage.
    culprit = next((line.strip() for line in message.splitlines() if "GLOBAL" in line), "")
    if not culprit:
        return "not a PyTorch checkpoint (the pickle data is corrupt)"
    culprit = culprit.removeprefix("Weights only load failed. ")
    return (
        "refused: the checkpoint's pickle wants to run code or build objects that are not"
        f" tensors{f' ({culprit})' if culprit else ''}; only plain weights are loaded"
    )


def descriptor_from_file(path: Path) -> ImageModelDescriptor:
    state_dict = read_state_dict(path)
    try:
        # Unwraps `params`, `params_ema`, `state_dict`, `module.` prefixes and the like.
        descriptor = ModelLoader().load_from_state_dict(canonicalize_state_dict(state_dict))
    except UnsupportedModelError:
        raise ModelLoadError(path, "not a model architecture that spandrel recognises") from None
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as error:
        raise ModelLoadError(
            path, f"looks like a model but its weights don't fit ({error})"
        ) from None
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelLoadError(path, "an inpainting model; upres runs image-to-image models")
    descriptor.eval()
    return descriptor
