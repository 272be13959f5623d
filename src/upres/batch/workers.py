"""The local engine's worker processes: the model runs beside the driver, not inside it.

The driver keeps only what a batch needs to be steered (the listing, the manifest, the
progress), so its memory stays small at 100k items, and an input that kills its process
(a decoder's segfault, the kernel's OOM killer) takes down one worker, not the batch:
the worker is restarted, the items it held are replayed one at a time, and the one that
kills a worker on its own is recorded as failed.

Each worker runs the same read-ahead / write-behind pipeline as the in-process runner, on
items fed through a queue; rows come back one per item, as each is written. Workers are
started with "spawn" (a fresh interpreter): forking a driver that already runs threads is
not safe, and the child imports torch only for itself.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from upres.batch.item import ItemOptions, WorkItem, base_row
from upres.errors import UpresError

if TYPE_CHECKING:
    from upres.api import ImageRunner

IN_FLIGHT = 4  # items queued per worker: enough for its read-ahead and write-behind
POLL_SECONDS = 0.5  # how often a waiting driver looks for a dead worker
CRASHES_IN_A_ROW = 10  # workers dying with no good row between: the model, not inputs


class WorkerCrashed(UpresError):
    """Workers keep dying before finishing anything: the batch stops rather than spin."""


@dataclass
class _Worker:
    """The driver's view of one worker process and the items it holds, in order.

    Each worker has its own inbox and its own pipe back: a process killed in the middle of
    a write can only break its own channel (a queue shared by all workers has one lock, and
    a worker killed while holding it would block every other worker for good).
    """

    process: BaseProcess
    inbox: Any  # multiprocessing Queue of WorkItem | None, read by this worker alone
    results: Connection  # messages from this worker alone
    held: deque[WorkItem] = field(default_factory=deque)
    suspect: bool = False  # replaying a crashed worker's items: one at a time
    ready: bool = False


def run_in_workers(
    items: Sequence[WorkItem],
    make_runner: Callable[[], ImageRunner],
    options: ItemOptions,
    processes: int = 1,
) -> Iterator[dict[str, Any]]:
    """Yield one manifest row per item as workers write them (each worker's in order)."""
    context = multiprocessing.get_context("spawn")
    todo: deque[WorkItem] = deque(items)
    suspects: deque[WorkItem] = deque()  # held by a worker that died with several items

    def start() -> _Worker:
        inbox = context.Queue()
        results, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=worker_main,
            args=(make_runner, options, inbox, sender, os.getpid()),
            name="upres-batch-worker",
            daemon=True,  # a driver that exits normally takes its workers with it
        )
        process.start()
        sender.close()  # the worker holds the only write end: its death reads as EOF here
        return _Worker(process, inbox, results)

    workers = [start() for _ in range(max(1, min(processes, len(items))))]
    crashes = 0  # in a row: reset by every row that comes back
    try:
        while todo or suspects or any(worker.held for worker in workers):
            for worker in workers:
                _feed(worker, todo, suspects)
            ready = wait([worker.results for worker in workers], timeout=POLL_SECONDS)
            for slot, worker in enumerate(workers):
                if worker.results in ready:
                    try:
                        row = _receive(worker, *worker.results.recv())
                    except (EOFError, OSError, pickle.UnpicklingError):
                        pass  # the worker is gone; buried below
                    else:
                        if row is not None:
                            crashes = 0
                            yield row
                        continue
                elif worker.process.is_alive():
                    continue
                yield from _last_words(worker)
                yield from _bury(worker, suspects)
                crashes += 1
                if crashes >= CRASHES_IN_A_ROW:
                    raise WorkerCrashed(_crash_message(worker, crashes))
                workers[slot] = start()
    finally:
        _stop(workers)


def _receive(worker: _Worker, kind: str, payload: Any) -> dict[str, Any] | None:
    """Handle one message from a worker; a finished item's row is returned."""
    if kind == "ready":
        worker.ready = True
    elif kind == "row":
        return _settle(worker, payload)
    elif kind == "error":  # the model could not load: no item can succeed
        raise payload
    return None


def _feed(worker: _Worker, todo: deque[WorkItem], suspects: deque[WorkItem]) -> None:
    """Top up a worker's queue; a replayed suspect travels alone, so a crash names it."""
    if worker.suspect or not worker.process.is_alive():
        return
    if suspects and not worker.held:
        item = suspects.popleft()
        worker.suspect = True
        worker.held.append(item)
        worker.inbox.put(item)
        return
    while todo and len(worker.held) < IN_FLIGHT and not suspects:
        item = todo.popleft()
        worker.held.append(item)
        worker.inbox.put(item)


def _settle(worker: _Worker, row: dict[str, Any]) -> dict[str, Any]:
    """A row came back: its item is no longer held by that worker."""
    for index, item in enumerate(worker.held):
        if item.key == row["input"]:
            del worker.held[index]
            break
    worker.suspect = False
    return row


def _last_words(worker: _Worker) -> Iterator[dict[str, Any]]:
    """Rows a dead worker sent that have not been read yet."""
    try:
        while worker.results.poll():
            row = _receive(worker, *worker.results.recv())
            if row is not None:
                yield row
    except (EOFError, OSError, pickle.UnpicklingError):
        return


def _bury(worker: _Worker, suspects: deque[WorkItem]) -> Iterator[dict[str, Any]]:
    """A worker died (every message it sent has been read): decide about what it held."""
    worker.process.join(timeout=10)  # for its exit code
    if not worker.ready:
        # Died while loading the model (an OOM kill, a crash in a native library).
        raise WorkerCrashed(_crash_message(worker, 1) + " while loading the model")
    if len(worker.held) == 1:  # alone in the worker: this input killed it
        yield _crashed_row(worker.held.popleft(), worker.process.exitcode)
    else:  # any of them might have: replay each alone
        suspects.extendleft(reversed(worker.held))
        worker.held.clear()
    worker.suspect = False


def _crashed_row(item: WorkItem, exitcode: int | None) -> dict[str, Any]:
    how = _exit_description(exitcode)
    return base_row(item) | {
        "kind": None,
        "status": "failed",
        "error": f"{item.key}: the worker process died on this input ({how})",
        "finished_at": time.time(),
    }


def _exit_description(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " - out of memory?" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {exitcode}"


def _crash_message(worker: _Worker, crashes: int) -> str:
    how = _exit_description(worker.process.exitcode)
    return f"the batch's worker process died {crashes} time(s) in a row ({how})"


def _stop(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.process.is_alive():
            worker.inbox.put(None)
    deadline = time.monotonic() + 10
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()


# --------------------------------------------------------------------------- in the worker


def worker_main(
    make_runner: Callable[[], ImageRunner],
    options: ItemOptions,
    inbox: Any,
    results: Connection,
    driver_pid: int,
) -> None:
    """Load the model, then run the pipeline over the items that arrive, row by row."""
    from upres.batch.local import pipeline

    orphaned = threading.Event()
    threading.Thread(target=_watch_driver, args=(driver_pid, orphaned), daemon=True).start()
    try:
        runner = make_runner()
    except Exception as error:  # sent whole: the driver raises what `upres upscale` would
        results.send(("error", _portable(error)))
        return
    results.send(("ready", None))
    try:
        for row in pipeline(runner, _arrivals(inbox, orphaned), options):
            results.send(("row", row))
    except (BrokenPipeError, EOFError):  # the driver is gone: nobody to tell
        return


def _arrivals(inbox: Any, orphaned: threading.Event) -> Iterator[WorkItem]:
    """Items from the driver until it says stop or is gone (then finish what is in hand)."""
    while not orphaned.is_set():
        try:
            item = inbox.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
        if item is None:
            return
        yield item


def _watch_driver(driver_pid: int, orphaned: threading.Event) -> None:
    """A driver killed with SIGKILL sends no stop: notice its end, and stop taking items."""
    while os.getppid() == driver_pid:
        time.sleep(POLL_SECONDS)
    orphaned.set()


def _portable(error: Exception) -> Exception:
    """The error itself when it survives pickling, else an UpresError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return UpresError(str(error))
