"""Recognise a user's ncnn ``.param`` graph as one of the networks upres can convert.

A ``.param`` file names no architecture, so the layer graph is matched against the three
families that upscalers ship as ncnn pairs: ESRGAN's RRDBNet (any block count and width,
Real-ESRGAN's pixel-unshuffle x2/x1 inputs too), SRVGGNetCompact (any depth and width)
and Real-CUGAN (x2/x3/x4). Each family's hyperparameters are read off the first and last
layers; the matching spandrel network is built and every weight-bearing layer must then
have exactly the shapes that network expects, in order, while every weightless layer
must be one the family uses (nearest-neighbour resizes by the right factor, the right
activation slopes). Anything else is refused, naming the first layer that did not fit:
the by-order weight mapping of `ncnn.py` would silently misplace weights otherwise.

Only the ``.param`` text is read here; the ``.bin`` is checked when it is converted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from upres.errors import ModelLoadError
from upres.models.ncnn import _READERS, _WEIGHTLESS, NcnnLayer, _conv_shapes, parse_param

FAMILIES = "RRDBNet, SRVGGNetCompact or Real-CUGAN"


@dataclass(frozen=True)
class NcnnArch:
    """What a graph was recognised as: enough to build its network and describe it."""

    family: str  # "RRDBNet" | "SRVGGNetCompact" | "Real-CUGAN"
    scale: int
    description: str  # e.g. "RRDBNet (ESRGAN), 6 blocks, 64 features"
    build: Callable[[], nn.Module] = field(compare=False, repr=False)
    # Whether spandrel's own detection rebuilds this network from its state dict alone;
    # it cannot for a Compact without PReLU (no activation weights to see).
    detectable: bool = True


@dataclass(frozen=True)
class Misfit:
    """Where a family's match stopped: the layer's index and why."""

    index: int
    why: str


# --------------------------------------------------------------------------- shapes


def weight_shapes(layer: NcnnLayer) -> list[tuple[int, ...]]:
    """The arrays a weight-bearing layer holds in the .bin, read from its .param line alone."""
    if layer.type == "PReLU":
        return [(layer.int_param(0, 0),)]
    if layer.type == "InnerProduct":
        out, size = layer.int_param(0, 0), layer.int_param(2, 0)
        if out <= 0 or size <= 0 or size % out:
            raise ValueError(f"weight_data_size {size} does not fit {out} outputs")
        return [(out, size // out)] + ([(out,)] if layer.int_param(1, 0) else [])
    out, size, kh, kw = _conv_shapes(layer)
    per_out = size // (out * kh * kw)
    if layer.type.startswith("Deconvolution"):
        group = layer.int_param(7, 1) if layer.type == "DeconvolutionDepthWise" else 1
        weight = (per_out * group, out // group, kh, kw)
    else:
        weight = (out, per_out, kh, kw)
    return [weight] + ([(out,)] if layer.int_param(5, 0) else [])


def squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def learned_shapes(network: nn.Module) -> list[tuple[int, ...]]:
    """The network's learned arrays in state-dict order (buffers are not in an ncnn file)."""
    buffers = {name for name, _ in network.named_buffers()}
    return [tuple(v.shape) for k, v in network.state_dict().items() if k not in buffers]


# --------------------------------------------------------------------------- matching


LayerCheck = Callable[[NcnnLayer], str | None]


def fit(
    layers: list[NcnnLayer],
    family: str,
    vocabulary: frozenset[str],
    expected: list[tuple[int, ...]],
    check: LayerCheck,
) -> Misfit | None:
    """Walk the graph against a family's layer types, checks and expected weight shapes."""
    position = 0
    for index, layer in enumerate(layers):
        if layer.type not in vocabulary:
            return Misfit(index, f"{family} has no {layer.type} layer")
        problem = check(layer)
        if problem:
            return Misfit(index, problem)
        if layer.type not in _READERS:
            continue
        try:
            shapes = weight_shapes(layer)
        except ValueError as error:
            return Misfit(index, str(error))
        for shape in shapes:
            if position >= len(expected):
                return Misfit(index, f"more weights than {family} has ({len(expected)} arrays)")
            if squeezed(shape) != squeezed(expected[position]):
                return Misfit(
                    index, f"weights of shape {shape} where {family} has {expected[position]}"
                )
            position += 1
    if position < len(expected):
        return Misfit(
            len(layers) - 1,
            f"the graph ends after {position} of the {len(expected)} weight arrays of {family}",
        )
    return None


def float_param(layer: NcnnLayer, key: int, default: float) -> float:
    value = layer.params.get(key)
    if value is None:
        return default
    return float(value[0] if isinstance(value, list) else value)


def activation(layer: NcnnLayer) -> tuple[str, float] | None:
    """A fused or separate activation: ("relu", slope) with slope 0 for plain ReLU."""
    if layer.type == "ReLU":
        return ("relu", float_param(layer, 0, 0.0))
    if layer.type.startswith(("Convolution", "Deconvolution")):
        kind = layer.int_param(9, 0)
        if kind == 0:
            return None
        if kind == 1:
            return ("relu", 0.0)
        if kind == 2:
            return ("relu", float_param(layer, 10, 0.0))
        return ("other", float(kind))
    return None


def check_slope(layer: NcnnLayer, slopes: tuple[float, ...], family: str) -> str | None:
    found = activation(layer)
    if found is None:
        return None
    kind, slope = found
    if kind != "relu" or not any(math.isclose(slope, s, abs_tol=1e-6) for s in slopes):
        wanted = " or ".join(f"{s:g}" for s in slopes)
        what = f"activation type {slope:g}" if kind == "other" else f"slope {slope:g}"
        return f"an activation with {what}; {family} uses leaky ReLU slope {wanted}"
    return None


def interp_factor(layer: NcnnLayer) -> tuple[int, float] | None:
    """(resize type, factor) of an Interp layer scaling both sides by one factor."""
    height, width = float_param(layer, 1, 1.0), float_param(layer, 2, 1.0)
    if height != width or layer.int_param(3, 0) or layer.int_param(4, 0):
        return None  # fixed output sizes or unequal factors
    return layer.int_param(0, 0), height


def convolutions(layers: list[NcnnLayer]) -> list[NcnnLayer]:
    return [layer for layer in layers if layer.type == "Convolution"]


def in_channels(layer: NcnnLayer) -> int:
    return weight_shapes(layer)[0][1]


# --------------------------------------------------------------------------- families

_RRDB_TYPES = frozenset(
    {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "ReLU", "Noop", "Convolution"}
)
_RRDB_UNSHUFFLE_TYPES = frozenset({"Reshape", "Permute", "Padding"})
_COMPACT_TYPES = frozenset(
    {"Input", "Split", "Convolution", "PReLU", "ReLU", "PixelShuffle", "Interp", "BinaryOp"}
    | {"Eltwise", "Noop"}
)
_CUGAN_TYPES = frozenset(
    {"Input", "Split", "Convolution", "Deconvolution", "InnerProduct", "Pooling", "BinaryOp"}
    | {"Crop", "PixelShuffle", "ReLU", "Sigmoid", "Eltwise", "Noop", "Concat", "Padding"}
)


def match_rrdbnet(layers: list[NcnnLayer], path: Path) -> NcnnArch | Misfit:
    from spandrel.architectures.ESRGAN import ESRGAN

    convs = convolutions(layers)
    if len(convs) < 20:
        return Misfit(0, "too few convolutions for an RRDBNet")
    resizes = [layer for layer in layers if layer.type == "Interp"]
    factors = {interp_factor(layer) for layer in resizes}
    trunk_scale = 3 if factors == {(1, 3.0)} and len(resizes) == 1 else 2 ** len(resizes)
    first_in, features = in_channels(convs[0]), convs[0].int_param(0, 0)
    out_channels = convs[-1].int_param(0, 0)
    # Real-ESRGAN's x2/x1 models pixel-unshuffle the input first: 4x or 16x the channels.
    shuffle = {12: 2, 48: 4}.get(first_in)
    blocks = (len(convs) - 4 - max(len(resizes), 1 if trunk_scale == 3 else 0)) // 15
    if blocks < 1 or (shuffle and trunk_scale < shuffle):
        return Misfit(0, "too few convolutions for an RRDBNet")
    kwargs = {"in_nc": first_in, "out_nc": out_channels, "num_filters": features}
    kwargs |= {"num_blocks": blocks, "scale": trunk_scale, "shuffle_factor": shuffle}
    vocabulary = _RRDB_TYPES | (_RRDB_UNSHUFFLE_TYPES if shuffle else frozenset())
    expected = learned_shapes(ESRGAN(**kwargs))

    def check(layer: NcnnLayer) -> str | None:
        if layer.type == "Interp" and interp_factor(layer) not in ((1, 2.0), (1, 3.0)):
            return "a resize that is not nearest-neighbour x2 (or x3)"
        return check_slope(layer, (0.2,), "RRDBNet")

    misfit = fit(layers, "RRDBNet", vocabulary, expected, check)
    if misfit is not None:
        return misfit
    scale = trunk_scale // (shuffle or 1)
    return NcnnArch(
        "RRDBNet",
        scale,
        f"RRDBNet (ESRGAN), {blocks} blocks, {features} features",
        lambda: ESRGAN(**kwargs),
    )


def match_compact(layers: list[NcnnLayer], path: Path) -> NcnnArch | Misfit:
    from spandrel.architectures.Compact import Compact

    convs = convolutions(layers)
    shuffles = [layer for layer in layers if layer.type == "PixelShuffle"]
    if len(convs) < 3 or len(shuffles) != 1:
        return Misfit(0, "SRVGGNetCompact ends in one pixel shuffle")
    upscale = shuffles[0].int_param(0, 1)
    features, first_in = convs[0].int_param(0, 0), in_channels(convs[0])
    out_channels = convs[-1].int_param(0, 0) // (upscale * upscale)
    act = compact_activation(layers)
    kwargs = {"num_in_ch": first_in, "num_out_ch": out_channels, "num_feat": features}
    kwargs |= {"num_conv": len(convs) - 2, "upscale": upscale, "act_type": act}
    expected = learned_shapes(Compact(**kwargs))
    slopes = {"relu": (0.0,), "leakyrelu": (0.1,), "prelu": ()}[act]

    def check(layer: NcnnLayer) -> str | None:
        if layer.type == "Interp" and interp_factor(layer) != (1, float(upscale)):
            return f"a resize that is not the nearest-neighbour x{upscale} of the input"
        return check_slope(layer, slopes, f"this SRVGGNetCompact ({act})")

    misfit = fit(layers, "SRVGGNetCompact", _COMPACT_TYPES, expected, check)
    if misfit is not None:
        return misfit
    return NcnnArch(
        "SRVGGNetCompact",
        upscale,
        f"SRVGGNetCompact, {len(convs) - 2} convs, {features} features, {act}",
        lambda: Compact(**kwargs),
        detectable=act == "prelu",
    )


def compact_activation(layers: list[NcnnLayer]) -> str:
    """prelu, leakyrelu or relu: from the first activation after the first convolution."""
    for layer in layers:
        if layer.type == "PReLU":
            return "prelu"
        found = activation(layer)
        if found is not None:
            return "leakyrelu" if found[1] else "relu"
    return "prelu"


def match_realcugan(layers: list[NcnnLayer], path: Path) -> NcnnArch | Misfit:
    from upres.models.zoo.realcugan import build_upcunet

    if not any(layer.type == "InnerProduct" for layer in layers):
        return Misfit(0, "Real-CUGAN has squeeze-and-excitation (InnerProduct) layers")
    pro = is_pro(path)

    def check(layer: NcnnLayer) -> str | None:
        return check_slope(layer, (0.1,), "Real-CUGAN")

    furthest = Misfit(0, "no Real-CUGAN scale fits")
    for scale in (2, 3, 4):
        expected = learned_shapes(build_upcunet(scale, pro=pro))
        misfit = fit(layers, f"Real-CUGAN x{scale}", _CUGAN_TYPES, expected, check)
        if misfit is None:
            edition = "pro" if pro else "se"
            return NcnnArch(
                "Real-CUGAN",
                scale,
                f"Real-CUGAN x{scale} ({edition})",
                lambda scale=scale: build_upcunet(scale, pro=pro),
            )
        furthest = max(furthest, misfit, key=lambda m: m.index)
    return furthest


def is_pro(path: Path) -> bool:
    """Real-CUGAN pro and se graphs are identical; ncnn callers tell them by name, so do we."""
    names = (path.stem, path.parent.name)
    return any(re.search(r"(^|[^a-z])pro([^a-z]|$)", name.lower()) for name in names)


MATCHERS = (match_rrdbnet, match_compact, match_realcugan)


def recognise(param_path: str | Path) -> NcnnArch:
    """The family and hyperparameters of an ncnn graph, or a ModelLoadError naming a layer."""
    path = Path(param_path)
    layers = parse_param(path)
    for layer in layers:
        if layer.type not in _WEIGHTLESS and layer.type not in _READERS:
            raise ModelLoadError(path, f"layer {layer.name}: unsupported ncnn layer {layer.type}")
    misfits = []
    for matcher in MATCHERS:
        try:
            found = matcher(layers, path)
        except (ValueError, TypeError, ZeroDivisionError) as error:
            found = Misfit(0, f"cannot read its hyperparameters ({error})")
        if isinstance(found, NcnnArch):
            return found
        misfits.append(found)
    closest = max(misfits, key=lambda m: m.index)
    layer = layers[closest.index] if layers else None
    where = f"layer {layer.name} ({layer.type})" if layer else "an empty graph"
    raise ModelLoadError(
        path,
        f"not an ncnn graph upres can convert ({FAMILIES}): {where} did not fit: {closest.why}",
    )


def convert(param_path: Path, bin_path: Path, arch: NcnnArch) -> dict[str, torch.Tensor]:
    """The ncnn weights in the recognised network's state dict (buffers from the network)."""
    from upres.models.ncnn import ncnn_to_state_dict

    network = arch.build()
    buffers = {name for name, _ in network.named_buffers()}
    state = ncnn_to_state_dict(param_path, bin_path, network.state_dict(), keep=buffers)
    return {key: value.contiguous() for key, value in state.items()}


def descriptor(arch: NcnnArch, state: dict[str, torch.Tensor], source: Path):
    """The spandrel descriptor of the converted network, built from what was recognised.

    Where spandrel's detection sees the same network in the weights, its descriptor is used
    (size requirements, tags); a Compact without PReLU is described here, since detection
    would take it for a PReLU one and run the wrong activation.
    """
    from spandrel import ImageModelDescriptor
    from spandrel.architectures.Compact import CompactArch

    from upres.models.loader import descriptor_from_state_dict

    if arch.detectable:
        return descriptor_from_state_dict(state, source)
    network = arch.build()
    network.load_state_dict(state, strict=True)
    found = ImageModelDescriptor(
        network,
        state,
        architecture=CompactArch(),
        purpose="SR" if arch.scale > 1 else "Restoration",
        tags=arch.description.split(", ")[1:],
        supports_half=True,
        supports_bfloat16=True,
        scale=arch.scale,
        input_channels=network.num_in_ch,
        output_channels=network.num_out_ch,
    )
    found.eval()
    return found
