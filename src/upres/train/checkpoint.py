"""Training checkpoints and inference exports, as safetensors (no pickle anywhere).

A training checkpoint holds ``model.*``, ``ema.*`` and ``optim.<param>.<name>`` tensors plus
the torch RNG state; what is not a tensor (step, optimizer hyperparameters, architecture and
its kwargs, the loss history) is one JSON string in the safetensors metadata.

The inference export is the EMA weights alone: ``<name>.safetensors`` (a plain state dict,
since safetensors cannot nest) and ``<name>.pth`` in the official wrapper ``{"params": ...}``;
``upres.load`` reads either through spandrel.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

META_KEY = "upres_train"
FORMAT_VERSION = 1


@dataclass
class TrainState:
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # arch, kwargs, history, ...
    rng: torch.Tensor | None = None


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Adam's per-parameter tensors become ``optim.<index>.<name>``; groups go to JSON."""
    tensors = {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{index}.{name}"] = tensor.detach().cpu().contiguous()
    return tensors, state["param_groups"]


def unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: Path, state: TrainState) -> None:
    """Write atomically: an interruption mid-write must not destroy the last good checkpoint."""
    optim_tensors, groups = flatten_optimizer(state.optimizer)
    tensors = {
        **prefixed("model.", state.model),
        **prefixed("ema.", state.ema),
        **optim_tensors,
    }
    if state.rng is not None:
        tensors["rng.torch"] = state.rng
    meta = {"version": FORMAT_VERSION, "step": state.step, "param_groups": groups, **state.info}
    write_atomically(path, tensors, {META_KEY: json.dumps(meta)})


def load_checkpoint(path: Path) -> TrainState:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if META_KEY not in metadata:
        raise ValueError(f"{path}: not an upres training checkpoint (no {META_KEY} metadata)")
    meta = json.loads(metadata[META_KEY])
    tensors = load_file(str(path), device="cpu")
    groups = meta.pop("param_groups")
    step = int(meta.pop("step"))
    meta.pop("version", None)
    return TrainState(
        step=step,
        model=unprefixed("model.", tensors),
        ema=unprefixed("ema.", tensors),
        optimizer=unflatten_optimizer(unprefixed_full("optim.", tensors), groups),
        info=meta,
        rng=tensors.get("rng.torch"),
    )


def export_inference(folder: Path, name: str, weights: dict[str, torch.Tensor]) -> Path:
    """The EMA weights as an inference model; returns the .safetensors path."""
    plain = {key: value.detach().cpu().contiguous() for key, value in weights.items()}
    target = folder / f"{name}.safetensors"
    write_atomically(target, plain, {"format": "pt"})
    wrapper = folder / f"{name}.pth"
    partial = wrapper.with_suffix(".pth.partial")
    torch.save({"params": plain}, partial)
    os.replace(partial, wrapper)
    return target


def write_atomically(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    # safetensors refuses tensors that share memory; clone the rare aliased ones.
    save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, partial, meta)
    os.replace(partial, path)


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def unprefixed_full(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Like ``unprefixed`` but keeping the keys whole (``optim.3.exp_avg``)."""
    return {key: value for key, value in tensors.items() if key.startswith(prefix)}
