"""ONNX in: .onnx graphs run through ONNX Runtime inside the tiled engine.

The graphs are exported from tiny random instances of real architectures (and from small
modules that make a graph demand a layout or a size multiple); results are compared with
the same network run by PyTorch.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import upres
from conftest import PROJECT_ROOT, tiny_compact
from upres.cli.main import app
from upres.engine.plan import make_plan
from upres.errors import ModelLoadError
from upres.models.onnx import MissingOnnxRuntimeError, OnnxNetwork, probe_sides

pytest.importorskip("onnxruntime")


def export(network: torch.nn.Module, path: Path, shape: tuple[int, ...], dynamic: bool) -> Path:
    axes = {"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "H", 3: "W"}}
    torch.onnx.export(
        network.eval(),
        (torch.rand(*shape),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamic_axes=axes if dynamic else None,
        dynamo=False,
    )
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A real 70x90 crop of the example photo, float in [0, 1]: wider than high."""
    from PIL import Image

    with Image.open(PROJECT_ROOT / "examples" / "lighthouse.png") as image:
        pixels = np.asarray(image.convert("RGB"))
    return pixels[10:80, 3:93].astype(np.float32) / 255


def torch_result(network: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        return network.eval()(x)[0].clamp(0, 1).numpy().transpose(1, 2, 0)


def test_dynamic_graph_runs_tiled_and_agrees_with_pytorch(tmp_path: Path, crop: np.ndarray) -> None:
    network = tiny_compact(scale=2)
    path = export(network, tmp_path / "compact.onnx", (1, 3, 32, 32), dynamic=True)
    upscaler = upres.load(path, tile=32, tile_overlap=8)
    assert upscaler.scale == 2 and upscaler.architecture == "ONNX"
    assert upscaler.model.descriptor.size_requirements.multiple_of == 1
    result = upscaler(crop)
    assert result.shape == (140, 180, 3)
    # Receptive radius 6 < overlap 8: tiles blend to the untiled result.
    assert psnr(result, torch_result(network, crop)) >= 60


class ChannelsLast(torch.nn.Module):
    """An NHWC graph, as some converters write them."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def test_channels_last_graph_is_read_from_its_input_shape(tmp_path: Path, crop: np.ndarray) -> None:
    network = tiny_compact(scale=2, seed=3)
    path = tmp_path / "nhwc.onnx"
    axes = {"input": {1: "h", 2: "w"}, "output": {1: "H", 2: "W"}}
    torch.onnx.export(
        ChannelsLast(network).eval(),
        (torch.rand(1, 32, 32, 3),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes=axes,
        dynamo=False,
    )
    upscaler = upres.load(path, tile="auto")
    assert upscaler.model.descriptor.model.facts.channels_last
    assert psnr(upscaler(crop), torch_result(network, crop)) >= 60


def test_fixed_shape_graph_gets_crops_of_exactly_its_shape(
    tmp_path: Path, crop: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = tiny_compact(scale=2, seed=1)
    path = export(network, tmp_path / "fixed.onnx", (1, 3, 40, 48), dynamic=False)
    upscaler = upres.load(path, tile_overlap=32)
    plan = make_plan(upscaler.model.descriptor, upscaler.device, overlap=32)
    assert plan.fixed_shape and plan.crop_shape == (40, 48)
    assert plan.overlap == 10  # shrunk so that half of each crop is core
    seen: list[tuple[int, ...]] = []
    original = OnnxNetwork.run_array

    def recording(self: OnnxNetwork, batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape)
        return original(self, batch)

    monkeypatch.setattr(OnnxNetwork, "run_array", recording)
    result = upscaler(crop)
    assert len(seen) > 1 and set(seen) == {(1, 3, 40, 48)}
    assert result.shape == (140, 180, 3)
    assert psnr(result, torch_result(network, crop)) >= 60
    # Smaller than the graph: padded up to it and cropped back.
    small = upscaler(crop[:21, :17])
    assert small.shape == (42, 34, 3)


class NeedsMultipleOf8(torch.nn.Module):
    """Refuses sides that are not multiples of 8 (a space-to-depth front end), x2."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3 * 64, 3 * 256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(
            torch.nn.functional.pixel_shuffle(
                self.conv(torch.nn.functional.pixel_unshuffle(x, 8)), 16
            )
        )


def test_size_multiple_and_scale_are_probed_once(tmp_path: Path, crop: np.ndarray) -> None:
    network = NeedsMultipleOf8()
    path = export(network, tmp_path / "m8.onnx", (1, 3, 32, 32), dynamic=True)
    upscaler = upres.load(path)
    descriptor = upscaler.model.descriptor
    assert (descriptor.scale, descriptor.size_requirements.multiple_of) == (2, 8)
    result = upscaler(crop)  # 70x90 is padded to multiples of 8 and cropped back
    assert result.shape == (140, 180, 3)
    expected = torch_result(network, np.pad(crop, ((0, 2), (0, 6), (0, 0)), mode="reflect"))
    assert psnr(result, expected[:140, :180]) >= 60


def test_probe_sides_fail_for_twice_the_multiple() -> None:
    for multiple in (1, 2, 4, 8, 16, 32, 64):
        height, width = probe_sides(multiple)
        assert height != width and height >= 24
        assert height % multiple == 0 and (height // multiple) % 2 == 1
        assert (width // multiple) % 2 == 1


def test_not_a_graph_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not protobuf" * 10)
    with pytest.raises(ModelLoadError, match=r"broken\.onnx: not a usable ONNX graph"):
        upres.load(bad)
    with pytest.raises(ModelLoadError, match="no such file"):
        upres.load(tmp_path / "missing.onnx")


class TwoInputs(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


def test_graph_with_two_inputs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "two.onnx"
    torch.onnx.export(
        TwoInputs(), (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)), str(path), dynamo=False
    )
    with pytest.raises(ModelLoadError, match="takes 2 inputs"):
        upres.load(path)


def test_missing_onnxruntime_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = export(tiny_compact(), tmp_path / "c.onnx", (1, 3, 16, 16), dynamic=True)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now fails
    with pytest.raises(MissingOnnxRuntimeError, match=r"upres\[onnx\]"):
        upres.load(path)
    image = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (20, 20), "red").save(image)
    outcome = CliRunner().invoke(app, ["upscale", str(image), "-m", str(path)])
    assert outcome.exit_code == 2
    assert "onnxruntime" in outcome.output and "upres[onnx]" in outcome.output


def test_cli_upscales_with_an_onnx_model(tmp_path: Path, crop: np.ndarray) -> None:
    from PIL import Image

    path = export(tiny_compact(scale=2), tmp_path / "c.onnx", (1, 3, 16, 16), dynamic=True)
    image = tmp_path / "in.png"
    Image.fromarray((crop[:48, :64] * 255).astype(np.uint8)).save(image)
    outcome = CliRunner().invoke(
        app, ["upscale", str(image), "-m", str(path), "-o", str(tmp_path / "out.png")]
    )
    assert outcome.exit_code == 0, outcome.output
    with Image.open(tmp_path / "out.png") as result:
        assert result.size == (128, 96)


def test_graph_with_free_channels_is_fed_colour(tmp_path: Path, crop: np.ndarray) -> None:
    network = tiny_compact(scale=2, seed=5)
    path = tmp_path / "free.onnx"
    axes = {"input": {0: "n", 1: "c", 2: "h", 3: "w"}, "output": {0: "n", 1: "k", 2: "H", 3: "W"}}
    torch.onnx.export(
        network.eval(),
        (torch.rand(1, 3, 16, 16),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes=axes,
        dynamo=False,
    )
    upscaler = upres.load(path)
    assert upscaler.model.descriptor.input_channels == 3
    assert psnr(upscaler(crop), torch_result(network, crop)) >= 60


class Stretches(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=(2.0, 3.0), mode="nearest")


def test_graph_that_scales_the_sides_differently_is_refused(tmp_path: Path) -> None:
    path = export(Stretches(), tmp_path / "stretch.onnx", (1, 3, 16, 16), dynamic=True)
    with pytest.raises(ModelLoadError, match=r"stretch\.onnx: a 25x27 input gave output"):
        upres.load(path)
