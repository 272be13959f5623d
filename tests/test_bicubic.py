"""The `bicubic` pseudo-model: catalogued, loaded and run like any other model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import PROJECT_ROOT
from upres.cli.main import app
from upres.models.loader import load_model


def test_upscale_cli_runs_bicubic_and_matches_torch_bicubic(tmp_path: Path) -> None:
    crop = tmp_path / "crop.png"
    with Image.open(PROJECT_ROOT / "examples" / "lighthouse.png") as image:
        image.convert("RGB").crop((20, 20, 60, 52)).save(crop)
    result = CliRunner().invoke(
        app, ["upscale", str(crop), "-m", "bicubic", "-o", str(tmp_path / "big.png")]
    )
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "big.png") as big, Image.open(crop) as small:
        assert big.size == (160, 128)
        pixels = torch.from_numpy(np.array(small)).permute(2, 0, 1)[None].float() / 255
        expected = torch.nn.functional.interpolate(pixels, scale_factor=4, mode="bicubic")
        expected = (expected.clamp(0, 1) * 255).round()[0].permute(1, 2, 0).numpy()
        difference = np.abs(np.asarray(big).astype(np.float32) - expected)
    assert difference.mean() < 0.5 and difference.max() <= 8  # tiles blend seams only


def test_bicubic_loads_through_the_catalogue_with_no_download() -> None:
    model = load_model("bicubic")
    assert (model.name, model.descriptor.scale, model.card.scale) == ("bicubic", 4, 4)
    assert model.path.is_file()  # the one-tensor file made in the (test) cache
    assert sum(p.numel() for p in model.descriptor.model.parameters()) == 0
    # Only by name: the service's fallbacks pick from learned SR tasks.
    from upres.server.models import FAITHFUL_TASKS

    assert model.card.task == "baseline" and model.card.task not in FAITHFUL_TASKS
