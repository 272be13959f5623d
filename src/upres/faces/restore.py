"""Face restorers: one aligned 512x512 face in, the restored face out, one at a time.

The networks come through spandrel like every other model. GFPGAN and CodeFormer take and
give values in [-1, 1] (their official scripts normalise around them); spandrel's
RestoreFormer descriptor normalises by itself and works in [0, 1].
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import torch
from spandrel import ImageModelDescriptor

from upres.errors import ModelLoadError, ModelNotFoundError
from upres.faces.align import FACE_SIZE

# Architectures (spandrel ids) that work in [-1, 1] when called through their descriptor.
SIGNED_RANGE = {"GFPGAN", "CodeFormer"}
# GFPGAN injects random noise (StyleGAN2); a fixed seed makes a run repeatable.
SEED = 0


def install_extra_arches(name: str) -> None:
    """Add spandrel's opt-in architectures (CodeFormer's licence keeps them out of spandrel)."""
    try:
        import spandrel_extra_arches
    except ModuleNotFoundError:
        raise ModelNotFoundError(
            f"{name} needs spandrel's extra architectures: pip install 'upres[codeformer]'"
            " (spandrel_extra_arches; note CodeFormer's licence is non-commercial)"
        ) from None
    spandrel_extra_arches.install(ignore_duplicates=True)


class FaceRestorer:
    """A face model on a device; `restore` handles one face so memory never grows with
    the number of faces in a photo."""

    def __init__(self, descriptor: ImageModelDescriptor, name: str, device: torch.device) -> None:
        if descriptor.input_channels != 3 or descriptor.scale != 1:
            raise ModelLoadError(name, "not a face restorer (expects x1, 3 channels)")
        self.descriptor = descriptor
        self.name = name
        self.device = device
        self.signed = descriptor.architecture.id in SIGNED_RANGE
        descriptor.to(device).eval()
        self._lock = threading.Lock()

    def restore(self, face: np.ndarray) -> np.ndarray:
        """512x512x3 float RGB in [0, 1] -> the restored face, same shape, on the CPU."""
        if face.shape != (FACE_SIZE, FACE_SIZE, 3):
            raise ValueError(f"expected a {FACE_SIZE}x{FACE_SIZE}x3 face, got {face.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(face, dtype=np.float32))
        tensor = tensor.permute(2, 0, 1)[None].to(self.device)
        if self.signed:
            tensor = tensor * 2 - 1
        seeded = [self.device] if self.device.type == "cuda" else []
        with self._lock, torch.inference_mode(), torch.random.fork_rng(devices=seeded):
            torch.manual_seed(SEED)
            output = self.descriptor(tensor)
        if self.signed:
            output = (output + 1) / 2
        result = output[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(result)


def load_restorer(name_or_path: str, device: torch.device) -> FaceRestorer:
    """A catalogued face model by name (downloaded once) or a face checkpoint file."""
    from upres.models.catalog import find_card
    from upres.models.loader import load_model

    card = find_card(str(name_or_path))  # any name it answers to (GFPGANv1.4, ...)
    if card is not None and card.task != "face":
        raise ModelNotFoundError(
            f"{card.name} is not a face model; face models: {', '.join(face_model_names())}"
        )
    if card is not None and card.extra_arches:
        install_extra_arches(card.name)
    elif card is None:  # a file: it may be a CodeFormer, if the extra package is here
        with contextlib.suppress(ModelNotFoundError):
            install_extra_arches(str(name_or_path))
    loaded = load_model(name_or_path)
    return FaceRestorer(loaded.descriptor, loaded.name, device)


def face_model_names() -> list[str]:
    from upres.models.catalog import CATALOG

    return [card.name for card in CATALOG.values() if card.task == "face"]
