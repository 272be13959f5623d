"""Downloads into the model cache: resumable, verified, with progress and a clear offline error.

A download lands in `<file>.part` beside its final place, so a broken connection (or a
killed process) leaves a partial file that the next attempt resumes with an HTTP Range
request. Only a complete file whose sha256 checks out is moved into place, with the
usual sidecar (see cache.store); a file with the wrong hash is refused and removed.
"""

from __future__ import annotations

import http.client
import os
import re
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.error import HTTPError, URLError

from upres.errors import ModelNotFoundError
from upres.models.cache import store

# Bytes done, and the total when the server says it.
Progress = Callable[[int, int | None], None]

CHUNK = 1 << 20
TIMEOUT_S = 30.0
ATTEMPTS = 3  # a connection that breaks mid-file is resumed this many times in one call
HTTP_RANGE_NOT_SATISFIABLE = 416


class Interrupted(Exception):
    """The connection broke off mid-body; what arrived is kept in the .part file."""


def partial_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def download(
    url: str,
    target: Path,
    expected_sha256: str | None,
    *,
    label: str,
    progress: Progress | None = None,
    attempts: int = ATTEMPTS,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Fetch `url` into `target` (resuming a .part), verify it, record its sha256."""
    part = partial_path(target)
    part.parent.mkdir(parents=True, exist_ok=True)
    with progress_for(label, progress) as report:
        for _attempt in range(max(1, attempts)):
            try:
                fetch_into(url, part, target, label, report, timeout)
                break
            except Interrupted as error:
                broken = error
        else:
            kept = part.stat().st_size if part.exists() else 0
            raise ModelNotFoundError(
                f"download of {label} from {url} broke off ({broken}); {kept} bytes kept in"
                f" {part}: run again to resume, or save the whole file as {target}"
            )
    # store() hashes the complete file; a mismatch removes it, so nothing wrong stays.
    return store(target, lambda temporary: os.replace(part, temporary), expected_sha256, label)


def fetch_into(
    url: str, part: Path, target: Path, label: str, report: Progress, timeout: float
) -> None:
    """One request: append to the .part from where it ends, or start it again."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "upres"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except HTTPError as error:
        if error.code == HTTP_RANGE_NOT_SATISFIABLE and have:
            return  # the .part is already whole; its hash decides
        raise ModelNotFoundError(
            f"cannot download {label}: {url} answered HTTP {error.code} {error.reason};"
            f" save the file by hand as {target}"
        ) from None
    except (URLError, OSError, http.client.HTTPException) as error:
        raise ModelNotFoundError(unreachable(label, url, target, error)) from None
    with response:
        resumed = have > 0 and response.status == 206 and range_start(response) == have
        done = have if resumed else 0  # a server that ignores Range sends it all again
        length = response.headers.get("Content-Length")
        total = done + int(length) if length and length.isdigit() else None
        report(done, total)
        with open(part, "ab" if resumed else "wb") as out:
            done = copy_body(response, out, done, total, report)
    if total is not None and done < total:
        raise Interrupted(f"{done} of {total} bytes")


def copy_body(response, out, done: int, total: int | None, report: Progress) -> int:
    while True:
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as error:
            raise Interrupted(describe(error)) from None
        if not chunk:
            return done
        out.write(chunk)
        done += len(chunk)
        report(done, total)


def range_start(response) -> int | None:
    """Where a 206 answer starts, from `Content-Range: bytes START-END/TOTAL`."""
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def unreachable(label: str, url: str, target: Path, error: BaseException) -> str:
    return (
        f"cannot download {label}: {url} is unreachable ({describe(error)});"
        f" offline? save the file by hand as {target}"
    )


def describe(error: BaseException) -> str:
    """One short line for connection errors, whose reasons nest (URLError(gaierror(...)))."""
    reason = getattr(error, "reason", None)
    if isinstance(reason, BaseException):
        error = reason
    text = str(error) or type(error).__name__
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def progress_for(label: str, progress: Progress | None) -> Iterator[Progress]:
    """The caller's callback, or a rich progress bar on stderr."""
    if progress is not None:
        yield progress
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichProgress

    console = Console(file=sys.stderr)
    with RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(f"downloading {label}", total=None)

        def report(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield report
