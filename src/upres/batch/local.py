"""Run a batch on this machine: in worker processes (the default), or in this process.

Reading and decoding the next items, and encoding and writing finished ones, happen in
helper threads while the model works on the current item (decoders, encoders and torch
release the GIL), so the accelerator does not wait for the disk. The same pipeline runs
inside each worker process (`workers.py`), or here when the batch cannot leave this
process: `memory://` files live in it, and a runner factory that cannot be pickled cannot
be sent.
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from upres.batch.item import (
    InFlight,
    ItemOptions,
    WorkItem,
    in_memory,
    infer_stage,
    read_stage,
    write_stage,
)

if TYPE_CHECKING:  # torch: not needed to list, plan or drive a batch
    from upres.api import ImageRunner

WRITE_BEHIND = 1  # finished items being encoded; more would only hold memory


def run_local(
    items: Sequence[WorkItem],
    make_runner: Callable[[], ImageRunner],
    options: ItemOptions,
    processes: int = 1,
) -> Iterator[dict]:
    """Yield one manifest row per item as each is written; `processes=0`: in this process."""
    if not items:
        return
    if processes > 0 and can_leave_this_process(items[0], make_runner):
        from upres.batch.workers import run_in_workers

        yield from run_in_workers(items, make_runner, options, processes)
        return
    runner = make_runner()  # loaded only when there is work: a no-op re-run stays instant
    yield from pipeline(runner, items, options)


def can_leave_this_process(item: WorkItem, make_runner: Callable[[], ImageRunner]) -> bool:
    if in_memory(item):
        return False
    try:
        pickle.dumps(make_runner)
    except Exception:  # a lambda, a closure: fine for a library caller, run it here
        return False
    return True


def pipeline(
    runner: ImageRunner, items: Iterable[WorkItem], options: ItemOptions
) -> Iterator[dict]:
    """Read ahead and write behind around the model; rows in the order of `items`.

    `items` may block (a worker waiting for the driver): the reader thread takes them, and
    rows already written are handed back while it waits, so nobody waits for the other.
    """
    upcoming = iter(items)

    def read_next() -> InFlight | None:  # in the reader thread
        item = next(upcoming, None)
        return None if item is None else read_stage(item, options)

    with (
        ThreadPoolExecutor(1, thread_name_prefix="upres-read") as readers,
        ThreadPoolExecutor(1, thread_name_prefix="upres-write") as writers,
    ):
        writes: deque[Future[dict]] = deque()
        reading = readers.submit(read_next)
        while True:
            yield from _written_while_waiting(writes, reading)
            flight = reading.result()
            if flight is None:
                break
            reading = readers.submit(read_next)  # the next item decodes while this one runs
            if len(writes) >= WRITE_BEHIND:  # recorded before the model's next call
                yield writes.popleft().result()
            writes.append(writers.submit(write_stage, infer_stage(runner, flight)))
        while writes:
            yield writes.popleft().result()


def _written_while_waiting(writes: deque[Future[dict]], reading: Future) -> Iterator[dict]:
    while not reading.done():
        wait([reading, *list(writes)[:1]], return_when=FIRST_COMPLETED)
        while writes and writes[0].done():
            yield writes.popleft().result()
