"""The batch manifest: one JSON line per finished input, appended by the driver only.

JSON lines (not SQLite) so that it lives on any fsspec filesystem next to the outputs and
a person can read it with `jq`. The last row for an input wins, so a retry simply appends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import fsspec

MANIFEST_NAME = ".upres-manifest.jsonl"


@dataclass
class Manifest:
    fs: fsspec.AbstractFileSystem
    path: str  # the manifest file on `fs`
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # input key -> last row

    @classmethod
    def open(cls, fs: fsspec.AbstractFileSystem, folder: str) -> Manifest:
        manifest = cls(fs, f"{folder.rstrip('/')}/{MANIFEST_NAME}")
        manifest._load()
        return manifest

    def _load(self) -> None:
        if not self.fs.exists(self.path):
            return
        with self.fs.open(self.path, "rb") as handle:
            for line in handle.read().decode("utf-8").splitlines():
                row = _parse(line)
                if row is not None:
                    self.rows[row["input"]] = row

    def append(self, row: dict[str, Any]) -> None:
        """Record one result; flushed at once so a crashed driver loses at most this row."""
        self.fs.makedirs(self.fs._parent(self.path), exist_ok=True)
        with self.fs.open(self.path, "ab") as handle:
            handle.write((json.dumps(row, sort_keys=True) + "\n").encode("utf-8"))
        self.rows[row["input"]] = row

    def settled(self, key: str, fingerprint: str, retry_failed: bool = False) -> bool:
        """Whether an input needs no work: done with its output present, or failed before.

        A changed input (size/mtime fingerprint) is always redone. A failed row stands
        unless asked to retry: the same unchanged bytes would fail the same way.
        """
        row = self.rows.get(key)
        if row is None or row.get("fingerprint") != fingerprint:
            return False
        if row.get("status") == "done":
            return bool(self.fs.exists(row["output"]))
        return row.get("status") == "failed" and not retry_failed


def _parse(line: str) -> dict[str, Any] | None:
    # A driver killed mid-write can leave a torn last line; it is ignored (that input redone).
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) and "input" in row else None
