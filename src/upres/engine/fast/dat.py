"""Inference-only subclasses of spandrel's DAT modules (same weights, same maths).

DAT's spatial attention computes its dynamic position bias (a small MLP) in every call and
its shifted-window masks for every block and every input size; here both are built once.
Its attention runs through `windows.window_attention`, as the Swin family's does: on a CPU
two matmuls and a softmax in bounded slices of windows (its 10-wide heads are where SDPA's
CPU kernel is slowest), SDPA on a GPU; after a shift only the border windows get a mask.

Tokens (B, H*W, C) are already pixels in channels-last order: the convolutions between the
attention steps take them as channels-last views, where the reference makes a contiguous
NCHW copy before each convolution and another after it (a fifth of DAT-light's CPU time).
"""

from __future__ import annotations

import spandrel.architectures.DAT.__arch.DAT as dat
import torch
import torch.nn.functional as F

from upres.engine.fast.swin import CachedBias, table_bias
from upres.engine.fast.windows import Border, shifted_border, window_attention


class DATSpatialAttention(dat.Spatial_Attention, CachedBias):
    def forward(self, qkv, H, W, mask=None):
        """The reference signature: (3, B, H*W, C) tokens -> (B, H, W, C)."""
        border = None if mask is None else masked_windows(mask, qkv.dtype, qkv.device)
        return self.attend(qkv.reshape(3, qkv.shape[1], H, W, qkv.shape[-1]), border)

    def attend(self, qkv: torch.Tensor, border: Border | None = None) -> torch.Tensor:
        """(3, B, H, W, C) q, k, v as images (any strides) -> (B, H, W, C) attended;
        `border`: the masked windows of a shifted block and their masks.

        One copy cuts the windows and heads out of all three at once, and one puts them
        back; the reference makes three copies of each of q, k and v and two on the way out.
        """
        _, batch, height, width, channels = qkv.shape
        hs, ws, heads = self.H_sp, self.W_sp, self.num_heads
        rows, cols, n = height // hs, width // ws, hs * ws
        windows = qkv.reshape(3, batch, rows, hs, cols, ws, heads, channels // heads)
        windows = windows.permute(0, 1, 2, 4, 6, 3, 5, 7)  # 3, B, rows, cols, heads, hs, ws, d
        q, k, v = windows.reshape(3, batch, rows * cols, heads, n, channels // heads)
        x = window_attention(q, k, v, self.position_bias_for(n, q.dtype), self.scale, border)
        x = x.view(batch, rows, cols, heads, hs, ws, -1).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(batch, height, width, channels)

    def position_bias_for(self, n: int, dtype: torch.dtype) -> torch.Tensor | None:
        """The dynamic position bias (heads, N, N), made by its MLP once per weights."""
        if not self.position_bias:
            return None
        bias = self.cached_bias(
            lambda: table_bias(self.pos(self.rpe_biases), self.relative_position_index, n),
            *self.pos.parameters(),
        )
        return bias.to(dtype)


def pixels(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) tokens as a (B, C, H, W) image: a channels-last view, not a copy."""
    batch, _, channels = tokens.shape
    return tokens.view(batch, height, width, channels).permute(0, 3, 1, 2)


def tokens(image: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) back to (B, H*W, C): free for a channels-last image."""
    batch, channels = image.shape[:2]
    return image.permute(0, 2, 3, 1).reshape(batch, -1, channels)


class DATAdaptiveSpatialAttention(dat.Adaptive_Spatial_Attention):
    def border_masks(self, height: int, width: int, dtype: torch.dtype) -> tuple[Border, Border]:
        """The two branches' masked windows after the shift: as in a Swin block, only the
        last row and column of windows wrap around (the reference builds and adds a mask
        for every window). Branch 1's windows are branch 0's turned by 90 degrees."""
        (split_y, split_x), (shift_y, shift_x) = self.split_size, self.shift_size
        device = next(self.parameters()).device
        borders = []
        for window, shift in (
            ((split_y, split_x), (shift_y, shift_x)),
            ((split_x, split_y), (shift_x, shift_y)),
        ):
            rows, cols = height // window[0], width // window[1]
            borders.append(shifted_border(window, shift, rows, cols, device, dtype))
        return borders[0], borders[1]

    def forward(self, x, H, W):
        B, L, C = x.shape
        qkv = self.qkv(x).reshape(B, H, W, 3, C).permute(3, 0, 1, 2, 4)  # 3, B, H, W, C: a view
        v = qkv[2].permute(0, 3, 1, 2)  # V without partition, as a (B, C, H, W) view
        split = max(self.split_size[0], self.split_size[1])
        pad_r, pad_b = (split - W % split) % split, (split - H % split) % split
        if pad_r or pad_b:
            qkv = F.pad(qkv, (0, 0, 0, pad_r, 0, pad_b))
        _H, _W = H + pad_b, W + pad_r
        half = C // 2
        if self.shifted():
            shift = (self.shift_size[0], self.shift_size[1])
            qkv_0 = torch.roll(qkv[..., :half], (-shift[0], -shift[1]), (2, 3))
            qkv_1 = torch.roll(qkv[..., half:], (-shift[1], -shift[0]), (2, 3))
            # Made from the size (at the network's own size, equal to its mask buffers).
            masks = self.border_masks(_H, _W, qkv.dtype)
            x1 = torch.roll(self.attns[0].attend(qkv_0, masks[0]), shift, (1, 2))
            x2 = torch.roll(self.attns[1].attend(qkv_1, masks[1]), (shift[1], shift[0]), (1, 2))
        else:
            x1 = self.attns[0].attend(qkv[..., :half])
            x2 = self.attns[1].attend(qkv[..., half:])
        attended = torch.cat([x1[:, :H, :W], x2[:, :H, :W]], dim=3).reshape(B, L, C)

        conv_x = self.dwconv(v)
        # Adaptive Interaction Module: a channel map from the convolution, a spatial map from
        # the attention, each gating the other branch.
        channel_map = squeeze_gate(self.channel_interaction, conv_x.mean((2, 3)))
        spatial_map = self.spatial_interaction(pixels(attended, H, W))
        attended = attended * torch.sigmoid(channel_map).unsqueeze(1)
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
        qkv = qkv.permute(2, 0, 3, 4, 1)  # 3, B, heads, d, N
        v = qkv[2]
        v_image = v.reshape(B, C, N).view(B, C, H, W)  # the reference's own channel order
        q, k = F.normalize(qkv[:2], dim=-1)  # both in one pass
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        attended = (attn.softmax(dim=-1) @ v).permute(0, 3, 1, 2).reshape(B, N, C)

        conv_x = self.dwconv(v_image)
        channel_map = squeeze_gate(self.channel_interaction, attended.mean(1))
        spatial_map = tokens(self.spatial_interaction(conv_x))  # (B, N, 1)
        attended = attended * torch.sigmoid(spatial_map)
        conv_x = conv_x * torch.sigmoid(channel_map)[..., None, None]
        return self.proj(attended + tokens(conv_x))


def squeeze_gate(interaction: torch.nn.Sequential, pooled: torch.Tensor) -> torch.Tensor:
    """The reference's channel interaction (pool, 1x1 conv, BatchNorm, GELU, 1x1 conv) on the
    already pooled (B, C): as linears on a vector, not convolutions of a 1x1 image, each of
    which costs a convolution's fixed overhead. BatchNorm with its running statistics, as in
    inference (what these classes are for). Returns (B, C)."""
    _, down, norm, act, up = interaction
    x = F.linear(pooled, down.weight.flatten(1), down.bias)
    x = F.batch_norm(
        x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps
    )
    return F.linear(act(x), up.weight.flatten(1), up.bias)


class DATSpatialGate(dat.SpatialGate):
    def forward(self, x, H, W):
        x1, x2 = x.chunk(2, dim=-1)
        return x1 * tokens(self.conv(pixels(self.norm(x2), H, W)))


def masked_windows(mask: torch.Tensor, dtype: torch.dtype, device: torch.device) -> Border:
    """A full (windows, N, N) mask, as the reference passes one, as the windows it masks."""
    index = mask.flatten(1).any(1).nonzero().flatten().tolist()
    return index, mask[index].to(device=device, dtype=dtype)


FAST_CLASSES: dict[type, type] = {
    dat.Spatial_Attention: DATSpatialAttention,
    dat.Adaptive_Spatial_Attention: DATAdaptiveSpatialAttention,
    dat.Adaptive_Channel_Attention: DATAdaptiveChannelAttention,
    dat.SpatialGate: DATSpatialGate,
}
