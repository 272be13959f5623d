"""Recognising ncnn graphs of any depth and width, checked against the ncnn runtime.

The packaged pairs cover one width each; here random spandrel networks of other block
counts, widths, scales and activations are written out as ncnn pairs exactly as the
usual exporters lay them out (Split before every reused blob, fused leaky ReLU, Eltwise
residual scaling), recognised from the .param alone, converted, and run by both ncnn and
PyTorch on a real photo crop: >= 100 dB apart, or the recognition read a shape wrong.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN

from test_offline_models import MIN_AGREEMENT_DB, agreement_db, ncnn_forward, photo_crop
from upres.errors import ModelLoadError
from upres.models.loader import load_model
from upres.models.ncnn_graph import recognise


@dataclass
class Graph:
    """Layers over logical blobs; `write` inserts the Split layers ncnn needs."""

    layers: list[tuple[str, str, list[str], list[str], str]] = field(default_factory=list)
    weights: bytearray = field(default_factory=bytearray)
    count: int = 0

    def add(self, kind: str, inputs: list[str], params: str = "", output: str = "") -> str:
        self.count += 1
        output = output or f"b{self.count}"
        self.layers.append((kind, f"{kind.lower()}_{self.count}", inputs, [output], params))
        return output

    def conv(self, x: str, conv: torch.nn.Conv2d, slope: float | None = None) -> str:
        out, cin, kh, kw = conv.weight.shape
        params = f"0={out} 1={kw} 11={kh} 4={kh // 2} 5=1 6={out * cin * kh * kw}"
        if slope is not None:
            params += f" 9=2 -23310=1,{slope}"
        self.tagged(conv.weight)
        self.raw(conv.bias)
        return self.add("Convolution", [x], params)

    def tagged(self, tensor: torch.Tensor) -> None:
        self.weights += struct.pack("<I", 0) + tensor.detach().numpy().astype("<f4").tobytes()

    def raw(self, tensor: torch.Tensor) -> None:
        self.weights += tensor.detach().numpy().astype("<f4").tobytes()

    def write(self, path: Path) -> Path:
        uses = Counter(blob for _, _, inputs, _, _ in self.layers for blob in inputs)
        lines, handed = [], Counter()
        for kind, name, inputs, outputs, params in self.layers:
            renamed = []
            for blob in inputs:
                renamed.append(f"{blob}_s{handed[blob]}" if uses[blob] > 1 else blob)
                handed[blob] += 1
            lines.append((kind, name, renamed, outputs, params))
            for blob in outputs:
                if uses[blob] > 1:
                    copies = [f"{blob}_s{i}" for i in range(uses[blob])]
                    lines.append(("Split", f"split_{blob}", [blob], copies, ""))
        blobs = {b for _, _, ins, outs, _ in lines for b in (*ins, *outs)}
        text = ["7767517", f"{len(lines)} {len(blobs)}"]
        for kind, name, inputs, outputs, params in lines:
            row = [kind, name, str(len(inputs)), str(len(outputs)), *inputs, *outputs, params]
            text.append(" ".join(item for item in row if item))
        path.write_text("\n".join(text) + "\n")
        path.with_suffix(".bin").write_bytes(bytes(self.weights))
        return path


def export_compact(network: Compact, act: str, scale: int, path: Path) -> Path:
    graph = Graph()
    x = graph.add("Input", [], "0=0", output="data")
    h = x
    for module in network.body:
        if isinstance(module, torch.nn.Conv2d):
            h = graph.conv(h, module)
        elif isinstance(module, torch.nn.PReLU):
            graph.raw(module.weight)
            h = graph.add("PReLU", [h], f"0={module.num_parameters}")
        else:
            h = graph.add("ReLU", [h], "0=0.1" if act == "leakyrelu" else "")
    h = graph.add("PixelShuffle", [h], f"0={scale}")
    base = graph.add("Interp", [x], f"0=1 1={float(scale)} 2={float(scale)}")
    graph.add("BinaryOp", [h, base], "0=0", output="output")
    return graph.write(path)


def export_rrdbnet(network: ESRGAN, path: Path) -> Path:
    """ESRGAN's RRDBNet (spandrel's layout: model.0 conv, model.1 trunk, up-convs, HR)."""
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    graph = Graph()
    x = graph.add("Input", [], "0=0", output="data")
    fea = graph.conv(x, convs.pop(0))
    h = fea
    while len(convs) > 1 + 2 + int(np.log2(network.scale)):  # RRDB blocks remain
        block_in = h
        for _ in range(3):  # three dense blocks
            rdb_in, grown = h, [h]
            for step in range(5):
                cat = grown[0] if len(grown) == 1 else graph.add("Concat", grown, "0=0")
                h = graph.conv(cat, convs.pop(0), None if step == 4 else 0.2)
                grown = [*grown, h]
            h = graph.add("Eltwise", [h, rdb_in], "0=1 -23301=2,0.2,1.0")
        h = graph.add("Eltwise", [h, block_in], "0=1 -23301=2,0.2,1.0")
    h = graph.conv(h, convs.pop(0))
    h = graph.add("BinaryOp", [fea, h], "0=0")
    for _ in range(int(np.log2(network.scale))):
        h = graph.add("Interp", [h], "0=1 1=2.0 2=2.0")
        h = graph.conv(h, convs.pop(0), 0.2)
    h = graph.conv(h, convs.pop(0), 0.2)
    last = convs.pop(0)
    out, cin, kh, kw = last.weight.shape
    graph.tagged(last.weight)
    graph.raw(last.bias)
    params = f"0={out} 1={kw} 4=1 5=1 6={out * cin * kh * kw}"
    graph.add("Convolution", [h], params, output="output")
    return graph.write(path)


def agree(param: Path, crop: int) -> float:
    x = photo_crop(crop)
    expected = ncnn_forward(param, param.with_suffix(".bin"), x)
    network = load_model(param).descriptor.model.eval()
    with torch.inference_mode():
        actual = network(torch.from_numpy(x)[None])[0].numpy()
    assert actual.shape == expected.shape
    return agreement_db(actual, expected)


@pytest.mark.parametrize(
    ("features", "convs", "scale", "act"),
    [(24, 5, 2, "prelu"), (16, 3, 3, "leakyrelu"), (32, 8, 4, "relu")],
)
def test_compact_of_any_depth_and_width(
    tmp_path: Path, features: int, convs: int, scale: int, act: str
) -> None:
    torch.manual_seed(features)
    network = Compact(num_feat=features, num_conv=convs, upscale=scale, act_type=act)
    param = export_compact(network, act, scale, tmp_path / f"compact-{act}.param")
    arch = recognise(param)
    assert (arch.family, arch.scale) == ("SRVGGNetCompact", scale)
    assert arch.description == f"SRVGGNetCompact, {convs} convs, {features} features, {act}"
    assert agree(param, 24) >= MIN_AGREEMENT_DB


@pytest.mark.parametrize(("features", "blocks", "scale"), [(32, 2, 4), (16, 1, 2)])
def test_rrdbnet_of_any_block_count_and_width(
    tmp_path: Path, features: int, blocks: int, scale: int
) -> None:
    torch.manual_seed(blocks)
    network = ESRGAN(num_filters=features, num_blocks=blocks, scale=scale)
    param = export_rrdbnet(network, tmp_path / "rrdb.param")
    arch = recognise(param)
    assert (arch.family, arch.scale) == ("RRDBNet", scale)
    assert arch.description == f"RRDBNet (ESRGAN), {blocks} blocks, {features} features"
    assert agree(param, 12) >= MIN_AGREEMENT_DB


def test_a_compact_with_a_foreign_activation_slope_is_refused(tmp_path: Path) -> None:
    network = Compact(num_feat=8, num_conv=2, upscale=2, act_type="leakyrelu")
    param = export_compact(network, "leakyrelu", 2, tmp_path / "slope.param")
    param.write_text(param.read_text().replace("0=0.1", "0=0.3", 1))
    with pytest.raises(ModelLoadError, match=r"layer relu_\d+ \(ReLU\) did not fit: .*slope 0.3"):
        recognise(param)
