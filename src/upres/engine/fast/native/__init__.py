"""Native CPU kernels, compiled on first use for the machine they run on.

`window_attention.cpp` fuses narrow-head window attention (why: the file's header). It is
built once per machine with the system C++ compiler (`$CXX`, else `c++`), `-march=native`
and GCC's OpenMP, into the user cache (`UPRES_CACHE_DIR`, e.g. ~/.cache/upres/kernels),
under a name that hashes the source, the flags, the CPU and the compiler's version, written
to a temporary name and renamed so that concurrent workers never load half a file. It is
called through `ctypes` (no torch headers, so the build takes about a second), on torch's
own OpenMP threads.

Without a compiler (a warning says so, once), on Windows, on macOS unless `$CXX` names one
with OpenMP, or with `UPRES_NATIVE_KERNELS=0`, `supports` says no and the caller keeps its
torch path: same maths, only slower.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import weakref
from functools import lru_cache
from pathlib import Path

import platformdirs
import torch

from upres.engine.fast.windows import Border

log = logging.getLogger("upres")

SOURCE = Path(__file__).with_name("window_attention.cpp")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC"]
DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def enabled() -> bool:
    return os.environ.get("UPRES_NATIVE_KERNELS", "1").strip().lower() not in ("0", "off", "no")


def kernels_dir() -> Path:
    root = os.environ.get("UPRES_CACHE_DIR") or platformdirs.user_cache_dir("upres")
    return Path(root) / "kernels"


def cpu_identity() -> str:
    """What -march=native depends on: the machine and, on Linux, its CPU's feature flags."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} {flags}"


def compiler() -> list[str]:
    """The C++ compiler command: `$CXX` (words, as a shell splits them), else `c++`."""
    return shlex.split(os.environ.get("CXX") or "c++")


def compiler_identity() -> str:
    """The compiler's --version: a new compiler (or libstdc++) builds a new library."""
    return version_of(tuple(compiler()))


@lru_cache(maxsize=4)
def version_of(command: tuple[str, ...]) -> str:
    try:
        done = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout


def openmp_flags() -> list[str]:
    """OpenMP from GCC's runtime, the one torch's Linux wheels carry (clang would link a
    second runtime, libomp, whose threads would compete with torch's)."""
    return ["-fopenmp=libgomp"] if "clang" in compiler_identity().lower() else ["-fopenmp"]


def library_path() -> Path:
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS), cpu_identity(), compiler_identity()):
        digest.update(part if isinstance(part, bytes) else part.encode())
    return kernels_dir() / f"window_attention-{digest.hexdigest()[:16]}.so"


def build(target: Path) -> None:
    """Compile the source to `target` (atomically); raises OSError or CalledProcessError."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial_name = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    os.close(handle)
    partial = Path(partial_name)
    try:
        subprocess.run(
            [*compiler(), *FLAGS, *openmp_flags(), str(SOURCE), "-o", str(partial)],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


_building = threading.Lock()  # one build per process, whichever thread asks first
_failure = ""  # why the kernels are unavailable, once known


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; None where they cannot be (said once)."""
    global _failure
    if not enabled() or sys.platform == "win32":
        return None
    if sys.platform == "darwin" and "CXX" not in os.environ:
        _failure = "macOS: set CXX to a compiler with OpenMP to build it"
        return None  # Apple's clang has no OpenMP: no build to try, nothing to warn of
    with _building:
        try:
            target = library_path()
            if not target.is_file():
                log.info("compiling upres's native attention kernel into %s", target)
                build(target)
            try:
                return bind(ctypes.CDLL(str(target)))
            except OSError:  # a stale or damaged build (another libstdc++?): rebuild once
                target.unlink(missing_ok=True)
                build(target)
                return bind(ctypes.CDLL(str(target)))
        except (OSError, subprocess.SubprocessError, AttributeError) as error:
            detail = getattr(error, "stderr", "") or str(error)
            _failure = detail.strip()[-300:]
            log.warning("native kernels unavailable, using torch's (%s)", _failure)
            return None


def state() -> str:
    """For --json: whether the kernels serve this process, without building them."""
    if not enabled():
        return "off (UPRES_NATIVE_KERNELS=0)"
    if library.cache_info().currsize == 0:
        return "not needed yet"
    return "ready" if library() is not None else f"unavailable: {_failure}"


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the C signatures (window_attention.cpp), so ctypes converts every argument."""
    pointer, integer, long = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    attention = lib.upres_window_attention
    attention.restype = integer
    attention.argtypes = [pointer] * 4 + [integer] * 4 + [long] * 6 + [integer] * 6
    attention.argtypes += [pointer, pointer, pointer, ctypes.c_float, integer]
    lib.upres_window_attention_supports.restype = integer
    lib.upres_window_attention_supports.argtypes = [integer]
    return lib


def supports(qkv: torch.Tensor, heads: int, window: tuple[int, int]) -> bool:
    """Whether `window_attention` takes this (3, B, H, W, C) q, k, v image."""
    _, _, height, width, channels = qkv.shape
    win_h, win_w = window
    fits = (
        qkv.device.type == "cpu"
        and qkv.dtype in DTYPES
        and qkv.stride(-1) == 1
        and channels % heads == 0
        and (win_h * win_w) % 16 == 0
        and height % win_h == 0
        and width % win_w == 0
        and not qkv.requires_grad  # no backward: training keeps torch's path
        and type(qkv) is torch.Tensor  # real memory (not a fake or traced tensor)
        and not torch.compiler.is_compiling()  # a graph being traced cannot record a C call
        and not torch.jit.is_tracing()
    )
    if not fits:
        return False
    lib = library()
    return lib is not None and bool(lib.upres_window_attention_supports(channels // heads))


def window_attention(
    qkv: torch.Tensor,
    out: torch.Tensor,
    window: tuple[int, int],
    shift: tuple[int, int],
    heads: int,
    bias: torch.Tensor | None,
    scale: float,
    border: Border | None = None,
) -> None:
    """Attention in the windows of a (3, B, H, W, C) q, k, v image (any strides but the
    channels'), after a cyclic shift by -`shift`, written into `out` (B, H, W, C) where the
    pixels are (the reference's roll back): softmax(q k^T * scale + bias [+ border masks]) v.
    `bias` (heads, N, N); `border` names the masked windows of the shifted grid."""
    lib = library()
    assert lib is not None and supports(qkv, heads, window), "ask supports() first"
    assert out.shape == qkv.shape[1:] and out.dtype == qkv.dtype and out.stride(-1) == 1
    _, batch, height, width, channels = qkv.shape
    bias_t = mask_rows = masks_t = None
    if bias is not None:
        bias_t = transposed_float32(bias)
    if border is not None and border[0]:
        index, border_masks = border
        windows = (height // window[0]) * (width // window[1])
        mask_rows = torch.full((windows,), -1, dtype=torch.int32)
        mask_rows[index] = torch.arange(len(index), dtype=torch.int32)
        masks_t = transposed_float32(border_masks)

    def pointer(t: torch.Tensor | None) -> int | None:
        return None if t is None else t.data_ptr()

    status = lib.upres_window_attention(
        qkv[0].data_ptr(), qkv[1].data_ptr(), qkv[2].data_ptr(), out.data_ptr(),
        DTYPES[qkv.dtype], batch, height, width, *qkv.stride()[1:4], *out.stride()[:3],
        *window, shift[0] % height, shift[1] % width, heads, channels // heads,
        pointer(bias_t), pointer(mask_rows), pointer(masks_t), scale, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise ValueError(f"native window attention does not take {tuple(qkv.shape)}")


# Biases and masks come from caches that never change a tensor in place (a new bias is a new
# tensor): their transposes are kept while they live, by identity, and go with them.
_transposed: dict[int, tuple[weakref.ref, torch.Tensor]] = {}


def transposed_float32(t: torch.Tensor) -> torch.Tensor:
    """(..., N, Nk) as a contiguous float32 (..., Nk, N), made once per tensor."""
    entry = _transposed.get(id(t))
    if entry is not None and entry[0]() is t:
        return entry[1]
    result = t.detach().to(torch.float32).transpose(-2, -1).contiguous()
    _transposed[id(t)] = (weakref.ref(t), result)
    weakref.finalize(t, _transposed.pop, id(t), None)
    return result
