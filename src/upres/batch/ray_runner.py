"""Run a batch on Ray: a pool of actors, one model each, the same per-item function.

Items go out in small chunks, a few chunks in flight per actor, taken from the driver's
pending list as actors free up; rows come back (small dicts; the images are written by the
workers) and the driver writes the manifest and shows progress. Ray core actors rather
than Ray Data: a 100k-item dataset built on the driver held every item again, and its
one-block-per-item plan cost more than the model on small images.

Losing a worker (a crashed process or a whole node): the actor is restarted, on another
node if need be (`max_restarts=-1`), and its unfinished calls are retried there
(`max_task_retries=-1`). A retried chunk rewrites its outputs atomically; the driver records
each item once, from the one call that returned. The retries are not bounded: a node's loss
can take many tries to be noticed on a busy cluster, and a bound failed healthy inputs in
our node-loss test; the price is that an input which crashes the worker process itself
(not an exception: those are failed rows) is retried until someone stops the batch.
Ray is imported here only, and only when this engine is chosen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from upres.batch.item import ItemOptions, WorkItem, in_memory, process_item, worker_name

if TYPE_CHECKING:  # torch: not needed to list, plan or drive a batch
    from upres.api import ImageRunner

CHUNK_MAX = 16  # items per call: amortises a call's ~ms overhead, small enough to balance
CHUNKS_IN_FLIGHT = 2  # per actor: the next chunk is already there when one finishes


@dataclass
class RayOptions:
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    address: str | None = None  # join this cluster; None starts a local instance
    init_kwargs: dict[str, Any] = field(default_factory=dict)  # extra ray.init arguments


class UpscaleActor:
    """One per Ray worker: loads the model once, then handles chunks of items."""

    def __init__(self, make_runner: Callable[[], ImageRunner], options: ItemOptions) -> None:
        self.runner = make_runner()
        self.options = options

    def ready(self) -> str:
        return worker_name()

    def process(self, items: list[WorkItem]) -> list[dict[str, Any]]:
        return [process_item(self.runner, item, self.options) for item in items]


def ensure_ray(options: RayOptions) -> None:
    """Join a cluster, or start a light local instance (no dashboard, only the CPUs asked)."""
    import ray

    if ray.is_initialized():
        return
    if options.address:
        ray.init(address=options.address, **options.init_kwargs)
        return
    cpus = max(os.cpu_count() or 1, int(options.workers * options.cpus_per_worker + 0.999))
    ray.init(
        address="local",  # start one: never join some other cluster found on this machine
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        **options.init_kwargs,
    )


def chunk_size(count: int, workers: int) -> int:
    """Small batches still spread over every actor; large ones use full chunks."""
    return max(1, min(CHUNK_MAX, count // (workers * CHUNKS_IN_FLIGHT * 2)))


def run_ray(
    items: Sequence[WorkItem],
    make_runner: Callable[[], ImageRunner],
    options: ItemOptions,
    ray_options: RayOptions,
) -> Iterator[dict]:
    """Yield one manifest row per item as each chunk finishes (in no particular order)."""
    if not items:
        return
    if in_memory(items[0]):
        raise ValueError("memory:// lives in one process; Ray workers cannot see it")
    import ray

    ensure_ray(ray_options)
    actor_class = ray.remote(UpscaleActor).options(
        num_cpus=ray_options.cpus_per_worker,
        num_gpus=ray_options.gpus_per_worker or None,
        max_restarts=-1,
        max_task_retries=-1,
    )
    actors = [actor_class.remote(make_runner, options) for _ in range(ray_options.workers)]
    try:
        yield from _dispatch(ray, actors, items, chunk_size(len(items), len(actors)))
    finally:
        for actor in actors:
            ray.kill(actor)


def _dispatch(ray: Any, actors: list[Any], items: Sequence[WorkItem], size: int) -> Iterator[dict]:
    """Keep every actor fed with chunks; yield rows as calls return."""
    chunks = (list(items[start : start + size]) for start in range(0, len(items), size))
    in_flight: dict[Any, int] = {}  # call -> the actor it went to
    load = [0] * len(actors)

    def send(actor: int) -> bool:
        chunk = next(chunks, None)
        if chunk is None:
            return False
        in_flight[actors[actor].process.remote(chunk)] = actor
        load[actor] += 1
        return True

    for actor in range(len(actors)):
        for _ in range(CHUNKS_IN_FLIGHT):
            send(actor)
    while in_flight:
        [call], _ = ray.wait(list(in_flight), num_returns=1)
        actor = in_flight.pop(call)
        load[actor] -= 1
        yield from ray.get(call)
        while load[actor] < CHUNKS_IN_FLIGHT and send(actor):
            pass
