"""The job store: SQLite rows for state, files in the data dir for images.

Layout of the data dir:

    jobs.sqlite3        one row per job (WAL journal, synchronous=FULL)
    inputs/<id>         the upload, written before its row is committed
    results/<id>.<ext>  the result, written atomically before its row says "done"
    lock                held while a server uses the dir (a second server is refused)

The order of writes makes a `kill -9` at any point safe: a committed "queued" row always
has its input, a "done" row always has its complete result, and a row left "running" is
queued again at the next start.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from upres.io.image import atomic_write

QUEUED, RUNNING, DONE, FAILED, CANCELLED, EXPIRED = (
    "queued",
    "running",
    "done",
    "failed",
    "cancelled",
    "expired",
)
FINISHED = (DONE, FAILED, CANCELLED)
# Rows of expired jobs answer "expired" (410) for this long, then disappear.
TOMBSTONE_SECONDS = 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    sync INTEGER NOT NULL DEFAULT 0,
    spec TEXT NOT NULL,
    output_size TEXT,
    notes TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    result_ext TEXT,
    model_used TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, sync, created_at);
"""


class JobSpec(BaseModel):
    """What to do, fixed at submission (so a restart runs exactly what was asked)."""

    model: str
    scale: float
    sharpen: float = 0.0
    format: str = "png"
    quality: int | None = None
    detail: bool = True
    face: str | None = None  # face model restoring the faces (upres.faces), or None
    max_input_size: int = 0
    input_name: str = "upload"
    input_size: tuple[int, int]
    planned_size: tuple[int, int]
    notes: list[str] = []
    # Chosen by role (not by name): used instead if `model` cannot be loaded here.
    fallback_model: str | None = None
    # "width", "height" or "long_side" when an exact size was asked: planned_size is it.
    exact: str = ""
    alpha: str = "model"
    animation: str | None = None  # gif/webp/png: an animated upload, answered in kind


@dataclass
class JobRecord:
    id: str
    status: str
    sync: bool
    spec: JobSpec
    created_at: float
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    output_size: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)
    error: dict | None = None
    result_ext: str | None = None
    model_used: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        output = json.loads(row["output_size"]) if row["output_size"] else None
        return cls(
            id=row["id"],
            status=row["status"],
            sync=bool(row["sync"]),
            spec=JobSpec.model_validate_json(row["spec"]),
            created_at=row["created_at"],
            attempts=row["attempts"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            expires_at=row["expires_at"],
            output_size=tuple(output) if output else None,
            notes=json.loads(row["notes"]),
            error=json.loads(row["error"]) if row["error"] else None,
            result_ext=row["result_ext"],
            model_used=row["model_used"],
        )


class QueueFullError(Exception):
    def __init__(self, queued: int) -> None:
        self.queued = queued
        super().__init__(f"{queued} jobs are queued")


class DataDirBusyError(Exception):
    """Another server already uses this data dir."""


def new_job_id() -> str:
    return uuid.uuid4().hex


def valid_job_id(job_id: str) -> bool:
    # Ids name files: only our own 32 hex digits ever reach the file system.
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


class JobStore:
    """Thread-safe: one connection, one lock; every method is a short transaction."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.inputs = self.data_dir / "inputs"
        self.results = self.data_dir / "results"
        for folder in (self.inputs, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._take_dir_lock()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.data_dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def _take_dir_lock(self) -> Any:
        handle = open(self.data_dir / "lock", "a+")  # noqa: SIM115 (held for the store's life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DataDirBusyError(
                f"{self.data_dir} is in use by another upres server; give each its own --data-dir"
            ) from None
        return handle

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._lock_file.close()

    # -- paths ----------------------------------------------------------------------

    def input_path(self, job_id: str) -> Path:
        return self.inputs / job_id

    def result_path(self, record: JobRecord) -> Path | None:
        if record.result_ext is None:
            return None
        return self.results / f"{record.id}.{record.result_ext}"

    def _remove_files(self, job_id: str) -> None:
        self.input_path(job_id).unlink(missing_ok=True)
        for path in self.results.glob(f"{job_id}.*"):
            path.unlink(missing_ok=True)

    # -- reading --------------------------------------------------------------------

    def _query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", job_id)
        return JobRecord.from_row(rows[0]) if rows else None

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        counts = dict.fromkeys((QUEUED, RUNNING, DONE, FAILED, CANCELLED, EXPIRED), 0)
        counts.update({row["status"]: row["n"] for row in rows})
        return counts

    def queued_count(self) -> int:
        rows = self._query("SELECT COUNT(*) AS n FROM jobs WHERE status = ?", QUEUED)
        return int(rows[0]["n"])

    def position(self, record: JobRecord) -> int:
        """1 for the next job to run; the order is the one `claim_next` uses."""
        rows = self._query(
            "SELECT COUNT(*) AS n FROM jobs WHERE status = ? AND"
            " (sync > ? OR (sync = ? AND (created_at < ? OR (created_at = ? AND id < ?))))",
            QUEUED,
            int(record.sync),
            int(record.sync),
            record.created_at,
            record.created_at,
            record.id,
        )
        return int(rows[0]["n"]) + 1

    # -- changes --------------------------------------------------------------------

    def submit(
        self,
        spec: JobSpec,
        data: bytes,
        *,
        capacity: int,
        sync: bool = False,
        job_id: str | None = None,
    ) -> JobRecord:
        """Store the input, then the row; raise QueueFullError when `capacity` jobs wait."""
        job_id = job_id or new_job_id()
        atomic_write(self.input_path(job_id), data)
        now = time.time()
        with self._lock:
            queued = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = ?", (QUEUED,)
            ).fetchone()[0]
            if queued >= capacity:
                self.input_path(job_id).unlink(missing_ok=True)
                raise QueueFullError(queued)
            self._db.execute(
                "INSERT INTO jobs (id, status, sync, spec, notes, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, QUEUED, int(sync), spec.model_dump_json(), json.dumps(spec.notes), now),
            )
        return JobRecord(job_id, QUEUED, sync, spec, now, notes=list(spec.notes))

    def claim_next(self) -> JobRecord | None:
        """Atomically take the oldest queued job (synchronous requests first)."""
        with self._lock:
            row = self._db.execute(
                "UPDATE jobs SET status = ?, started_at = ?, attempts = attempts + 1"
                " WHERE id = (SELECT id FROM jobs WHERE status = ?"
                "             ORDER BY sync DESC, created_at, id LIMIT 1)"
                " RETURNING *",
                (RUNNING, time.time(), QUEUED),
            ).fetchone()
        return JobRecord.from_row(row) if row else None

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        retention: float,
        output_size: tuple[int, int] | None = None,
        notes: list[str] | None = None,
        error: dict | None = None,
        result_ext: str | None = None,
        model_used: str | None = None,
    ) -> bool:
        """running -> done/failed/cancelled; False if the job is no longer running."""
        now = time.time()
        with self._lock:
            changed = self._db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, expires_at = ?, output_size = ?,"
                " notes = COALESCE(?, notes), error = ?, result_ext = ?, model_used = ?"
                " WHERE id = ? AND status = ?",
                (
                    status,
                    now,
                    now + retention,
                    json.dumps(list(output_size)) if output_size else None,
                    json.dumps(notes) if notes is not None else None,
                    json.dumps(error) if error else None,
                    result_ext,
                    model_used,
                    job_id,
                    RUNNING,
                ),
            ).rowcount
        # The input has served its purpose once the job is over (or never will run).
        self.input_path(job_id).unlink(missing_ok=True)
        return changed == 1

    def requeue(self, job_id: str) -> None:
        """A job interrupted by a clean shutdown runs again at the next start."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, started_at = NULL, attempts = MAX(attempts - 1, 0)"
                " WHERE id = ? AND status = ?",
                (QUEUED, job_id, RUNNING),
            )

    def cancel_queued(self, job_id: str, retention: float) -> bool:
        now = time.time()
        with self._lock:
            changed = self._db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, expires_at = ?,"
                " error = ? WHERE id = ? AND status = ?",
                (
                    CANCELLED,
                    now,
                    now + retention,
                    json.dumps({"error": "cancelled", "detail": "cancelled before it ran"}),
                    job_id,
                    QUEUED,
                ),
            ).rowcount
        if changed:
            self.input_path(job_id).unlink(missing_ok=True)
        return changed == 1

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self._remove_files(job_id)

    def recover(self, max_attempts: int) -> tuple[int, int]:
        """At start: resume what a crash interrupted. Returns (requeued, failed)."""
        error = json.dumps(
            {
                "error": "crashed",
                "detail": f"the server stopped while running this job {max_attempts} times",
            }
        )
        now = time.time()
        with self._lock:
            # Nobody waits for a synchronous request any more: drop it.
            gone = self._db.execute(
                "DELETE FROM jobs WHERE sync = 1 AND status IN (?, ?) RETURNING id",
                (QUEUED, RUNNING),
            ).fetchall()
            failed = self._db.execute(
                "UPDATE jobs SET status = ?, error = ?, finished_at = ?, expires_at = ?"
                " WHERE status = ? AND attempts >= ?",
                (FAILED, error, now, now + TOMBSTONE_SECONDS, RUNNING, max_attempts),
            ).rowcount
            requeued = self._db.execute(
                "UPDATE jobs SET status = ?, started_at = NULL WHERE status = ?",
                (QUEUED, RUNNING),
            ).rowcount
            known = {row[0] for row in self._db.execute("SELECT id FROM jobs")}
        for row in gone:
            self._remove_files(row[0])
        self._remove_strays(known)
        return requeued, failed

    def _remove_strays(self, known: set[str]) -> None:
        """Temporary files of interrupted writes, and files whose row was never committed."""
        for folder in (self.inputs, self.results):
            for path in folder.iterdir():
                if path.name.startswith(".") or path.name.split(".")[0] not in known:
                    path.unlink(missing_ok=True)

    def expire(self, now: float | None = None) -> int:
        """Finished jobs past their retention lose their files; old tombstones go."""
        now = time.time() if now is None else now
        with self._lock:
            expired = self._db.execute(
                "UPDATE jobs SET status = ?, result_ext = NULL"
                " WHERE status IN (?, ?, ?) AND expires_at <= ? RETURNING id",
                (EXPIRED, DONE, FAILED, CANCELLED, now),
            ).fetchall()
            self._db.execute(
                "DELETE FROM jobs WHERE status = ? AND expires_at <= ?",
                (EXPIRED, now - TOMBSTONE_SECONDS),
            )
        for row in expired:
            self._remove_files(row[0])
        return len(expired)
