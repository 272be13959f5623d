"""The benchmarked networks at their published sizes, with random weights (timing only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from spandrel.architectures.Compact import Compact
from spandrel.architectures.DAT import DAT
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.HAT import HAT
from spandrel.architectures.Swin2SR import Swin2SR
from spandrel.architectures.SwinIR import SwinIR

# The classical "M" transformer body shared by SwinIR-M, Swin2SR and HAT.
CLASSICAL_M = dict(
    embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, mlp_ratio=2, img_range=1.0, upscale=4
)


@dataclass(frozen=True)
class BenchModel:
    name: str
    build: Callable[[], torch.nn.Module]


BENCH_MODELS: list[BenchModel] = [
    BenchModel(
        "SwinIR-M x4",
        lambda: SwinIR(img_size=48, window_size=8, upsampler="pixelshuffle", **CLASSICAL_M),
    ),
    BenchModel(
        "Swin2SR x4",
        lambda: Swin2SR(img_size=64, window_size=8, upsampler="pixelshuffle", **CLASSICAL_M),
    ),
    BenchModel(
        "HAT x4",
        lambda: HAT(
            img_size=64,
            window_size=16,
            compress_ratio=3,
            squeeze_factor=30,
            conv_scale=0.01,
            overlap_ratio=0.5,
            upsampler="pixelshuffle",
            **CLASSICAL_M,
        ),
    ),
    BenchModel(
        "DAT-light x4",
        lambda: DAT(
            img_size=64,
            embed_dim=60,
            split_size=[8, 32],
            depth=[18],
            num_heads=[6],
            expansion_factor=2.0,
            resi_connection="3conv",
            upsampler="pixelshuffledirect",
            upscale=4,
        ),
    ),
    BenchModel(
        "RRDBNet x4", lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    ),
    BenchModel(
        "Compact x4",
        lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4),
    ),
]


def select(names: list[str] | None) -> list[BenchModel]:
    """Models whose name contains any of `names` (case-insensitive); all when none given."""
    if not names:
        return BENCH_MODELS
    wanted = [n.lower() for n in names]
    chosen = [m for m in BENCH_MODELS if any(w in m.name.lower() for w in wanted)]
    if not chosen:
        known = ", ".join(m.name for m in BENCH_MODELS)
        raise ValueError(f"no benchmark model matches {', '.join(names)}; known: {known}")
    return chosen
