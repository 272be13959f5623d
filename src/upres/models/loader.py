"""From a name or a file to a spandrel model descriptor, loaded safely.

Checkpoints are read with safetensors or torch's weights-only loader, never plain pickle.
Built-in models are obtained by their card's source (see sources.py) into a per-user cache.
"""

from __future__ import annotations

import pickle
import warnings
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

from upres.errors import ModelLoadError, ModelNotFoundError, ModelUnavailableError
from upres.models import bicubic_arch  # noqa: F401  (registers the bicubic network with spandrel)
from upres.models.catalog import DEFAULT_MODEL, ModelCard, find_card, get_card
from upres.models.onnx import descriptor_from_onnx, is_onnx_file
from upres.models.user import CHECKPOINT_SUFFIXES, NCNN_SUFFIX, find, ncnn_descriptor

# spandrel's Swin-family and DAT networks call torch.meshgrid without `indexing`; the
# default they rely on is the one torch keeps, so the notice says nothing to our users.
warnings.filterwarnings(
    "ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning
)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: the spandrel descriptor plus where it came from."""

    descriptor: ImageModelDescriptor
    name: str
    card: ModelCard | None
    path: Path


def load_model(
    name_or_path: str | Path | None = None, *, denoise_strength: float | None = None
) -> LoadedModel:
    """Resolve a built-in name, a checkpoint or ncnn `.param` path, or the name of a model
    in the models folder to a loaded model on the CPU.

    `denoise_strength` (0..1) applies to models whose card blends two weight sets
    (realesr-general-x4v3); elsewhere it is refused rather than silently ignored.
    """
    target = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    path = Path(target).expanduser()
    if is_onnx_file(path):  # runs through ONNX Runtime (models/onnx.py)
        if not path.is_file():
            raise ModelLoadError(path, "no such file")
        if denoise_strength is not None:
            raise ValueError("denoise strength applies to a built-in model that has it")
        return LoadedModel(descriptor_from_onnx(path), path.stem, None, path)
    if names_a_file(path):
        return load_file_model(path, denoise_strength)
    if find_card(target) is None:
        user = find(target)
        if user is not None:
            if user.problem is not None:
                raise ModelLoadError(user.name, user.problem)
            loaded = load_file_model(user.path, denoise_strength)
            return LoadedModel(loaded.descriptor, user.name, None, user.path)
    card = get_card(target)
    try:
        weights = card.source.fetch(card)
    except ModelNotFoundError as error:  # known name, weights not here: not a usage error
        raise ModelUnavailableError(str(error)) from None
    state_dict = card_weights(card, weights)
    strength = blend_strength(card, denoise_strength)
    if strength is not None and strength != 1.0:
        state_dict = blended(card, state_dict, strength)
    descriptor = descriptor_from_state_dict(state_dict, weights)
    check_matches_card(descriptor, card, weights)
    return LoadedModel(descriptor, card.name, card, weights)


def load_file_model(path: Path, denoise_strength: float | None) -> LoadedModel:
    """A checkpoint file, or an ncnn pair named by its .param (converted once, cached)."""
    if not path.is_file():
        raise ModelLoadError(path, "no such file")
    if denoise_strength is not None:
        raise ValueError("denoise strength applies to a built-in model that has it")
    if path.suffix.lower() == NCNN_SUFFIX:
        return LoadedModel(ncnn_descriptor(path), path.stem, None, path)
    return LoadedModel(descriptor_from_file(path), path.stem, None, path)


def card_weights(card: ModelCard, path: Path) -> dict[str, torch.Tensor]:
    """The tensors the official test script loads: its wrapper key when the file has it."""
    state_dict = read_state_dict(path)
    inner = state_dict.get(card.weights_key) if card.weights_key else None
    return inner if isinstance(inner, dict) else state_dict


def names_a_file(path: Path) -> bool:
    """A file path (a checkpoint or an ncnn .param), rather than a model name. A bare
    `RealESRGAN_x4plus.pth` that is not here is the built-in model of that official name;
    with a folder it is a missing file."""
    if path.is_file():
        return True
    if path.suffix.lower() not in (*CHECKPOINT_SUFFIXES, NCNN_SUFFIX):
        return False
    return len(path.parts) > 1 or find_card(path.name) is None


def blend_strength(card: ModelCard, requested: float | None) -> float | None:
    if card.blend_with is None:
        if requested is not None:
            raise ValueError(f"{card.name} has no denoise strength to set")
        return None
    strength = card.default_denoise_strength if requested is None else requested
    if strength is None or not 0.0 <= strength <= 1.0:
        raise ValueError(f"denoise strength must be between 0 and 1, not {strength}")
    return strength


def blended(card: ModelCard, strong: dict, strength: float) -> dict[str, torch.Tensor]:
    """Deep network interpolation, as Real-ESRGAN's `dni`: strength*this + (1-strength)*weak.

    Strength 1 is this card's weights alone (strong denoising); 0 is the weak-denoise set.
    """
    assert card.blend_with is not None
    partner = get_card(card.blend_with)
    weak = card_weights(partner, partner.source.fetch(partner))
    strong = canonicalize_state_dict(strong)
    weak = canonicalize_state_dict(weak)
    if strong.keys() != weak.keys():
        raise ModelLoadError(card.name, f"cannot blend with {partner.name}: the layers differ")
    return {
        key: strength * value + (1.0 - strength) * weak[key] if value.is_floating_point() else value
        for key, value in strong.items()
    }


def check_matches_card(descriptor: ImageModelDescriptor, card: ModelCard, path: Path) -> None:
    """A file dropped in by hand must be the network the card describes."""
    found = (descriptor.scale, descriptor.input_channels)
    expected = (card.scale, card.input_channels)
    if found != expected:
        raise ModelLoadError(
            path,
            f"is a x{found[0]} model taking {found[1]} channel(s), but {card.name} is"
            f" x{expected[0]} with {expected[1]}: not the file this model needs",
        )


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
    return descriptor_from_state_dict(read_state_dict(path), path)


def descriptor_from_state_dict(state_dict: dict, path: Path) -> ImageModelDescriptor:
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
