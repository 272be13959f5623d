"""Resumable, exactly-once batch upscaling of a folder (or fsspec URL) into another.

One per-item function (`item.process_item`) is shared by the in-process runner
(`local.run_local`) and the Ray actor runner (`ray_runner.run_ray`); the driver alone
writes the manifest (`manifest.Manifest`), so a re-run skips what is already done.
Ray is imported lazily: the package works without it.
"""

from upres.batch.item import ItemOptions, WorkItem, plan_items, process_item
from upres.batch.manifest import MANIFEST_NAME, Manifest

__all__ = [
    "MANIFEST_NAME",
    "ItemOptions",
    "Manifest",
    "WorkItem",
    "plan_items",
    "process_item",
]
