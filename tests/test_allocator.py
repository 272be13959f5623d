"""The allocator setting: glibc keeps freed tensor memory instead of unmapping it."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT

# mmap-ed chunks counted by glibc's own statistics (mallinfo2's hblks): big blocks served by
# a fresh mapping each time, which is what the setting stops for blocks up to 32 MiB.
PROBE = """
import ctypes, sys
sys.path.insert(0, {src!r})
from upres.engine.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
before = libc.mallinfo2().hblks
blocks = [libc.malloc(4 * 2**20) for _ in range(4)]  # 4 MiB: a tile's activation
mapped = libc.mallinfo2().hblks - before
for block in blocks:
    libc.free(block)
print(mapped)
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_tensor_sized_blocks_come_from_the_heap_once_set() -> None:
    counts = {}
    for mode in ("default", "tuned"):
        probe = PROBE.format(src=str(PROJECT_ROOT / "src"))
        done = subprocess.run(
            [sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True
        )
        counts[mode] = int(done.stdout)
    assert counts["default"] == 4  # each 4 MiB block its own mapping
    assert counts["tuned"] == 0  # all from the heap, kept for the next tile
