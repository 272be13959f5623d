"""Workers take jobs from the store one at a time each and feed them to a shared model.

Models are loaded once per (name, device) and kept in a small LRU cache; an `Upscaler`
is safe to share between threads. Progress lives in memory only: after a restart a job
starts again from its first tile anyway.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from upres.api import ImageRunner, Upscaler, UpscaleReport, load
from upres.engine.plan import resolve_device
from upres.errors import BadInputError, ModelNotFoundError, OutOfMemoryError, UpresError
from upres.io.image import atomic_write, decode_bytes, encode_bytes
from upres.models.state import obtain
from upres.request import UpscaleRequest
from upres.server.config import ServeConfig
from upres.server.jobs import CANCELLED, DONE, FAILED, JobRecord, JobStore
from upres.server.models import needs_download, served_target

log = logging.getLogger("upres.server")
# A model that failed to load (e.g. its download, offline) is tried again after this long.
FAILED_LOAD_RETRY_S = 300.0

# Canonical file suffix per output format name.
SUFFIX = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp", "tiff": "tif", "tif": "tif"}
SUFFIX |= {"bmp": "bmp"}


class ModelCache:
    """(name, device) -> Upscaler, least recently used evicted beyond `size`."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.device = str(resolve_device(config.device))
        self._models: OrderedDict[tuple[str, str], ImageRunner] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._failed: dict[tuple[str, str], tuple[float, UpresError]] = {}

    def get(self, name: str, face: str | None = None) -> ImageRunner:
        target = served_target(name, self.config)  # a models-folder name: its file
        # A model with face restoration is its own entry: the plain one stays shareable.
        key = (name if face is None else f"{name}+{face}", self.device, version_of(target))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            failed = self._failed.get(key)
            if failed is not None and time.monotonic() - failed[0] < FAILED_LOAD_RETRY_S:
                raise failed[1]  # offline, say: don't wait for the same failure every job
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # two workers asking for one new model load it once
            with self._lock:
                if key in self._models:
                    return self._models[key]
            tile = self.config.tile
            try:
                upscaler = load(
                    target,
                    device=self.device,
                    precision=self.config.precision,
                    tile=int(tile) if tile and tile.isdigit() else tile,
                    face_enhance=face,
                )
            except UpresError as error:
                with self._lock:
                    self._failed[key] = (time.monotonic(), error)
                raise
            with self._lock:
                self._failed.pop(key, None)
                self._models[key] = upscaler
                while len(self._models) > self.config.model_cache_size:
                    self._models.popitem(last=False)  # jobs still using it keep a reference
                self._loading.pop(key, None)
            return upscaler

    def loaded(self) -> list[str]:
        with self._lock:
            return [key[0] for key in self._models]


def version_of(target: object) -> int:
    """A models-folder file replaced under the same name is a new model: key on its mtime."""
    try:
        return target.stat().st_mtime_ns if hasattr(target, "stat") else 0
    except OSError:
        return 0


@dataclass
class Progress:
    stage: str = "queued"  # downloading | loading_model | upscaling | encoding
    done: int = 0
    total: int = 0


class Stop(Exception):
    """Raised from the progress callback to leave a running job between two tiles."""

    def __init__(self, reason: str) -> None:
        self.reason = reason  # "cancelled" | "shutdown"


class CompletionHub:
    """Lets an async request wait for a job that a worker thread finishes."""

    def __init__(self) -> None:
        self._waiters: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._lock = threading.Lock()

    def watch(self, job_id: str) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._lock:
            self._waiters[job_id] = (loop, future)
        return future

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._waiters.pop(job_id, None)

    def finished(self, job_id: str, status: str) -> None:
        with self._lock:
            waiter = self._waiters.pop(job_id, None)
        if waiter is not None:
            loop, future = waiter

            def settle() -> None:
                if not future.done():
                    future.set_result(status)

            loop.call_soon_threadsafe(settle)


class WorkerPool:
    def __init__(
        self,
        store: JobStore,
        config: ServeConfig,
        models: ModelCache,
        hub: CompletionHub,
        on_finished: Callable[[JobRecord, str, float], None] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.models = models
        self.hub = hub
        self.on_finished = on_finished
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._progress: dict[str, Progress] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self.mean_seconds = 5.0  # moving average of job time, for Retry-After

    # -- control --------------------------------------------------------------------

    def start(self) -> None:
        for index in range(self.config.workers):
            thread = threading.Thread(target=self._loop, name=f"upres-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Running jobs stop at their next tile and are queued again for the next start."""
        self._stopping.set()
        self.notify()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)

    def progress(self, job_id: str) -> Progress | None:
        with self._lock:
            return self._progress.get(job_id)

    def running(self) -> int:
        with self._lock:
            return len(self._progress)

    # -- the loop -------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            job = self.store.claim_next()
            if job is None:
                with self._wake:
                    self._wake.wait(timeout=1.0)  # also picks up jobs another path queued
                continue
            self._run(job)

    def _run(self, job: JobRecord) -> None:
        started = time.monotonic()
        with self._lock:
            self._progress[job.id] = Progress(stage="loading_model")
        status = FAILED
        try:
            status = self._execute(job)
        except Stop as stop:
            if stop.reason == "shutdown":
                self.store.requeue(job.id)
                status = "requeued"
            else:
                self.store.finish(
                    job.id,
                    CANCELLED,
                    retention=self.config.retention,
                    error={"error": "cancelled", "detail": "cancelled while running"},
                )
                status = CANCELLED
        except Exception as error:  # one bad job must never take the worker down
            self._fail(job, error)
        finally:
            with self._lock:
                self._progress.pop(job.id, None)
                self._cancelled.discard(job.id)
        seconds = time.monotonic() - started
        if status == DONE:
            self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds
        if status != "requeued":
            self.hub.finished(job.id, status)
            if self.on_finished is not None:
                self.on_finished(job, status, seconds)

    def _model_for(self, job: JobRecord) -> tuple[ImageRunner, list[str]]:
        """The job's model, or its fallback (with a note saying why) if it cannot be had."""
        spec = job.spec
        try:
            self._download_if_needed(job)
            return self.models.get(spec.model, spec.face), []
        except UpresError as error:
            if not spec.fallback_model or spec.fallback_model == spec.model:
                raise
            log.warning(
                "model %s unavailable (%s); using %s", spec.model, error, spec.fallback_model
            )
            note = f"{spec.model} could not be loaded here ({error}); used {spec.fallback_model}"
            return self.models.get(spec.fallback_model, spec.face), [note]

    def _download_if_needed(self, job: JobRecord) -> None:
        """Weights the operator lets jobs download: fetched now, bytes as the job's progress."""
        card = needs_download(job.spec.model, self.config)
        if card is None:
            return
        self._set(job.id, stage="downloading", done=0, total=0)
        check = self._progress_callback(job.id)

        def on_bytes(done: int, total: int | None) -> None:
            check(done, total or 0)

        try:
            obtain(card, on_bytes)
        except UpresError as error:  # its message names cache paths: keep those in the log
            log.warning("downloading %s for job %s failed: %s", card.name, job.id, error)
            raise ModelNotFoundError(
                f"could not download {card.name} (the server's log says why)"
            ) from None
        self._set(job.id, stage="loading_model", done=0, total=0)

    def _still(self, job: JobRecord, upscaler: Upscaler) -> UpscaleReport:
        spec = job.spec
        data = self.store.input_path(job.id).read_bytes()
        image = decode_bytes(data, spec.input_name, max_pixels=self.config.max_input_pixels)
        self._set(job.id, stage="upscaling")
        result, report = upscaler.upscale_image(
            image,
            scale=None if spec.exact else spec.scale,
            size=tuple(spec.planned_size) if spec.exact else None,
            sharpen=spec.sharpen,
            alpha=spec.alpha,
            max_input_size=spec.max_input_size or None,
            max_output_pixels=self.config.max_output_pixels,
            progress=self._progress_callback(job.id),
        )
        self._set(job.id, stage="encoding")
        encoded = encode_bytes(result, spec.format, spec.quality)
        atomic_write(self.store.results / f"{job.id}.{SUFFIX[spec.format]}", encoded)
        return report

    def _animation(self, job: JobRecord, upscaler: Upscaler) -> UpscaleReport:
        """Every frame upscaled, written back in the upload's own animated format."""
        spec = job.spec
        width, height = spec.planned_size
        size = {"width": width, "height": height, "long_side": max(width, height)}
        self._set(job.id, stage="upscaling")
        done = upscaler.upscale_file(
            self.store.input_path(job.id),
            self.store.results / f"{job.id}.{spec.animation}",
            request=UpscaleRequest(
                scale=None if spec.exact else spec.scale,
                **({spec.exact: size[spec.exact]} if spec.exact else {}),
                sharpen=spec.sharpen,
                alpha=spec.alpha,
                quality=spec.quality,
                max_input_size=spec.max_input_size or None,
                max_input_pixels=self.config.max_input_pixels,
                max_output_pixels=self.config.max_output_pixels,
                overwrite=True,
            ),
            progress=self._progress_callback(job.id),
        )
        assert done.report is not None
        return done.report

    def _execute(self, job: JobRecord) -> str:
        spec = job.spec
        upscaler, notes = self._model_for(job)
        if spec.animation:
            ext, report = spec.animation, self._animation(job, upscaler)
        else:
            ext, report = SUFFIX[spec.format], self._still(job, upscaler)
        finished = self.store.finish(
            job.id,
            DONE,
            retention=self.config.retention,
            output_size=report.output_size,
            notes=[*spec.notes, *notes, *report.notes],
            result_ext=ext,
            model_used=upscaler.name,
        )
        if not finished:  # deleted while it ran: nobody wants the file
            (self.store.results / f"{job.id}.{ext}").unlink(missing_ok=True)
            return CANCELLED
        return DONE

    def _progress_callback(self, job_id: str) -> Callable[[int, int], None]:
        def on_tile(done: int, total: int) -> None:
            self._set(job_id, done=done, total=total)
            if self._stopping.is_set():
                raise Stop("shutdown")
            with self._lock:
                if job_id in self._cancelled:
                    raise Stop("cancelled")

        return on_tile

    def _set(self, job_id: str, **changes: object) -> None:
        with self._lock:
            progress = self._progress.get(job_id)
            if progress is not None:
                for name, value in changes.items():
                    setattr(progress, name, value)

    def _fail(self, job: JobRecord, error: Exception) -> None:
        if isinstance(error, BadInputError):
            body = {"error": "bad_image", "detail": str(error)}
        elif isinstance(error, OutOfMemoryError):
            body = {"error": "out_of_memory", "detail": str(error)}
        elif isinstance(error, UpresError | ValueError):
            body = {"error": "failed", "detail": str(error)}
        else:
            log.exception("job %s failed", job.id)
            body = {"error": "internal", "detail": f"{type(error).__name__}: {error}"}
        body["code"] = body["error"]  # the page translates by it
        self.store.finish(job.id, FAILED, retention=self.config.retention, error=body)
