"""Inference-only subclasses of spandrel's DAT modules (same weights, same maths).

DAT's spatial attention computes its dynamic position bias (a small MLP) in every call and
its shifted-window masks for every block and every input size; here both are built once.
On a CPU it runs through the fused kernel of `native/` where that is built (reading the
windows where they lie, shift included); otherwise through `windows.window_attention`, as
the Swin family's does. After a shift only the border windows get a mask.

Tokens (B, H*W, C) are already pixels in channels-last order: the convolutions between the
attention steps take them as channels-last views, where the reference makes a contiguous
NCHW copy before each convolution and another after it (a fifth of DAT-light's CPU time).
"""

from __future__ import annotations

import spandrel.architectures.DAT.__arch.DAT as dat
import torch
import torch.nn.functional as F

from upres.engine.fast import native
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
        x = window_attention(q, k, v, self.position_bias_for(n), self.scale, border)
        x = x.view(batch, rows, cols, heads, hs, ws, -1).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(batch, height, width, channels)

    def position_bias_for(self, n: int) -> torch.Tensor | None:
        """The dynamic position bias (heads, N, N) in float32, made by its MLP once per
        weights (the same tensor every call: the native kernel keeps its transpose)."""
        if not self.position_bias:
            return None
        return self.cached_bias(
            lambda: table_bias(self.pos(self.rpe_biases), self.relative_position_index, n),
            *self.pos.parameters(),
        )


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
        attended = self.attend_branches(qkv)[:, :H, :W].reshape(B, L, C)

        conv_x = self.dwconv(v)
        # Adaptive Interaction Module: a channel map from the convolution, a spatial map from
        # the attention, each gating the other branch.
        channel_map = squeeze_gate(self.channel_interaction, conv_x.mean((2, 3)))
        spatial_map = self.spatial_interaction(pixels(attended, H, W))
        attended = attended * torch.sigmoid(channel_map).unsqueeze(1)
        conv_x = torch.sigmoid(spatial_map) * conv_x
        return self.proj(attended + tokens(conv_x))

    def attend_branches(self, qkv: torch.Tensor) -> torch.Tensor:
        """(3, B, H, W, C) q, k, v (H, W multiples of the windows) -> (B, H, W, C): the first
        half of the channels attends in (split_y x split_x) windows, the second in windows
        turned by 90 degrees; each shifted by its own roll in shifted blocks."""
        height, width, channels = qkv.shape[2:]
        half = channels // 2
        shifted = self.shifted()
        masks = self.border_masks(height, width, qkv.dtype) if shifted else (None, None)
        (split_y, split_x), (shift_y, shift_x) = self.split_size, self.shift_size
        branches = [
            (qkv[..., :half], (split_y, split_x), (shift_y, shift_x), masks[0]),
            (qkv[..., half:], (split_x, split_y), (shift_x, shift_y), masks[1]),
        ]
        if not shifted:
            branches = [(part, window, (0, 0), None) for part, window, _, _ in branches]
        heads = self.attns[0].num_heads
        fused = not torch.is_grad_enabled()  # the kernel has no backward (nor the bias one)
        if fused and all(native.supports(part, heads, window) for part, window, _, _ in branches):
            # The fused kernel reads the windows where they are and writes each branch into
            # its half of the output: no window copies, rolls or concatenation.
            out = qkv.new_empty(qkv.shape[1:])
            for (part, window, shift, border), attention, target in zip(
                branches, self.attns, (out[..., :half], out[..., half:]), strict=True
            ):
                bias = attention.position_bias_for(window[0] * window[1])
                native.window_attention(
                    part, target, window, shift, heads, bias, attention.scale, border
                )
            return out
        results = []
        for (part, _, shift, border), attention in zip(branches, self.attns, strict=True):
            rolled = torch.roll(part, (-shift[0], -shift[1]), (2, 3)) if shifted else part
            result = attention.attend(rolled, border)
            results.append(torch.roll(result, shift, (1, 2)) if shifted else result)
        return torch.cat(results, dim=3)

    def shifted(self) -> bool:
        """The reference's rule for which blocks shift their windows."""
        even_group = self.rg_idx % 2 == 0
        if even_group:
            return self.b_idx > 0 and (self.b_idx - 2) % 4 == 0
        return self.b_idx % 4 == 0


class DATAdaptiveChannelAttention(dat.Adaptive_Channel_Attention):
    def forward(self, x, H, W):
        B, _, C = x.shape
        heads, width = self.num_heads, C // self.num_heads
        qkv = self.qkv(x)  # (B, N, 3C) tokens; each third's channels are head-major
        # The reference normalises q and k along N, multiplies them head by head and applies
        # each (d x d) result to its head of v. Here, per image: one (C x C) product of the
        # raw q and k, whose diagonal blocks are the heads' products, divided by the outer
        # product of the norms (rather than normalised copies of q and k); then the heads'
        # maps applied to v as one block-diagonal (C x C) matrix. 2-D matmuls take the
        # strided token slices as they are (batched ones would copy them first).
        squares = qkv[..., : 2 * C].to(torch.float32, copy=True).square_()  # one temporary
        norms = squares.sum(1).sqrt().clamp_min(1e-12)  # as F.normalize
        q_norm, k_norm = norms.view(B, 2, heads, width).unbind(1)
        attended = []
        for image, (qn, kn) in enumerate(zip(q_norm, k_norm, strict=True)):
            q, k, v = qkv[image].split(C, dim=-1)
            if q.dtype == torch.float16:  # raw products could pass fp16's 65504: normalise first
                q, k, qn, kn = (
                    q / qn.flatten(),
                    k / kn.flatten(),
                    torch.ones_like(qn),
                    torch.ones_like(kn),
                )
            products = (q.t() @ k).view(heads, width, heads, width)
            attn = torch.diagonal(products, dim1=0, dim2=2).permute(2, 0, 1)  # (heads, d, d)
            attn = (attn / (qn[..., :, None] * kn[..., None, :]) * self.temperature).softmax(-1)
            attended.append(v @ torch.block_diag(*attn.transpose(-2, -1)).to(v.dtype))
        attended = torch.stack(attended)

        # V as the reference's (B, C, H, W) image is the token-major V as a channels-last one.
        conv_x = self.dwconv(pixels(qkv[..., 2 * C :], H, W))
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
