"""How many CPU threads to run with: the cores actually free, not the cores the box has.

torch's intra-op threads wait for each other at every operator: one thread stalled behind
another process's work stalls them all, so on a busy machine fewer threads finish sooner.
Usable cores are those this process may run on (CPU affinity) and may use (the cgroup's
`cpu.max` quota); free ones are the usable ones minus what other processes keep busy right
now (a short CPU-utilisation sample, else the 1-minute load average). Workers that share a
machine (the service's job workers, batch workers) divide the free cores between them.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
SAMPLE_SECONDS = 0.1  # CPU-utilisation sample: short, yet long enough to be meaningful
RECHECK_SECONDS = 10.0  # a long batch re-reads the machine's state at most this often
# Busy share of a core above which it counts as taken (another process spinning on it).
BUSY_CORE = 0.5


@dataclass(frozen=True)
class ThreadChoice:
    """What was chosen and why, for --json and notes."""

    threads: int
    usable_cores: int  # affinity and cgroup quota
    busy_cores: float  # kept busy by other processes when measured
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def affinity_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def cgroup_quota_cores(path: Path = CGROUP_CPU_MAX) -> float | None:
    """cgroup v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD") as cores, or None: no limit."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(int(quota) / int(period), 0.01)
    except (ValueError, ZeroDivisionError):
        return None


def usable_cores() -> int:
    cores = affinity_cores()
    quota = cgroup_quota_cores()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota + 0.5)))
    return max(1, cores)


def busy_cores_elsewhere(usable: int, sample_seconds: float = SAMPLE_SECONDS) -> float:
    """Cores other processes keep busy: this moment's utilisation minus this process's own,
    or the load average (minus ourselves) where utilisation cannot be sampled."""
    try:
        me = psutil.Process()
        me.cpu_percent(None)
        total = psutil.cpu_percent(interval=sample_seconds) / 100 * psutil.cpu_count()
        own = me.cpu_percent(None) / 100
        return max(0.0, min(float(usable), total - own))
    except (psutil.Error, OSError, ZeroDivisionError, TypeError):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return max(0.0, min(float(usable), load - 1.0))


def choose_threads(workers: int = 1, busy: float | None = None) -> ThreadChoice:
    """Threads for one of `workers` that share this machine, from the cores free now."""
    usable = usable_cores()
    busy = busy_cores_elsewhere(usable) if busy is None else busy
    taken = math.floor(busy + (1 - BUSY_CORE))  # a core more than half busy is taken
    free = max(1, usable - taken)
    threads = max(1, free // max(1, workers))
    parts = [f"{usable} usable core(s)"]
    if taken:
        parts.append(f"{busy:.1f} busy with other work")
    if workers > 1:
        parts.append(f"shared by {workers} workers")
    return ThreadChoice(threads, usable, round(busy, 2), ", ".join(parts))


class ThreadGovernor:
    """Sets torch's CPU threads from the free cores, and re-checks during long batches.

    An explicit count (--threads, UPRES_THREADS) is kept as it is and never re-checked.
    """

    def __init__(self, fixed: int | None = None, workers: int = 1) -> None:
        self.fixed = fixed
        self.workers = workers
        self.choice: ThreadChoice | None = None
        self._checked = -math.inf
        self._lock = threading.Lock()

    def apply(self, force: bool = False) -> ThreadChoice:
        import torch

        with self._lock:
            now = time.monotonic()
            if self.choice is not None and not force and now - self._checked < RECHECK_SECONDS:
                return self.choice
            if self.fixed is not None:
                usable = usable_cores()
                self.choice = ThreadChoice(self.fixed, usable, 0.0, "set by --threads")
            else:
                self.choice = choose_threads(self.workers)
            self._checked = now
            if torch.get_num_threads() != self.choice.threads:
                torch.set_num_threads(self.choice.threads)
            return self.choice


# The process's governor, set up by the surface that owns the process (CLI, service,
# batch worker); plain library use keeps torch's own thread count.
_governor: ThreadGovernor | None = None


def configure(threads: int | None = None, workers: int = 1) -> ThreadChoice:
    """Set this process up for inference: threads chosen now (an explicit count wins) and
    re-checked during long runs, and the allocator told to keep freed tensor memory."""
    from upres.engine.allocator import keep_freed_memory

    keep_freed_memory()
    global _governor
    _governor = ThreadGovernor(threads, workers)
    return _governor.apply(force=True)


def recheck() -> ThreadChoice | None:
    """Between images: re-read the machine's state if the last look is old enough."""
    return _governor.apply() if _governor is not None else None


def current_choice() -> ThreadChoice | None:
    return _governor.choice if _governor is not None else None
