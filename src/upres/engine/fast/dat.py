"""Inference-only subclasses of spandrel's DAT modules (same weights, same maths).

DAT's spatial attention computes its dynamic position bias (a small MLP) in every call and
its shifted-window masks for every block and every input size; here both are built once
and attention runs through `scaled_dot_product_attention`.
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import spandrel.architectures.DAT.__arch.DAT as dat
import torch
import torch.nn.functional as F

from upres.engine.fast.swin import CachedBias, table_bias


class DATSpatialAttention(dat.Spatial_Attention, CachedBias):
    def forward(self, qkv, H, W, mask=None):
        channels = qkv[0].shape[-1]
        q, k, v = (self.im2win(t, H, W) for t in (qkv[0], qkv[1], qkv[2]))  # (B*nW, h, N, d)
        n, heads = q.shape[2], self.num_heads
        bias = None
        if self.position_bias:
            bias = self.cached_bias(
                lambda: table_bias(self.pos(self.rpe_biases), self.relative_position_index, n),
                *self.pos.parameters(),
            ).to(q.dtype)
        if mask is None:
            mask_4d = None if bias is None else bias.unsqueeze(0)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_4d, scale=self.scale)
        else:
            # Windows and heads folded together so one (1, nW * h, N, N) mask broadcasts.
            windows = mask.shape[0]
            batch = q.shape[0] // windows
            combined = mask.to(q.dtype).unsqueeze(1)
            if bias is not None:
                combined = combined + bias.unsqueeze(0)
            combined = combined.expand(windows, heads, n, n).reshape(1, windows * heads, n, n)
            q, k, v = (t.reshape(batch, windows * heads, n, -1) for t in (q, k, v))
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=combined, scale=self.scale)
            x = x.reshape(batch * windows, heads, n, -1)
        x = x.transpose(1, 2).reshape(-1, self.H_sp * self.W_sp, channels)
        return dat.windows2img(x, self.H_sp, self.W_sp, H, W)


class DATAdaptiveSpatialAttention(dat.Adaptive_Spatial_Attention):
    def calculate_mask(self, H, W, dtype=None):
        # Every shifted block of a network asks for the same masks: build them once, on the
        # module's device, so the caller's `.to(device)` is free too.
        device = next(self.parameters()).device
        return shifted_masks(self, H, W, dtype, device)


@lru_cache(maxsize=8)
def _masks(
    split: tuple[int, int],
    shift: tuple[int, int],
    height: int,
    width: int,
    dtype: torch.dtype | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    # The reference method reads only these two attributes of its module.
    probe = SimpleNamespace(split_size=list(split), shift_size=list(shift))
    masks = dat.Adaptive_Spatial_Attention.calculate_mask(probe, height, width, dtype)
    return masks[0].to(device), masks[1].to(device)


def shifted_masks(module, height: int, width: int, dtype, device: torch.device):
    split = (int(module.split_size[0]), int(module.split_size[1]))
    shift = (int(module.shift_size[0]), int(module.shift_size[1]))
    return _masks(split, shift, height, width, dtype, device)


FAST_CLASSES: dict[type, type] = {
    dat.Spatial_Attention: DATSpatialAttention,
    dat.Adaptive_Spatial_Attention: DATAdaptiveSpatialAttention,
}
