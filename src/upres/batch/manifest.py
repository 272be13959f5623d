"""The batch manifest: one JSON line per finished input, appended by the driver only.

JSON lines (not SQLite) so that it lives on any fsspec filesystem next to the outputs and
a person can read it with `jq`. The last row for an input wins, so a retry simply appends.

At 100k inputs the driver keeps only what skipping needs, per input key: a small tuple
(fingerprint, status, output), looked up in a dict (O(1) per item); the full rows stay in
the file. The file is held open and flushed after every row, so a killed driver loses at
most the row being written; on object stores, whose files appear only when closed, it is
closed and reopened every `COMMIT_SECONDS` so that a crash loses at most that much.
"""

from __future__ import annotations

import json
import os
import time
from typing import IO, Any, NamedTuple

import fsspec
from fsspec.implementations.local import LocalFileSystem

MANIFEST_NAME = ".upres-manifest.jsonl"
COMMIT_SECONDS = 30.0  # object stores only: how much a crashed driver can lose


class Settled(NamedTuple):
    """What the manifest remembers about an input between runs."""

    fingerprint: str
    status: str  # done | failed
    output: str


class Manifest:
    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.fs = fs
        self.path = path  # the manifest file on `fs`
        self.rows: dict[str, Settled] = {}  # input key -> its last row, compacted
        self._handle: IO[bytes] | None = None
        self._opened = 0.0
        self._torn = False  # the file ends in a partial line (a driver killed mid-write)
        # Local files are appended in place; elsewhere an open file is not yet visible.
        self._commits = not isinstance(fs, LocalFileSystem)

    @classmethod
    def open(cls, fs: fsspec.AbstractFileSystem, folder: str) -> Manifest:
        manifest = cls(fs, f"{folder.rstrip('/')}/{MANIFEST_NAME}")
        manifest._load()
        return manifest

    def _load(self) -> None:
        if not self.fs.exists(self.path):
            return
        with self.fs.open(self.path, "rb") as handle:
            for line in handle:  # line by line: the file is never held whole
                self._remember(_parse(line))
                self._torn = not line.endswith(b"\n")

    def _remember(self, row: dict[str, Any] | None) -> None:
        if row is not None:
            fingerprint = str(row.get("fingerprint"))
            self.rows[row["input"]] = Settled(fingerprint, str(row.get("status")), row["output"])

    def append(self, row: dict[str, Any]) -> None:
        """Record one result; flushed at once so a crashed driver loses at most this row."""
        handle = self._writer()
        handle.write((json.dumps(row, sort_keys=True) + "\n").encode("utf-8"))
        handle.flush()
        self._remember(row)

    def _writer(self) -> IO[bytes]:
        stale = time.monotonic() - self._opened > COMMIT_SECONDS
        if self._handle is not None and self._commits and stale:
            self.close()
        if self._handle is None:
            self.fs.makedirs(self.fs._parent(self.path), exist_ok=True)
            self._handle = self.fs.open(self.path, "ab")
            self._opened = time.monotonic()
            if self._torn:  # end the torn line, or the next row would be glued to it
                self._handle.write(b"\n")
                self._torn = False
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def settled(self, key: str, fingerprint: str, retry_failed: bool = False) -> bool:
        """Whether an input needs no work: done with its output present, or failed before.

        A changed input (size/mtime fingerprint) is always redone. A failed row stands
        unless asked to retry: the same unchanged bytes would fail the same way.
        """
        row = self.rows.get(key)
        if row is None or row.fingerprint != fingerprint:
            return False
        if row.status == "done":
            return self._exists(row.output)
        return row.status == "failed" and not retry_failed

    def _exists(self, url: str) -> bool:
        if not self._commits and url.startswith("file://"):  # 50k fsspec info() calls: seconds
            return os.path.exists(url.removeprefix("file://"))
        return bool(self.fs.exists(url))


def _parse(line: bytes) -> dict[str, Any] | None:
    # A driver killed mid-write can leave a torn last line; it is ignored (that input redone).
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    ok = isinstance(row, dict) and "input" in row and "output" in row
    return row if ok else None
