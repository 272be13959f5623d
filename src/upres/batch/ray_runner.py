"""Run a batch on Ray Data: an actor pool, one model per actor, the same per-item function.

Rows stream back to the driver as they finish, so it can write the manifest and show
progress. A dead actor is restarted and its in-flight items retried: Ray Data gives actor
pools `max_restarts=-1` and `max_task_retries=-1` by default (changing them needs
`map_batches` keywords that Ray deprecates, so we keep its defaults). A retried item
writes the same output again, atomically, and the driver records it once.
Ray is imported here only, and only when this engine is chosen.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from upres.api import ImageRunner
from upres.batch.item import ItemOptions, WorkItem, process_item


@dataclass
class RayOptions:
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    address: str | None = None  # join this cluster; None starts a local instance
    init_kwargs: dict[str, Any] = field(default_factory=dict)  # extra ray.init arguments


class UpscaleActor:
    """One per Ray worker: loads the model once, then handles batches of item rows."""

    def __init__(self, make_runner: Callable[[], ImageRunner], options: ItemOptions) -> None:
        self.runner = make_runner()
        self.options = options

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        # Rows travel as JSON strings: one column with a fixed type, whatever they hold.
        rows = [
            process_item(self.runner, WorkItem(**json.loads(text)), self.options)
            for text in batch["item"]
        ]
        return {"row": [json.dumps(row) for row in rows]}


def ensure_ray(options: RayOptions) -> None:
    """Join a cluster, or start a light local instance (no dashboard, only the CPUs asked)."""
    import ray

    if ray.is_initialized():
        return
    if options.address:
        ray.init(address=options.address, **options.init_kwargs)
        return
    import os

    cpus = max(os.cpu_count() or 1, int(options.workers * options.cpus_per_worker + 0.999))
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        **options.init_kwargs,
    )


def run_ray(
    items: list[WorkItem],
    make_runner: Callable[[], ImageRunner],
    options: ItemOptions,
    ray_options: RayOptions,
) -> Iterator[dict]:
    """Yield one manifest row per item as each finishes (in no particular order)."""
    if not items:
        return
    if any(url.startswith("memory://") for i in items for url in (i.source, i.destination)):
        raise ValueError("memory:// lives in one process; Ray workers cannot see it")
    import ray.data

    ensure_ray(ray_options)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own bar from the rows
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset INFO chatter
    dataset = ray.data.from_items(
        [{"item": json.dumps(item.to_dict())} for item in items],
        override_num_blocks=len(items),  # one item per block: work spreads over all actors
    )
    results = dataset.map_batches(
        UpscaleActor,
        fn_constructor_kwargs={"make_runner": make_runner, "options": options},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=ray_options.workers),
        num_cpus=ray_options.cpus_per_worker,
        num_gpus=ray_options.gpus_per_worker or None,
    )
    for record in results.iter_rows():
        yield json.loads(record["row"])
