"""Inference-only subclasses of spandrel's Swin-family modules (SwinIR, Swin2SR, HAT).

They keep every parameter and buffer of the original (a checkpoint loads the same way)
and change only how a forward pass is computed:
- the relative-position bias is built once per device and dtype, not in every call;
- unshifted blocks get no mask, shifted blocks mask only their border windows;
- attention runs through `scaled_dot_product_attention`.
Dropout and drop-path are left out: these classes are for inference.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import spandrel.architectures.HAT.__arch.HAT as hat
import spandrel.architectures.Swin2SR.__arch.Swin2SR as swin2sr
import spandrel.architectures.SwinIR.__arch.SwinIR as swinir
import torch
import torch.nn.functional as F

from upres.engine.fast.windows import WindowLayout, attend, merge, partition

Attention = Callable[[torch.Tensor, WindowLayout | None], torch.Tensor]


class CachedBias:
    """Keeps a module's position bias until its device, dtype or weights change."""

    def cached_bias(self, compute: Callable[[], torch.Tensor], *sources: torch.Tensor):
        device = sources[0].device

        def exact() -> torch.Tensor:
            # Always in the weights' precision: an MLP-made bias (Swin2SR, DAT) computed under
            # autocast would be rounded, and one cache serves every precision.
            with torch.autocast(device.type, enabled=False):
                return compute()

        # Training/autograd must never reuse a detached result; a compiled graph computes
        # the bias itself (the cache's bookkeeping would split the graph).
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return exact()
        key = (device, sources[0].dtype, *map(tensor_state, sources))
        held = self.__dict__.get("_bias_cache")
        if held is None or held[0] != key:
            held = (key, exact())
            self.__dict__["_bias_cache"] = held
        return held[1]


def tensor_state(tensor: torch.Tensor) -> tuple[int, int]:
    """Storage and in-place version: a changed weight changes this (inference tensors have
    no version counter, but they cannot be modified outside inference mode either)."""
    return tensor.data_ptr(), 0 if tensor.is_inference() else tensor._version


def split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, ...]:
    """(B_, N, 3C) -> q, k, v each (B_, heads, N, C / heads)."""
    b, n, c3 = qkv.shape
    return qkv.reshape(b, n, 3, heads, c3 // 3 // heads).permute(2, 0, 3, 1, 4).unbind(0)


def join_heads(x: torch.Tensor) -> torch.Tensor:
    """(B_, heads, N, d) -> (B_, N, heads * d)."""
    b, heads, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, heads * d)


def table_bias(table: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:
    """Gather a (positions, heads) table into a (heads, rows, cols) bias."""
    return table[index.reshape(-1)].view(rows, -1, table.shape[-1]).permute(2, 0, 1).contiguous()


def shifted_window_attention(block, x: torch.Tensor, attention: Attention) -> torch.Tensor:
    """(B, H, W, C) normalised features -> attention output in the same layout."""
    ws, shift = block.window_size, block.shift_size
    batch, height, width, _ = x.shape
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    layout = WindowLayout(batch, height // ws, width // ws, ws, shift)
    x = merge(attention(partition(x, ws), layout if shift else None), layout)
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    return x


# -- SwinIR --------------------------------------------------------------------------


class SwinIRAttention(swinir.WindowAttention, CachedBias):
    def forward(self, x: torch.Tensor, mask: WindowLayout | None = None) -> torch.Tensor:
        q, k, v = split_heads(self.qkv(x), self.num_heads)
        n = x.shape[1]
        bias = self.cached_bias(
            lambda: table_bias(self.relative_position_bias_table, self.relative_position_index, n),
            self.relative_position_bias_table,
        )
        return self.proj(join_heads(attend(q, k, v, bias, mask, self.scale)))


class SwinIRBlock(swinir.SwinTransformerBlock):
    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        (height, width), (batch, length, channels) = x_size, x.shape
        normed = self.norm1(x).view(batch, height, width, channels)
        x = x + shifted_window_attention(self, normed, self.attn).reshape(batch, length, channels)
        return x + self.mlp(self.norm2(x))


# -- Swin2SR (scaled cosine attention, post-norm) --------------------------------------

MAX_LOGIT_SCALE = math.log(1.0 / 0.01)


class Swin2SRAttention(swin2sr.WindowAttention, CachedBias):
    def forward(self, x: torch.Tensor, mask: WindowLayout | None = None) -> torch.Tensor:
        qkv_bias = None
        if self.q_bias is not None:
            qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, qkv_bias)
        b, n, _ = qkv.shape
        qkv = qkv.view(b, n, 3, self.num_heads, -1)
        logit_scale = torch.clamp(self.logit_scale, max=MAX_LOGIT_SCALE).exp()
        # Cosine attention with a per-head temperature: q and k normalised together in fp32
        # (bf16 norms, and bf16 times fp32, take slow kernels on a CPU), the temperature
        # folded into q's factor so that the attention kernel sees a plain q k^T.
        qk = qkv[:, :, :2].float()
        factor = qk.square().sum(-1, keepdim=True).clamp_min(1e-24).rsqrt()
        factor[:, :, 0] *= logit_scale.view(-1, 1)
        q, k = (qk * factor).to(qkv.dtype).permute(2, 0, 3, 1, 4)
        v = qkv[:, :, 2].transpose(1, 2)
        bias = self.cached_bias(self.position_bias, *self.cpb_mlp.parameters())
        return self.proj(join_heads(attend(q, k, v, bias, mask, 1.0)))

    def position_bias(self) -> torch.Tensor:
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        n = self.window_size[0] * self.window_size[1]
        return 16 * torch.sigmoid(table_bias(table, self.relative_position_index, n))


class Swin2SRBlock(swin2sr.SwinTransformerBlock):
    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        (height, width), (batch, length, channels) = x_size, x.shape
        attended = shifted_window_attention(self, x.view(batch, height, width, channels), self.attn)
        x = x + self.norm1(attended.reshape(batch, length, channels))
        return x + self.norm2(self.mlp(x))


# -- HAT (window attention beside a convolution branch) --------------------------------


class HATAttention(hat.WindowAttention, CachedBias):
    def forward(
        self, x: torch.Tensor, rpi: torch.Tensor, mask: WindowLayout | None = None
    ) -> torch.Tensor:
        q, k, v = split_heads(self.qkv(x), self.num_heads)
        n = x.shape[1]
        bias = self.cached_bias(
            lambda: table_bias(self.relative_position_bias_table, rpi, n),
            self.relative_position_bias_table,
        )
        return self.proj(join_heads(attend(q, k, v, bias, mask, self.scale)))


class HATBlock(hat.HAB):
    def forward(self, x, x_size, rpi_sa, attn_mask):  # attn_mask: unused, see HATNetwork
        (height, width), (batch, length, channels) = x_size, x.shape
        normed = self.norm1(x).view(batch, height, width, channels)
        conv_x = self.conv_block(normed.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

        def attention(windows: torch.Tensor, layout: WindowLayout | None) -> torch.Tensor:
            return self.attn(windows, rpi=rpi_sa, mask=layout)

        attended = shifted_window_attention(self, normed, attention)
        x = x + (attended + conv_x * self.conv_scale).reshape(batch, length, channels)
        return x + self.mlp(self.norm2(x))


class HATOverlapBlock(hat.OCAB, CachedBias):
    """Overlapping cross-attention: queries in windows, keys and values in larger ones."""

    def forward(self, x, x_size, rpi):
        (height, width), (batch, length, channels) = x_size, x.shape
        ws, ows, heads = self.window_size, self.overlap_win_size, self.num_heads
        shortcut = x
        qkv = self.qkv(self.norm1(x)).view(batch, height, width, 3, channels)
        q = partition(qkv[..., 0, :], ws)  # (B * windows, ws * ws, C)
        kv = qkv[..., 1:, :].reshape(batch, height, width, 2 * channels).permute(0, 3, 1, 2)
        # (B, 2C * ows * ows, windows) -> k, v each (B * windows, heads, ows * ows, d)
        kv = self.unfold(kv).view(batch, 2, heads, channels // heads, ows * ows, -1)
        # Copied to a plain layout on purpose: with one image `reshape` returns a view with a
        # window stride of 1, which makes the attention kernel 3x slower.
        kv = kv.permute(1, 0, 5, 2, 4, 3).contiguous()
        k, v = kv.view(2, -1, heads, ows * ows, channels // heads)
        q = q.view(q.shape[0], ws * ws, heads, -1).transpose(1, 2)
        bias = self.cached_bias(
            lambda: table_bias(self.relative_position_bias_table, rpi, ws * ws),
            self.relative_position_bias_table,
        )
        attended = join_heads(attend(q, k, v, bias, None, self.scale))
        layout = WindowLayout(batch, height // ws, width // ws, ws, 0)
        x = self.proj(merge(attended, layout).reshape(batch, length, channels)) + shortcut
        return x + self.mlp(self.norm2(x))


class HATNetwork(hat.HAT):
    def calculate_mask(self, x_size, dtype):
        # The fast blocks mask their own border windows; skip the full-size mask.
        return torch.empty(0, dtype=dtype)


FAST_CLASSES: dict[type, type] = {
    swinir.WindowAttention: SwinIRAttention,
    swinir.SwinTransformerBlock: SwinIRBlock,
    swin2sr.WindowAttention: Swin2SRAttention,
    swin2sr.SwinTransformerBlock: Swin2SRBlock,
    hat.WindowAttention: HATAttention,
    hat.HAB: HATBlock,
    hat.OCAB: HATOverlapBlock,
    hat.HAT: HATNetwork,
}
