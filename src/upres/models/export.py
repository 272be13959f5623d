"""`upres export --onnx`: a loaded model as an ONNX graph that ONNX Runtime runs.

The graph is traced from the checkpoint's reference modules (not the fast path, whose
cached masks are PyTorch-side state) with torch's TorchScript-based exporter, written to a
temporary name, run once in ONNX Runtime against PyTorch on a sample, and only then
renamed into place: a graph that disagrees is never left behind.

Fixed-shape graphs (the default; `tile` input pixels a side) work for every family the
exporter can trace. `dynamic=True` frees height and width, which only holds for networks
whose forward computes nothing from the input size in Python: the Swin family and DAT
build window masks and partitions from the size at trace time, so their "dynamic" graph
would fail or be wrong at other sizes. The export checks a second size and refuses.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from upres.engine.plan import size_rules
from upres.errors import UpresError
from upres.models.loader import LoadedModel
from upres.models.onnx import import_onnxruntime

DEFAULT_TILE = 256  # input side of a fixed-shape graph
MIN_AGREEMENT_DB = 60.0  # ONNX Runtime vs PyTorch, fp32 both
OPSET = 17
# Families whose forward builds size-dependent masks or partitions in Python.
SIZE_BOUND_FAMILIES = {
    "SwinIR": "window masks are built from the input size in Python",
    "Swin2SR": "window masks are built from the input size in Python",
    "HAT": "window and overlapping-window masks are built from the input size in Python",
    "DAT": "spatial-window masks and splits are built from the input size in Python",
}


class ExportError(UpresError):
    """The model cannot be written as a graph that runs and agrees with PyTorch."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    input_shape: list[int | str]  # NCHW; names for free dimensions
    scale: int
    psnr_db: float  # ONNX Runtime vs PyTorch on the sample (fp32 both)
    checked_sides: list[tuple[int, int]]  # input sizes the graph was run at


class ImageOnly(torch.nn.Module):
    """The network as a one-input, one-output graph: extra outputs dropped, and the card's
    reflection pre-padding (Real-CUGAN) built in so the graph is complete on its own."""

    def __init__(self, network: torch.nn.Module, scale: int, pre_pad: int = 0) -> None:
        super().__init__()
        self.network = network
        self.scale = scale
        self.pre_pad = pre_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.pre_pad
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        result = self.network(x)
        if isinstance(result, tuple | list):
            result = result[0]
        if pad:
            border = pad * self.scale
            result = result[:, :, border:-border, border:-border]
        return result


def export_onnx(
    model: LoadedModel,
    destination: str | Path,
    *,
    tile: int = DEFAULT_TILE,
    dynamic: bool = False,
    sample: np.ndarray | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write `model` as an ONNX graph at `destination` after checking it in ONNX Runtime.

    `tile`: the graph's input side (fixed-shape) or the size traced at (dynamic), rounded up
    to the model's size multiple. `sample`: an HxWxC float image in [0, 1] to check
    agreement on (a crop of it, at most `tile` a side); a synthetic one when None.
    """
    destination = Path(destination)
    if destination.exists() and not overwrite:
        raise ExportError(f"{destination}: already exists (use --overwrite)")
    if tile < 8:
        raise ExportError(f"--tile must be at least 8 input pixels, not {tile}")
    descriptor = model.descriptor
    family = descriptor.architecture.id
    if family == "ONNX":
        raise ExportError(f"{model.path}: is already an ONNX graph")
    if dynamic and family in SIZE_BOUND_FAMILIES:
        raise ExportError(
            f"{model.name} ({family}) cannot be exported with free height and width:"
            f" {SIZE_BOUND_FAMILIES[family]}; export a fixed shape with --tile N instead"
        )
    rules = size_rules(descriptor)
    side = max(rules.minimum, math.ceil(tile / rules.multiple) * rules.multiple)
    pre_pad = model.card.pre_pad if model.card else 0
    graph = ImageOnly(descriptor.model, descriptor.scale, pre_pad).eval().float().cpu()
    example = sample_input(sample, descriptor.input_channels, side, side)
    temporary = temporary_beside(destination)
    try:
        trace(graph, example, temporary, dynamic)
        sides = [(side, side)]
        if dynamic:  # a second, different size shows whether the sides are really free
            second = side + rules.multiple * max(1, 16 // rules.multiple)
            sides.append((second, side - rules.multiple if side > rules.minimum else side))
        psnr = check_agreement(graph, temporary, sample, sides, descriptor.input_channels)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)
    channels = descriptor.input_channels
    shape: list[int | str] = ["batch", channels, "height", "width"]
    if not dynamic:
        shape = [1, channels, side, side]
    return ExportResult(destination, shape, descriptor.scale, psnr, sides)


def temporary_beside(destination: Path) -> Path:
    handle, name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent or "."
    )
    os.close(handle)
    return Path(name)


def sample_input(sample: np.ndarray | None, channels: int, height: int, width: int) -> torch.Tensor:
    """NCHW float32 of exactly (height, width): a crop of `sample` (reflect-padded if small),
    or a smooth synthetic pattern with fine detail."""
    if sample is None:
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        rng = np.random.default_rng(0)
        planes = [
            0.5
            + 0.3 * np.sin(x / (5 + 3 * c)) * np.cos(y / (7 + 2 * c))
            + 0.05 * rng.standard_normal((height, width)).astype(np.float32)
            for c in range(channels)
        ]
        pixels = np.clip(np.stack(planes, axis=2), 0.0, 1.0)
    else:
        pixels = np.asarray(sample, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.shape[2] != channels:
            pixels = np.repeat(pixels[:, :, :1], channels, axis=2)
        pixels = pixels[:height, :width]
        pad = ((0, height - pixels.shape[0]), (0, width - pixels.shape[1]), (0, 0))
        pixels = np.pad(pixels, pad, mode="symmetric")
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]


def trace(graph: torch.nn.Module, example: torch.Tensor, path: Path, dynamic: bool) -> None:
    axes = {"input": {0: "batch", 2: "height", 3: "width"}}
    axes["output"] = {0: "batch", 2: "out_height", 3: "out_width"}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python values
            torch.onnx.export(
                graph,
                (example,),
                str(path),
                input_names=["input"],
                output_names=["output"],
                opset_version=OPSET,
                dynamic_axes=axes if dynamic else None,
                dynamo=False,  # the TorchScript tracer takes every family the dynamo one does
            )
    except Exception as error:
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise ExportError(f"the exporter cannot trace this network ({first})") from None


def check_agreement(
    graph: torch.nn.Module,
    path: Path,
    sample: np.ndarray | None,
    sides: list[tuple[int, int]],
    channels: int,
) -> float:
    """Run the graph in ONNX Runtime and the network in PyTorch; the worst PSNR over sizes."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = math.inf
    for height, width in sides:
        x = sample_input(sample, channels, height, width)
        with torch.no_grad():
            expected = graph(x).float().numpy()
        try:
            (got, *_) = session.run(None, {"input": x.numpy()})
        except Exception as error:
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            raise ExportError(
                f"the exported graph does not run at {height}x{width} ({first})"
            ) from None
        if got.shape != expected.shape:
            raise ExportError(
                f"the exported graph gives {list(got.shape)} at {height}x{width},"
                f" PyTorch {list(expected.shape)}"
            )
        worst = min(worst, psnr_db(np.clip(got, 0, 1), np.clip(expected, 0, 1)))
    if worst < MIN_AGREEMENT_DB:
        raise ExportError(
            f"the exported graph disagrees with PyTorch ({worst:.1f} dB < {MIN_AGREEMENT_DB:g})"
        )
    return worst


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
