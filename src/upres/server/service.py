"""Service state shared by the routes, and intake: every check made before a job exists.

The store, the workers, the model cache and the metrics live here; routes only speak HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi import Request, UploadFile
from starlette.concurrency import run_in_threadpool

from upres.errors import BadInputError, RequestError
from upres.io.image import Image, decode_bytes
from upres.request import UpscaleRequest
from upres.server import limits
from upres.server.config import ServeConfig
from upres.server.jobs import (
    DONE,
    EXPIRED,
    FINISHED,
    QUEUED,
    RUNNING,
    JobRecord,
    JobSpec,
    JobStore,
    QueueFullError,
    valid_job_id,
)
from upres.server.limits import ServiceError
from upres.server.metrics import Metrics
from upres.server.models import choose, choose_face, restoration
from upres.server.schemas import JobBody, Options, ProgressBody
from upres.server.worker import CompletionHub, ModelCache, WorkerPool

log = logging.getLogger("upres.server")


def timestamp(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


class Service:
    """Everything the routes share; started and stopped by the app's lifespan."""

    def __init__(self, config: ServeConfig, run_workers: bool) -> None:
        self.config = config
        self.run_workers = run_workers
        self.metrics = Metrics()
        self.hub = CompletionHub()
        self.models = ModelCache(config)
        self.intake = asyncio.Semaphore(config.intake_concurrency)
        self._store: JobStore | None = None
        self._pool: WorkerPool | None = None
        self._stop_cleaner = threading.Event()
        self._cleaner: threading.Thread | None = None
        self.metrics.watch_state(self._counts, self.models.loaded)

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise RuntimeError("the service is not started")
        return self._store

    @property
    def pool(self) -> WorkerPool:
        if self._pool is None:
            raise RuntimeError("the service is not started")
        return self._pool

    def _counts(self) -> dict[str, int]:
        return self._store.counts() if self._store is not None else {}

    def start(self) -> None:
        self._store = JobStore(self.config.data_dir)
        requeued, failed = self._store.recover(self.config.max_attempts)
        if requeued or failed:
            log.info(
                "resumed %d interrupted job(s); %d failed after repeated crashes", requeued, failed
            )
        self._store.expire()
        self._pool = WorkerPool(
            self._store, self.config, self.models, self.hub, on_finished=self._finished
        )
        if self.run_workers:
            self._pool.start()
        self._cleaner = threading.Thread(target=self._clean, name="upres-cleaner", daemon=True)
        self._cleaner.start()

    def stop(self) -> None:
        self._stop_cleaner.set()
        if self._cleaner is not None:
            self._cleaner.join(10)  # never close the store under a sweep
        if self._pool is not None:
            self._pool.stop()
        if self._store is not None:
            self._store.close()

    def _clean(self) -> None:
        while not self._stop_cleaner.wait(self.config.cleanup_interval):
            try:
                self.store.expire()
            except Exception:  # a failed sweep is retried at the next interval
                log.exception("cleaning expired results failed")

    def _finished(self, job: JobRecord, status: str, seconds: float) -> None:
        self.metrics.jobs_finished.labels(status).inc()
        if status == DONE:
            self.metrics.job_seconds.observe(seconds)

    def retry_after(self) -> int:
        """A guess at when a slot frees up: the queue ahead times the mean job time."""
        waiting = self.store.queued_count() / self.config.workers + 1
        return max(1, min(300, math.ceil(waiting * self.pool.mean_seconds)))

    def queue_full(self, queued: int) -> ServiceError:
        return ServiceError(
            429,
            "queue_full",
            f"{queued} jobs are waiting; try again later",
            limit="queue_size",
            value=self.config.queue_size,
            headers={"Retry-After": str(self.retry_after())},
        )

    # -- jobs -------------------------------------------------------------------------

    def body(self, record: JobRecord) -> JobBody:
        spec = record.spec
        status = record.status
        if status in FINISHED and record.expires_at is not None:
            status = EXPIRED if record.expires_at <= time.time() else status
        live = self.pool.progress(record.id) if status == RUNNING else None
        done = total = 1 if status == DONE else 0
        if live is not None:
            done, total = live.done, live.total
        stage = live.stage if live is not None else status
        return JobBody(
            id=record.id,
            status=status,
            model=record.model_used or spec.model,
            detail=spec.detail,
            face=spec.face,
            scale=spec.scale,
            sharpen=spec.sharpen,
            format=spec.format,
            input_size=spec.input_size,
            output_size=record.output_size or spec.planned_size,
            progress=ProgressBody(
                stage=stage, done=done, total=total, fraction=done / total if total else 0.0
            ),
            queue_position=self.store.position(record) if status == QUEUED else None,
            notes=[limits.without_paths(note) for note in record.notes],
            error=limits.scrubbed(record.error),
            created_at=timestamp(record.created_at),
            started_at=timestamp(record.started_at),
            finished_at=timestamp(record.finished_at),
            expires_at=timestamp(record.expires_at),
            result_url=f"/v1/jobs/{record.id}/result" if status == DONE else None,
        )

    def record(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id) if valid_job_id(job_id) else None
        if record is None:
            raise ServiceError(404, "job_not_found", f"no job {job_id!r} (never, or long expired)")
        return record


def service_of(request: Request) -> Service:
    return request.app.state.service


def checked_image(data: bytes, name: str, config: ServeConfig, *, sync: bool) -> Image:
    """The decoded upload, after the limits that need only its size and its header."""
    limits.check_upload_size(len(data), config)
    limits.refuse_video(data, name)
    size = limits.header_size(data, name)
    limits.check_input_pixels(size, config.max_input_pixels, "max_input_pixels")
    if sync:
        limits.check_input_pixels(
            size,
            config.sync_max_input_pixels,
            "sync_max_input_pixels",
            "; send bigger images to POST /v1/jobs",
        )
    try:  # the whole file, so a truncated one is refused now, not half-way through a job
        return decode_bytes(data, name, max_pixels=config.max_input_pixels)
    except BadInputError as error:
        raise limits.bad_image(error) from None


def intake(data: bytes, name: str, options: Options, config: ServeConfig, *, sync: bool) -> JobSpec:
    """Refuse what breaks a limit or is not an image; return the job to run."""
    request = checked_request(options, config)  # the same rules as the CLI and the API
    choice = choose(options.model, options.detail, options.scale, config)
    image = checked_image(data, name, config, sync=sync)
    size = (image.width, image.height)  # after EXIF rotation
    model_input, output = limits.planned_output(size, 1.0, config.max_input_size)
    output = request.output_size(*model_input, choice.scale)
    scale = request.scale or max(output[0] / model_input[0], output[1] / model_input[1])
    if scale > config.max_scale:
        raise limits.limit_error(
            422, "scale_too_large", "max_scale", config.max_scale, f"scale {scale:g} is too large"
        )
    limits.check_output_pixels(output, scale, config)
    animation = limits.animation_format(data, name)
    return JobSpec(
        model=choice.name,
        scale=round(scale, 6),
        sharpen=request.sharpen,
        format=animation or ("jpg" if options.format == "jpeg" else options.format),
        quality=request.quality,
        detail=options.detail,
        face=choose_face(options.face, config),
        max_input_size=config.max_input_size,
        input_name=name,
        input_size=size,
        planned_size=output,
        notes=choice.notes,
        fallback_model=None if options.model else restoration(config).name,
        exact=exact_dimension(request),
        alpha=request.alpha,
        animation=animation,
    )


def exact_dimension(request: UpscaleRequest) -> str:
    for name in ("width", "height", "long_side"):
        if getattr(request, name):
            return name
    return ""


def checked_request(options: Options, config: ServeConfig) -> UpscaleRequest:
    """The form's options as an UpscaleRequest; a broken rule is a 422 naming the field."""
    try:
        return UpscaleRequest(
            scale=options.scale,
            width=options.width,
            height=options.height,
            long_side=options.long_side,
            sharpen=options.sharpen,
            alpha=options.alpha,
            quality=options.quality,
            max_output_pixels=config.max_output_pixels,
        )
    except RequestError as error:
        problem = {"field": error.option, "problem": error.problem}
        raise ServiceError(
            422, "invalid_option", str(error), extra={"problems": [problem]}
        ) from None


async def accept(
    service: Service, file: UploadFile, options: Options, *, sync: bool
) -> tuple[JobSpec, bytes]:
    # A bad upload gets its own answer even when the queue is full (429 only says "later",
    # and retrying a broken file helps nobody); the semaphore keeps that checking cheap.
    config = service.config
    data = await file.read(config.max_upload_bytes + 1)
    name = Path(file.filename or "upload").name[:200]
    async with service.intake:  # bounds the memory that decoding uploads can take
        spec = await run_in_threadpool(intake, data, name, options, config, sync=sync)
    return spec, data


async def submit(service: Service, spec: JobSpec, data: bytes, *, sync: bool) -> JobRecord:
    try:
        record = await run_in_threadpool(
            service.store.submit, spec, data, capacity=service.config.queue_size, sync=sync
        )
    except QueueFullError as full:
        raise service.queue_full(full.queued) from None
    service.pool.notify()
    return record
