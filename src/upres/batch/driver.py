"""The driver: plan items, skip what the manifest settles, run an engine, record each row.

Built for 100k inputs: the listing streams into the skip check, so only the pending items
are held (once, as compact `WorkItem`s); the manifest lookup is a dict hit per item; the
summary keeps counts and the first `ERRORS_KEPT` errors (the manifest has every one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fsspec

from upres.batch.item import ItemOptions, WorkItem, plan_items
from upres.batch.manifest import Manifest

if TYPE_CHECKING:  # torch: not needed to list, plan or drive a batch
    from upres.api import ImageRunner

ENGINES = ("local", "ray")
ERRORS_KEPT = 20  # in the summary; a 100k batch's every failure is in the manifest


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    megapixels: float = 0.0  # output megapixels written by this run
    errors: list[dict[str, str]] = field(default_factory=list)  # the first ERRORS_KEPT
    manifest: str = ""  # where every row is

    def add(self, row: dict[str, Any]) -> None:
        if row["status"] == "done":
            self.done += 1
            width, height = row["output_size"]
            self.megapixels += width * height / 1e6
        else:
            self.failed += 1
            if len(self.errors) < ERRORS_KEPT:
                self.errors.append({"input": row["input"], "error": row["error"]})

    def to_dict(self) -> dict[str, Any]:
        rate = self.seconds if self.seconds > 0 else float("inf")
        return {
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.done / rate, 4),
            "megapixels_per_s": round(self.megapixels / rate, 4),
            "errors": self.errors,
            "errors_not_shown": self.failed - len(self.errors),
            "manifest": self.manifest,
        }


def pending_items(
    src: str, dst: str, manifest: Manifest, format: str | None, retry_failed: bool
) -> tuple[list[WorkItem], int]:
    """The items still to do, and how many the manifest already settles."""
    todo, skipped = [], 0
    for item in plan_items(src, dst, format):
        if manifest.settled(item.key, item.fingerprint, retry_failed):
            skipped += 1
        else:
            todo.append(item)
    return todo, skipped


def run_batch(
    src: str,
    dst: str,
    make_runner: Callable[[], ImageRunner],
    options: ItemOptions,
    *,
    engine: str = "local",
    ray_options: Any = None,
    processes: int = 1,
    retry_failed: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> Summary:
    """Upscale every image under SRC into DST; resumable through DST's manifest.

    The local engine runs the model in `processes` worker processes (0: in this process).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    dst_fs, dst_root = fsspec.core.url_to_fs(dst)
    with Manifest.open(dst_fs, dst_root) as manifest:
        todo, skipped = pending_items(src, dst, manifest, options.format, retry_failed)
        if on_start:
            on_start(len(todo), skipped)
        summary = Summary(skipped=skipped, manifest=dst_fs.unstrip_protocol(manifest.path))
        started = time.perf_counter()
        for row in _rows(engine, todo, make_runner, options, ray_options, processes):
            manifest.append(row)  # the driver alone writes it: no two writers, no locks
            summary.add(row)
            if on_row:
                on_row(row)
        summary.seconds = time.perf_counter() - started
    return summary


def _rows(
    engine: str,
    items: list[WorkItem],
    make_runner: Callable[[], ImageRunner],
    options: ItemOptions,
    ray_options: Any,
    processes: int,
) -> Iterator[dict[str, Any]]:
    if engine == "local":
        from upres.batch.local import run_local

        return run_local(items, make_runner, options, processes)
    from upres.batch.ray_runner import RayOptions, run_ray

    return run_ray(items, make_runner, options, ray_options or RayOptions())
