"""Shifted-window attention without the reference code's full-size mask.

After the cyclic shift of a Swin block, only the windows in the last window row and the
last window column mix pixels from opposite image borders; every other window's mask is
all zeros. The reference builds a (windows x N x N) mask on the CPU for every new input
size (gigabytes at large tiles) and adds it to every window. Here all windows run through
attention with the relative-position bias alone, and only the few border windows get their
small cached mask. Same maths, far less memory traffic.

On a CPU, two matmuls and a softmax in bounded slices of windows beat
`scaled_dot_product_attention`'s kernel (built for long sequences of wide heads) for these
short windows: 1.5-2x in bf16 at every window size; in fp32, 1.3x for 64-token windows and
a little (whole network: 0.94-0.98 of the time) for DAT-light's 10-wide heads, whose border
windows SDPA would run twice (`benchmarks/RESULTS.md`). SDPA stays for larger fp32 windows
of wide heads, and on GPUs.
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
    window: int | tuple[int, int],
    shift: int | tuple[int, int],
    rows: int,
    cols: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(border windows, N, N) additive mask, equal to the reference's rows for those windows.
    `window` and `shift` are (height, width) for rectangular windows (DAT), else squares."""
    (win_y, win_x), (shift_y, shift_x) = pair(window), pair(shift)
    # Label each pixel by the shifted region it came from (3 bands down x 3 across).
    labels = bands(rows * win_y, win_y, shift_y)[:, None] * 3 + bands(cols * win_x, win_x, shift_x)
    labels = labels.view(rows, win_y, cols, win_x).permute(0, 2, 1, 3).reshape(-1, win_y * win_x)
    labels = labels[border_windows(rows, cols)]
    differs = labels[:, :, None] != labels[:, None, :]
    mask = torch.zeros(differs.shape, dtype=torch.float32).masked_fill(differs, MASKED)
    return mask.to(device=device, dtype=dtype)


def bands(length: int, window: int, shift: int) -> torch.Tensor:
    """0 before the last window, 1 in it up to the shift, 2 after: where each row (or column)
    of a cyclically shifted map came from."""
    band = torch.zeros(length, dtype=torch.long)
    band[length - window : length - shift] = 1
    band[length - shift :] = 2
    return band


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


SCORES_BYTES = 16 * 2**20  # attention scores made at once: bounded, whatever the tile

# Window indices, and their (len(indices), N, Nk) additive masks: the only masked windows.
Border = tuple[list[int], torch.Tensor]


def shifted_border(
    window: int | tuple[int, int],
    shift: int | tuple[int, int],
    rows: int,
    cols: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Border:
    """The masked windows of a shifted block on a rows x cols grid, and their masks."""
    return border_windows(rows, cols), border_mask(window, shift, rows, cols, device, dtype)


def choose_kernel(q: torch.Tensor, k: torch.Tensor) -> str:
    """Which attention kernel is faster here (measured, see the module docstring):
    "slices" or "sdpa"."""
    short_or_narrow = k.shape[-2] <= 64 or q.shape[-1] <= 16
    cpu_slices = q.device.type == "cpu" and (q.dtype == torch.bfloat16 or short_or_narrow)
    return "slices" if cpu_slices else "sdpa"


def attention_in_slices(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    border: Border | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v over (B, windows, heads, N, d), a slice of windows at a
    time along dim 1; `bias` (heads, N, Nk) serves every window, `border` adds a mask to the
    windows it names only."""
    batch, windows, heads, n, _ = q.shape
    step = max(1, SCORES_BYTES // (batch * heads * n * k.shape[-2] * 4))
    out: torch.Tensor | None = None
    for start in range(0, windows, step):
        part = slice(start, start + step)
        scores = torch.matmul(q[:, part] * scale, k[:, part].transpose(-2, -1))
        if bias is not None:
            scores += bias
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
    ((B, windows in the slice, heads, N, Nk), the slice starting at window `start`): in
    place, a window at a time (a gather and scatter of them all costs two more passes)."""
    for row, window in enumerate(index):
        if 0 <= window - start < scores.shape[1]:
            scores[:, window - start] += mask[row]


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    layout: WindowLayout | None,
    scale: float | None,
) -> torch.Tensor:
    """Swin window attention: q, k, v (B * windows, heads, N, d); bias (heads, N, Nk).

    `layout` is given for shifted blocks (it locates the border windows); None means no mask.
    """
    heads, n, d = q.shape[1:]
    border = None
    if layout is not None and layout.shift != 0:
        border = shifted_border(
            layout.window, layout.shift, layout.rows, layout.cols, q.device, q.dtype
        )
    batch = layout.batch if layout is not None else 1
    q, k, v = (t.reshape(batch, -1, *t.shape[1:]) for t in (q, k, v))
    scale = d**-0.5 if scale is None else scale
    return window_attention(q, k, v, bias, scale, border).view(-1, heads, n, d)


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    border: Border | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + bias [+ mask on the border windows]) v, for q, k, v of shape
    (B, windows, heads, N, d) and a bias (heads, N, Nk) shared by every window, through the
    kernel that is faster on this device (module docstring)."""
    bias = None if bias is None else bias.to(q.dtype)
    if choose_kernel(q, k) == "slices":
        return attention_in_slices(q, k, v, bias, scale, border)
    return sdpa_with_border(q, k, v, bias, scale, border)


def sdpa_with_border(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    border: Border | None,
) -> torch.Tensor:
    """Every window through SDPA with the bias alone, then the border windows again with
    their mask added (of every batch item, heads folded next to windows so that one
    (1, windows * heads, N, Nk) mask broadcasts over the batch)."""
    batch, windows, heads, n, d = q.shape

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, heads, t.shape[-2], t.shape[-1])

    # A 4-D mask: with a 3-D one the CPU backend falls back to its slow "math" kernel.
    mask = None if bias is None else bias.unsqueeze(0)
    out = F.scaled_dot_product_attention(flat(q), flat(k), flat(v), attn_mask=mask, scale=scale)
    out = out.view(batch, windows, heads, n, d)
    if border is None or not border[0]:
        return out
    index, border_masks = border
    combined = border_masks.unsqueeze(1) if bias is None else bias + border_masks.unsqueeze(1)
    combined = combined.reshape(1, len(index) * heads, n, -1)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t[:, index].reshape(batch, len(index) * heads, t.shape[-2], t.shape[-1])

    redone = F.scaled_dot_product_attention(
        pick(q), pick(k), pick(v), attn_mask=combined, scale=scale
    )
    out[:, index] = redone.view(batch, len(index), heads, n, d)
    return out
