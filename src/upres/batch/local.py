"""Run a batch in this process: the reference runner, and the one without Ray."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from upres.api import ImageRunner
from upres.batch.item import ItemOptions, WorkItem, process_item


def run_local(
    items: list[WorkItem], make_runner: Callable[[], ImageRunner], options: ItemOptions
) -> Iterator[dict]:
    """Yield one manifest row per item, in order, as each finishes."""
    if not items:
        return
    runner = make_runner()  # loaded only when there is work: a no-op re-run stays instant
    for item in items:
        yield process_item(runner, item, options)
