"""Loading models: built-in names, checkpoints by path, and refusing what is not a safe model."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import upres
from conftest import tiny_compact
from upres.errors import ModelLoadError, ModelNotFoundError
from upres.models.cache import sha256_of, sidecar_of
from upres.models.catalog import CATALOG, DEFAULT_MODEL
from upres.models.loader import load_model


def test_checkpoint_in_the_official_wrapper_loads_by_path(compact_checkpoint):
    loaded = load_model(compact_checkpoint)
    assert loaded.descriptor.architecture.id == "Compact"
    assert loaded.descriptor.scale == 2
    assert loaded.card is None


def test_safetensors_checkpoint_loads(tmp_path):
    path = tmp_path / "compact.safetensors"
    save_file(tiny_compact(scale=3).state_dict(), str(path))
    assert load_model(path).descriptor.scale == 3


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")


def test_missing_checkpoint_file_names_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match=r"missing\.pth: no such file"):
        load_model(tmp_path / "missing.pth")


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.pth", b"", "empty file"),
        ("notes.pth", b"these are my notes, not a model\n" * 4, "not a PyTorch checkpoint"),
        (
            "broken.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage",
            "not a valid safetensors",
        ),
    ],
)
def test_files_that_are_not_models_are_refused(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=problem) as caught:
        load_model(path)
    assert name in str(caught.value)


def test_tensors_of_no_known_architecture_are_refused(tmp_path):
    path = tmp_path / "mystery.safetensors"
    save_file({"foo.weight": torch.zeros(3, 3), "bar.bias": torch.zeros(3)}, str(path))
    with pytest.raises(ModelLoadError, match="not a model architecture that spandrel recognises"):
        load_model(path)


class RunsCode:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_checkpoint_whose_pickle_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    state = {"params": tiny_compact().state_dict(), "payload": RunsCode(marker)}
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match=r"evil\.pth: refused"):
        load_model(path)
    assert not marker.exists()
    # A plain-pickle file (not a torch zip) is refused the same way.
    raw = tmp_path / "evil-raw.ckpt"
    raw.write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(ModelLoadError, match=r"evil-raw\.ckpt"):
        load_model(raw)
    assert not marker.exists()


def test_default_model_converts_once_into_the_cache_with_its_sha256():
    card = CATALOG[DEFAULT_MODEL]
    upscaler = upres.load()
    assert upscaler.name == DEFAULT_MODEL and upscaler.scale == 4
    assert upscaler.architecture == "ESRGAN"
    cached = card.source.target(card)
    sidecar = sidecar_of(cached)
    assert sidecar.read_text().split()[0] == card.sha256
    stamp = cached.stat().st_mtime_ns
    load_model(DEFAULT_MODEL)
    assert cached.stat().st_mtime_ns == stamp  # not converted again


def test_a_damaged_cache_file_is_converted_again():
    card = CATALOG[DEFAULT_MODEL]
    load_model(DEFAULT_MODEL)
    cached = card.source.target(card)
    with open(cached, "r+b") as handle:
        handle.seek(-16, os.SEEK_END)
        handle.write(b"\xff" * 16)
    load_model(DEFAULT_MODEL)
    assert sha256_of(cached) == card.sha256
