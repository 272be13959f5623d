"""Inference-only subclasses of spandrel's DAT modules (same weights, same maths).

DAT's spatial attention computes its dynamic position bias (a small MLP) in every call and
its shifted-window masks for every block and every input size; here both are built once.
Its heads are narrow (DAT-light: 10 channels), where two matmuls and a softmax beat
`scaled_dot_product_attention`'s CPU kernel (built for wide heads) by about 15%; the scores
are made a slice of windows at a time, so memory stays bounded on any tile.

Tokens (B, H*W, C) are already pixels in channels-last order: the convolutions between the
attention steps take them as channels-last views, where the reference makes a contiguous
NCHW copy before each convolution and another after it (a fifth of DAT-light's CPU time).
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
        if mask is None:  # every window alike: all of them along dim 1, bias (1, 1, h, N, N)
            combined = None if bias is None else bias[None, None]
            windows = q.shape[0]
        else:  # one mask per window position: (1, nW, h, N, N)
            windows = mask.shape[0]
            combined = mask.to(q.dtype).unsqueeze(1)
            if bias is not None:
                combined = combined + bias.unsqueeze(0)
            combined = combined.unsqueeze(0)
        q, k, v = (t.reshape(-1, windows, heads, n, t.shape[-1]) for t in (q, k, v))
        x = narrow_head_attention(q, k, v, combined, self.scale)
        x = x.reshape(-1, heads, n, x.shape[-1])
        x = x.transpose(1, 2).reshape(-1, self.H_sp * self.W_sp, channels)
        return dat.windows2img(x, self.H_sp, self.W_sp, H, W)


SCORES_BYTES = 16 * 2**20  # attention scores made at once: bounded, whatever the tile


def narrow_head_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v over (B, windows, heads, N, d), a slice of windows at a
    time along dim 1 (`bias` broadcasts: (1, 1 or windows, heads, N, N))."""
    batch, windows, heads, n, _ = q.shape
    step = max(1, SCORES_BYTES // (batch * heads * n * n * 4))
    out: torch.Tensor | None = None
    for start in range(0, windows, step):
        part = slice(start, start + step)
        scores = torch.matmul(q[:, part] * scale, k[:, part].transpose(-2, -1))
        if bias is not None:
            scores = scores + (bias if bias.shape[1] == 1 else bias[:, part])
        result = torch.matmul(scores.softmax(-1), v[:, part])
        if out is None:
            if step >= windows:
                return result
            out = result.new_empty((batch, windows, *result.shape[2:]))
        out[:, part] = result
    assert out is not None
    return out


def pixels(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) tokens as a (B, C, H, W) image: a channels-last view, not a copy."""
    batch, _, channels = tokens.shape
    return tokens.view(batch, height, width, channels).permute(0, 3, 1, 2)


def tokens(image: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) back to (B, H*W, C): free for a channels-last image."""
    batch, channels = image.shape[:2]
    return image.permute(0, 2, 3, 1).reshape(batch, -1, channels)


class DATAdaptiveSpatialAttention(dat.Adaptive_Spatial_Attention):
    def calculate_mask(self, H, W, dtype=None):
        # Every shifted block of a network asks for the same masks: build them once, on the
        # module's device, so the caller's `.to(device)` is free too.
        device = next(self.parameters()).device
        return shifted_masks(self, H, W, dtype, device)

    def forward(self, x, H, W):
        B, L, C = x.shape
        qkv = self.qkv(x).reshape(B, -1, 3, C).permute(2, 0, 1, 3)  # 3, B, HW, C
        v = pixels(qkv[2], H, W)  # V without partition
        split = max(self.split_size[0], self.split_size[1])
        pad_r, pad_b = (split - W % split) % split, (split - H % split) % split
        qkv = qkv.reshape(3 * B, H, W, C).permute(0, 3, 1, 2)  # 3B C H W
        qkv = F.pad(qkv, (0, pad_r, 0, pad_b)).reshape(3, B, C, -1).transpose(-2, -1)
        _H, _W = H + pad_b, W + pad_r
        _L = _H * _W
        half = C // 2
        if self.shifted():
            qkv = qkv.reshape(3, B, _H, _W, C)
            shift = (self.shift_size[0], self.shift_size[1])
            qkv_0 = torch.roll(qkv[..., :half], (-shift[0], -shift[1]), (2, 3))
            qkv_1 = torch.roll(qkv[..., half:], (-shift[1], -shift[0]), (2, 3))
            if self.patches_resolution != _H or self.patches_resolution != _W:
                masks = self.calculate_mask(_H, _W, dtype=x.dtype)
            else:
                masks = (self.attn_mask_0, self.attn_mask_1)
            x1 = self.attns[0](qkv_0.reshape(3, B, _L, half), _H, _W, mask=masks[0])
            x2 = self.attns[1](qkv_1.reshape(3, B, _L, half), _H, _W, mask=masks[1])
            x1 = torch.roll(x1, shift, (1, 2))
            x2 = torch.roll(x2, (shift[1], shift[0]), (1, 2))
        else:
            x1 = self.attns[0](qkv[..., :half], _H, _W)
            x2 = self.attns[1](qkv[..., half:], _H, _W)
        attended = torch.cat([x1[:, :H, :W], x2[:, :H, :W]], dim=3).reshape(B, L, C)

        conv_x = self.dwconv(v)
        # Adaptive Interaction Module: a channel map from the convolution, a spatial map from
        # the attention, each gating the other branch.
        channel_map = self.channel_interaction(conv_x).reshape(B, 1, C)
        spatial_map = self.spatial_interaction(pixels(attended, H, W))
        attended = attended * torch.sigmoid(channel_map)
        conv_x = torch.sigmoid(spatial_map) * conv_x
        return self.proj(attended + tokens(conv_x))

    def shifted(self) -> bool:
        """The reference's rule for which blocks shift their windows."""
        even_group = self.rg_idx % 2 == 0
        if even_group:
            return self.b_idx > 0 and (self.b_idx - 2) % 4 == 0
        return self.b_idx % 4 == 0


class DATAdaptiveChannelAttention(dat.Adaptive_Channel_Attention):
    def forward(self, x, H, W):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 4, 1)  # each (B, heads, d, N)
        v_image = v.reshape(B, C, N).view(B, C, H, W)  # the reference's own channel order
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        attended = (attn.softmax(dim=-1) @ v).permute(0, 3, 1, 2).reshape(B, N, C)

        conv_x = self.dwconv(v_image)
        channel_map = self.channel_interaction(pixels(attended, H, W))
        spatial_map = tokens(self.spatial_interaction(conv_x))  # (B, N, 1)
        attended = attended * torch.sigmoid(spatial_map)
        conv_x = conv_x * torch.sigmoid(channel_map)
        return self.proj(attended + tokens(conv_x))


class DATSpatialGate(dat.SpatialGate):
    def forward(self, x, H, W):
        x1, x2 = x.chunk(2, dim=-1)
        return x1 * tokens(self.conv(pixels(self.norm(x2), H, W)))


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
    dat.Adaptive_Channel_Attention: DATAdaptiveChannelAttention,
    dat.SpatialGate: DATSpatialGate,
}
