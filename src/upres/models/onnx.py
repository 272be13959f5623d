"""`.onnx` graphs run through ONNX Runtime inside the same tiled engine.

The graph is wrapped in an `OnnxNetwork` (a torch module whose forward calls ONNX Runtime)
and described by a spandrel `ImageModelDescriptor`, so the planner and the tile runner treat
it like any other network. What a checkpoint's architecture would tell (layout, channels,
scale, size multiple) is read from the graph's declared shapes where they are fixed, and
otherwise probed once on small inputs when the file is loaded.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from spandrel import Architecture, ImageModelDescriptor, SizeRequirements

from upres.errors import ModelLoadError, UpresError

ONNX_SUFFIX = ".onnx"
INSTALL_HINT = "pip install 'upres[onnx]' (or: pip install onnxruntime)"
# Size multiples tried, smallest first, when the graph's height and width are free.
PROBE_MULTIPLES = (1, 2, 4, 8, 16, 32, 64)
PROBE_SIDE = 24  # probes are at least this big: small enough to be quick on any CPU
COLOUR_CHANNELS = (1, 3, 4)
INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class MissingOnnxRuntimeError(UpresError):
    """An .onnx model was asked for, but onnxruntime is not installed."""


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingOnnxRuntimeError(
            f"running .onnx models needs ONNX Runtime, which is not installed: {INSTALL_HINT}"
        ) from None
    return onnxruntime


def is_onnx_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ONNX_SUFFIX


@dataclass(frozen=True)
class GraphFacts:
    """What the graph's input declares: layout, channels, element type and fixed sides."""

    input_name: str
    channels_last: bool  # NHWC instead of NCHW
    channels: int
    element_type: type
    fixed_hw: tuple[int, int] | None  # both sides fixed by the graph, else None
    fixed_batch: bool  # the batch dimension is fixed (to 1): tiles go one at a time


def providers_for(device: torch.device, available: list[str]) -> list[str]:
    """CUDA when asked for (or 'auto' chose it) and installed; the CPU always as fallback."""
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(path: Path, device: torch.device, threads: int | None = None) -> Any:
    """An ONNX Runtime session for `path`; a file that is not a graph is a ModelLoadError."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: probes that fail are expected
    try:
        return ort.InferenceSession(
            str(path), options, providers=providers_for(device, ort.get_available_providers())
        )
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelLoadError(path, f"not a usable ONNX graph ({first_line[:200]})") from None


def graph_facts(session: Any, path: Path) -> GraphFacts:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ModelLoadError(
            path, f"the graph takes {len(inputs)} inputs ({names}); upres runs one image input"
        )
    graph_input = inputs[0]
    shape = list(graph_input.shape)
    if len(shape) != 4:
        raise ModelLoadError(
            path, f"the graph's input has shape {shape}; an image model takes 4 dimensions"
        )
    if graph_input.type not in INPUT_TYPES:
        raise ModelLoadError(
            path, f"the graph's input is {graph_input.type}; upres feeds float or float16"
        )

    def fixed(dim: Any) -> int | None:
        return dim if isinstance(dim, int) and dim > 0 else None

    channels_last = fixed(shape[3]) in COLOUR_CHANNELS and fixed(shape[1]) not in COLOUR_CHANNELS
    # A graph that leaves even the channels free is fed colour, NCHW (what most SR graphs take).
    channels = fixed(shape[3] if channels_last else shape[1]) or 3
    sides = shape[1:3] if channels_last else shape[2:4]
    fixed_hw = (sides[0], sides[1]) if all(fixed(side) for side in sides) else None
    return GraphFacts(
        input_name=graph_input.name,
        channels_last=channels_last,
        channels=channels,
        element_type=INPUT_TYPES[graph_input.type],
        fixed_hw=fixed_hw,
        fixed_batch=fixed(shape[0]) is not None,
    )


class OnnxNetwork(torch.nn.Module):
    """NCHW float tensor in, NCHW float32 tensor out, computed by an ONNX Runtime session.

    Inputs smaller than a fixed-shape graph's side are padded up to it (and the output
    cropped back), so even an out-of-memory retry with a smaller tile runs.
    """

    def __init__(self, session: Any, facts: GraphFacts, path: Path, scale: int = 1) -> None:
        super().__init__()
        self.session = session
        self.facts = facts
        self.path = path
        self.scale = scale

    def to(self, *args: Any, **kwargs: Any) -> OnnxNetwork:
        """Moving to a device re-opens the session with that device's provider; dtypes and
        memory formats do not apply (the graph keeps the precision it was saved in)."""
        device, _dtype, _non_blocking, _format = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None and device.type != self.device.type:
            self.session = open_session(self.path, device, self.threads)
        return self

    @property
    def device(self) -> torch.device:
        on_cuda = "CUDAExecutionProvider" in self.session.get_providers()
        return torch.device("cuda" if on_cuda else "cpu")

    @property
    def threads(self) -> int:
        return int(self.session.get_session_options().intra_op_num_threads)

    @property
    def fixed_input_shape(self) -> tuple[int, int] | None:
        """(height, width) every crop must have; the planner reads it."""
        return self.facts.fixed_hw

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run_array(self, batch: np.ndarray) -> np.ndarray:
        """One ONNX Runtime call on an NCHW float32 array; returns NCHW float32."""
        feed = batch.transpose(0, 2, 3, 1) if self.facts.channels_last else batch
        feed = np.ascontiguousarray(feed, dtype=self.facts.element_type)
        (result, *_) = self.session.run(None, {self.facts.input_name: feed})
        if self.facts.channels_last:
            result = result.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(result, dtype=np.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.facts.fixed_hw is not None:
            x = pad_up_to(x, self.facts.fixed_hw)
        array = x.detach().float().cpu().contiguous().numpy()
        if self.facts.fixed_batch and array.shape[0] > 1:
            results = [self.run_array(array[i : i + 1]) for i in range(array.shape[0])]
            output = np.concatenate(results)
        else:
            output = self.run_array(array)
        output = output[:, :, : height * self.scale, : width * self.scale]
        return torch.from_numpy(np.ascontiguousarray(output)).to(x.device)


def pad_up_to(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    height, width = x.shape[-2:]
    if height > shape[0] or width > shape[1]:
        raise ValueError(f"a {height}x{width} crop does not fit the graph's fixed {shape}")
    pad_h, pad_w = shape[0] - height, shape[1] - width
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def probe_sides(multiple: int) -> tuple[int, int]:
    """An odd number of multiples per side (so a graph needing twice the multiple fails),
    and different height and width (so a graph that swaps them fails)."""
    count = max(1, math.ceil(PROBE_SIDE / multiple))
    count += 1 - count % 2
    return multiple * count, multiple * (count + 2)


def probe(network: OnnxNetwork, path: Path) -> tuple[int, int, int]:
    """(scale, size multiple, output channels): the smallest multiple the graph runs at,
    and what it gives there."""
    facts = network.facts
    if facts.fixed_hw is not None:
        candidates = [facts.fixed_hw]
        multiples = [1]
    else:
        multiples = list(PROBE_MULTIPLES)
        candidates = [probe_sides(m) for m in multiples]
    problem = ""
    for multiple, (height, width) in zip(multiples, candidates, strict=True):
        sample = np.random.default_rng(0).random((1, facts.channels, height, width), np.float32)
        try:
            output = network.run_array(sample)
        except Exception as error:  # the graph refuses this size: try the next multiple
            problem = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            continue
        scale_h, scale_w = (
            (output.shape[2] / height, output.shape[3] / width)
            if (output.ndim == 4)
            else (0.0, 0.0)
        )
        if scale_h != scale_w or scale_h < 1 or scale_h % 1:
            raise ModelLoadError(
                path,
                f"a {height}x{width} input gave output {list(output.shape)};"
                " upres runs graphs that scale both sides by the same whole factor",
            )
        return int(scale_h), multiple, int(output.shape[1])
    raise ModelLoadError(path, f"the graph did not run on any probe size ({problem})")


class OnnxArchitecture(Architecture[OnnxNetwork]):
    """Names the family in plans and reports; graphs are never detected from state dicts."""

    def __init__(self) -> None:
        super().__init__(id="ONNX", name="ONNX", detect=lambda _state: False)

    def load(self, state_dict: Any) -> Any:
        raise NotImplementedError("ONNX graphs are loaded from their files")


def descriptor_from_onnx(
    path: Path, device: torch.device | None = None, threads: int | None = None
) -> ImageModelDescriptor:
    """Open the graph, read or probe what the engine needs, describe it like a checkpoint."""
    device = device or torch.device("cpu")
    session = open_session(path, device, threads)
    facts = graph_facts(session, path)
    network = OnnxNetwork(session, facts, path)
    scale, multiple, output_channels = probe(network, path)
    network.scale = scale
    descriptor = ImageModelDescriptor(
        network,
        {},
        OnnxArchitecture(),
        purpose="SR" if scale > 1 else "Restoration",
        tags=[os.path.basename(path)],
        supports_half=False,  # ONNX Runtime runs the graph in the precision it was saved in
        supports_bfloat16=False,
        scale=scale,
        input_channels=facts.channels,
        output_channels=output_channels,
        size_requirements=SizeRequirements(minimum=multiple, multiple_of=multiple),
    )
    return descriptor
