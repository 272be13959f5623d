"""The fast path: the same networks, computed with less waste.

`accelerate` swaps spandrel's Swin-family attention modules for the subclasses in
`swin.py` and `dat.py` (same weights, same maths, cached biases and masks, fused
attention, on a CPU the native kernel of `native/` for narrow heads) and narrow LayerNorms
for `layer_norm.py`'s, and
`FastModule` runs a network under autocast in the planned precision, channels-last (even
transformers spend much of their time in the convolutions of their upsampler). The result
matches the reference fp32 path to >= 80 dB in fp32 and >= 50 dB in bf16/fp16
(tests/test_fast.py, tests/test_engine_fast.py).
"""

from __future__ import annotations

import torch
from torch import nn

from upres.engine.fast import dat, layer_norm, swin

FAST_CLASSES: dict[type, type] = {
    **swin.FAST_CLASSES,
    **dat.FAST_CLASSES,
    **layer_norm.FAST_CLASSES,
}


def accelerate(network: nn.Module) -> int:
    """Swap known modules for their fast subclasses in place; returns how many were swapped."""
    swapped = 0
    for module in network.modules():
        fast = FAST_CLASSES.get(type(module))
        if fast is not None:
            module.__class__ = fast
            swapped += 1
    return swapped


class FastModule(nn.Module):
    """Runs `network` (fp32 weights) under autocast to `dtype`; outputs come back as float32."""

    def __init__(self, network: nn.Module, dtype: torch.dtype, channels_last: bool = True) -> None:
        super().__init__()
        self.network = network
        self.dtype = dtype
        self.channels_last = channels_last
        if channels_last:
            network.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        low_precision = self.dtype != torch.float32
        with torch.autocast(x.device.type, dtype=self.dtype, enabled=low_precision):
            result = self.network(x.float())
        if isinstance(result, (tuple, list)):
            result = result[0]
        return result.float().contiguous()
