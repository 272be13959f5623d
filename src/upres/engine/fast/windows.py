"""Shifted-window attention without the reference code's full-size mask.

After the cyclic shift of a Swin block, only the windows in the last window row and the
last window column mix pixels from opposite image borders; every other window's mask is
all zeros. The reference builds a (windows x N x N) mask on the CPU for every new input
size (gigabytes at large tiles) and adds it to every window. Here all windows run through
attention with the relative-position bias alone, and only the few border windows get their
small cached mask. Same maths, far less memory traffic.

On a CPU, two matmuls and a softmax in bounded slices of windows beat
`scaled_dot_product_attention`'s kernel (built for long sequences of wide heads) for these
short windows: 1.5-2x in bf16 at every window size, 1.3x in fp32 for 64-token windows
(`benchmarks/RESULTS.md`). SDPA stays for larger fp32 windows and on GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

MASKED = -100.0  # the reference masks with -100 rather than -inf; keep its exact numbers


@dataclass(frozen=True)
class WindowLayout:
    """How a batch of feature maps was cut into windows (row-major, batch outermost)."""

    batch: int
    rows: int  # windows down
    cols: int  # windows across
    window: int
    shift: int

    @property
    def count(self) -> int:
        return self.rows * self.cols


def partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, window * window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def merge(windows: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
    """(B * windows, window * window, C) -> (B, H, W, C); the inverse of `partition`."""
    ws, c = layout.window, windows.shape[-1]
    x = windows.view(layout.batch, layout.rows, layout.cols, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(layout.batch, layout.rows * ws, layout.cols * ws, c)


def border_windows(rows: int, cols: int) -> list[int]:
    """Indices of the windows whose shifted content wraps around: last column, then last row."""
    right = [r * cols + cols - 1 for r in range(rows - 1)]
    bottom = [(rows - 1) * cols + c for c in range(cols)]
    return right + bottom


@lru_cache(maxsize=32)
def border_mask(
    window: int, shift: int, rows: int, cols: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(border windows, N, N) additive mask, equal to the reference's rows for those windows."""
    height, width = rows * window, cols * window
    # Label each pixel by the shifted region it came from (3 bands down x 3 across).
    band_y = torch.zeros(height, dtype=torch.long)
    band_y[height - window : height - shift] = 1
    band_y[height - shift :] = 2
    band_x = torch.zeros(width, dtype=torch.long)
    band_x[width - window : width - shift] = 1
    band_x[width - shift :] = 2
    labels = (band_y[:, None] * 3 + band_x[None, :])[None, :, :, None]
    labels = partition(labels, window)[border_windows(rows, cols), :, 0]
    differs = labels[:, :, None] != labels[:, None, :]
    mask = torch.zeros(differs.shape, dtype=torch.float32).masked_fill(differs, MASKED)
    return mask.to(device=device, dtype=dtype)


SCORES_BYTES = 16 * 2**20  # attention scores made at once: bounded, whatever the tile


def slices_are_faster(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether `attention_in_slices` beats SDPA here (measured, see the module docstring)."""
    return q.device.type == "cpu" and (q.dtype == torch.bfloat16 or k.shape[-2] <= 64)


def attention_in_slices(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    border: tuple[list[int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v over (B, windows, heads, N, d), a slice of windows at a
    time along dim 1. `bias` broadcasts: (1, 1 or windows, heads, N, Nk). `border` (window
    indices, (len(indices), N, Nk) mask) adds a mask to those windows only."""
    batch, windows, heads, n, _ = q.shape
    step = max(1, SCORES_BYTES // (batch * heads * n * k.shape[-2] * 4))
    out: torch.Tensor | None = None
    for start in range(0, windows, step):
        part = slice(start, start + step)
        scores = torch.matmul(q[:, part] * scale, k[:, part].transpose(-2, -1))
        if bias is not None:
            scores += bias if bias.shape[1] == 1 else bias[:, part]
        if border is not None:
            add_border_mask(scores, start, *border)
        result = torch.matmul(scores.softmax(-1), v[:, part])
        if out is None:
            if step >= windows:
                return result
            out = result.new_empty((batch, windows, *result.shape[2:]))
        out[:, part] = result
    assert out is not None
    return out


def add_border_mask(scores: torch.Tensor, start: int, index: list[int], mask: torch.Tensor) -> None:
    """Add `mask` rows to the windows of `index` that fall in this slice of `scores`
    ((B, windows in the slice, heads, N, Nk), the slice starting at window `start`)."""
    chosen = [(i - start, row) for row, i in enumerate(index) if 0 <= i - start < scores.shape[1]]
    if chosen:
        local, rows = (list(t) for t in zip(*chosen, strict=True))
        scores[:, local] += mask[rows].unsqueeze(1)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    layout: WindowLayout | None,
    scale: float | None,
) -> torch.Tensor:
    """Window attention: q, k, v (B * windows, heads, N, d); bias (heads, N, Nk).

    `layout` is given for shifted blocks (it locates the border windows); None means no mask.
    """
    bias = bias.to(q.dtype)
    shifted = layout is not None and layout.shift != 0
    heads, n, d = q.shape[1:]
    if slices_are_faster(q, k):
        batch = layout.batch if layout is not None else 1
        border = None
        if layout is not None and shifted:
            mask = border_mask(
                layout.window, layout.shift, layout.rows, layout.cols, q.device, q.dtype
            )
            border = (border_windows(layout.rows, layout.cols), mask)
        q, k, v = (t.reshape(batch, -1, *t.shape[1:]) for t in (q, k, v))
        scale = d**-0.5 if scale is None else scale
        return attention_in_slices(q, k, v, bias[None, None], scale, border).view(-1, heads, n, d)
    # A 4-D mask: with a 3-D one the CPU backend falls back to its slow "math" kernel.
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0), scale=scale)
    if layout is None or not shifted:
        return out
    index = border_windows(layout.rows, layout.cols)
    mask = border_mask(layout.window, layout.shift, layout.rows, layout.cols, q.device, q.dtype)
    # Border windows of every batch item, with heads folded next to windows so that one
    # (1, windows * heads, N, N) mask broadcasts over the batch.
    combined = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(1, len(index) * heads, n, n)

    def border(t: torch.Tensor) -> torch.Tensor:
        t = t.view(layout.batch, layout.count, heads, n, -1)[:, index]
        return t.reshape(layout.batch, len(index) * heads, n, -1)

    redone = F.scaled_dot_product_attention(
        border(q), border(k), border(v), attn_mask=combined, scale=scale
    )
    out = out.view(layout.batch, layout.count, heads, n, d)
    out[:, index] = redone.view(layout.batch, len(index), heads, n, d)
    return out.view(-1, heads, n, d)
