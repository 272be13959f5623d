"""Run a batch in this process: the reference runner, and the one without Ray.

Reading and decoding the next items, and encoding and writing finished ones, happen in
helper threads while the model works on the current item (decoders, encoders and torch
release the GIL), so the accelerator does not wait for the disk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from upres.batch.item import InFlight, ItemOptions, WorkItem, infer_stage, read_stage, write_stage

if TYPE_CHECKING:  # torch: not needed to list, plan or drive a batch
    from upres.api import ImageRunner

READ_AHEAD = 1  # decoded items waiting for the model
WRITE_BEHIND = 1  # finished items being encoded; more would only hold memory


def run_local(
    items: list[WorkItem], make_runner: Callable[[], ImageRunner], options: ItemOptions
) -> Iterator[dict]:
    """Yield one manifest row per item, in order, as each is written."""
    if not items:
        return
    runner = make_runner()  # loaded only when there is work: a no-op re-run stays instant
    with (
        ThreadPoolExecutor(1, thread_name_prefix="upres-read") as readers,
        ThreadPoolExecutor(1, thread_name_prefix="upres-write") as writers,
    ):
        upcoming = iter(items)
        reads: deque[Future[InFlight]] = deque()
        writes: deque[Future[dict]] = deque()

        def read_next() -> None:
            item = next(upcoming, None)
            if item is not None:
                reads.append(readers.submit(read_stage, item, options))

        for _ in range(READ_AHEAD):
            read_next()
        while reads:
            flight = reads.popleft().result()
            read_next()
            if len(writes) >= WRITE_BEHIND:
                yield writes.popleft().result()
            writes.append(writers.submit(write_stage, infer_stage(runner, flight)))
        while writes:
            yield writes.popleft().result()
