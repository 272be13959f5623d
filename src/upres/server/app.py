"""The HTTP service: job API, synchronous upscale, models, health, metrics and the web page.

`create_app(config)` builds the FastAPI app; `upres serve` runs it under uvicorn. The
store is opened (and crashed jobs resumed) when the app starts, not when it is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, BinaryIO, Literal

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import upres
from upres.server.config import ServeConfig
from upres.server.jobs import (
    DONE,
    EXPIRED,
    QUEUED,
    RUNNING,
    JobRecord,
    JobSpec,
    QueueFullError,
    new_job_id,
)
from upres.server.limits import BodyLimitMiddleware, ServiceError
from upres.server.metrics import MetricsMiddleware
from upres.server.models import catalogue
from upres.server.schemas import (
    ERRORS,
    ErrorBody,
    HealthBody,
    JobBody,
    ModelsBody,
    Options,
    QueueBody,
)
from upres.server.service import Service, accept, service_of, submit

STATIC_DIR = Path(str(importlib.resources.files("upres.server") / "static"))
MEDIA_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "tif": "image/tiff",
    "bmp": "image/bmp",
    "gif": "image/gif",
}
OutputFormat = Literal["png", "jpg", "jpeg", "webp", "tiff", "bmp"]
# Multipart framing and the option fields ride on top of the file itself.
MULTIPART_SLACK = 64 * 1024


ServiceDep = Annotated[Service, Depends(service_of)]


# -- access ---------------------------------------------------------------------------

_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def require_key(
    service: ServiceDep,
    key: Annotated[str | None, Depends(_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = service.config.key
    if expected is None:
        return
    given = key or (bearer.credentials if bearer is not None else None)
    if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
        raise ServiceError(
            401,
            "unauthorized",
            "this server needs an API key: send it as X-API-Key or Authorization: Bearer",
            headers={"WWW-Authenticate": "Bearer"},
        )


# -- the app ------------------------------------------------------------------------


def create_app(config: ServeConfig | None = None, *, run_workers: bool = True) -> FastAPI:
    """run_workers=False accepts and stores jobs without running them (tests, draining)."""
    config = config or ServeConfig.from_env()
    service = Service(config, run_workers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="upres",
        version=upres.__version__,
        summary="Image super-resolution as a service: jobs, a synchronous endpoint, a web page.",
        lifespan=lifespan,
        docs_url=None,  # the interactive docs load scripts from a CDN; the page must not
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(
        BodyLimitMiddleware,
        limit=config.max_upload_bytes + MULTIPART_SLACK,
        max_upload_bytes=config.max_upload_bytes,
    )
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    add_error_handlers(app, service)
    add_api_routes(app)
    add_ops_routes(app)
    add_page_routes(app)
    return app


def add_error_handlers(app: FastAPI, service: Service) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> JSONResponse:
        if error.status < 500:
            service.metrics.refusals.labels(error.error).inc()
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(p) for p in e["loc"] if p not in ("body", "query")),
                "problem": e["msg"],
            }
            for e in error.errors()
        ]
        detail = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        service.metrics.refusals.labels("invalid_option").inc()
        body = {"error": "invalid_option", "code": "invalid_option", "detail": detail}
        body["problems"] = problems
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "bad_request")
        return JSONResponse(
            {"error": code, "code": code, "detail": str(error.detail)},
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )


def options_form(
    model: Annotated[
        str | None, Form(description="A built-in model name; default: chosen by `detail`")
    ] = None,
    scale: Annotated[float | None, Form(description="Default: the model's")] = None,
    sharpen: Annotated[float, Form(description="Unsharp mask amount, 0..1")] = 0.0,
    format: Annotated[OutputFormat, Form()] = "png",
    quality: Annotated[int | None, Form(description="JPEG/WebP, 1..100")] = None,
    detail: Annotated[
        bool,
        Form(description="Detail reconstruction: on = restoration model, off = faithful model"),
    ] = True,
    width: Annotated[int | None, Form(description="Exact result width (aspect kept)")] = None,
    height: Annotated[int | None, Form(description="Exact result height (aspect kept)")] = None,
    long_side: Annotated[
        int | None, Form(description="Exact length of the result's longer side")
    ] = None,
    alpha: Annotated[str, Form(description="model or bicubic: how alpha is upscaled")] = "model",
    face: Annotated[
        str | None,
        Form(description="Restore faces: on (gfpgan-v1.4), off, or a face model's name"),
    ] = None,
) -> Options:
    # The ranges are the request's (upres.request), checked at intake with its messages.
    return Options(
        model=model or None,
        scale=scale,
        sharpen=sharpen,
        format=format,
        quality=quality,
        detail=detail,
        width=width,
        height=height,
        long_side=long_side,
        alpha=alpha,
        face=face,
    )


OptionsDep = Annotated[Options, Depends(options_form)]
Upload = Annotated[UploadFile, File(description="The image: PNG, JPEG, WebP, TIFF or BMP")]


def add_api_routes(app: FastAPI) -> None:
    keyed = [Depends(require_key)]

    @app.post(
        "/v1/jobs", status_code=202, response_model=JobBody, responses=ERRORS, dependencies=keyed
    )
    async def create_job(
        service: ServiceDep, file: Upload, options: OptionsDep, response: Response
    ) -> JobBody:
        """Queue an upscale; poll `GET /v1/jobs/{id}`, then fetch its `result_url`."""
        spec, data = await accept(service, file, options, sync=False)
        record = await submit(service, spec, data, sync=False)
        response.headers["Location"] = f"/v1/jobs/{record.id}"
        return await run_in_threadpool(service.body, record)

    @app.get("/v1/jobs/{job_id}", response_model=JobBody, responses=ERRORS, dependencies=keyed)
    def get_job(service: ServiceDep, job_id: str) -> JobBody:
        """Status and tile progress."""
        return service.body(service.record(job_id))

    @app.get(
        "/v1/jobs/{job_id}/result",
        response_class=Response,
        responses={
            200: {"content": {t: {} for t in MEDIA_TYPES.values()}},
            **ERRORS,
            410: {"model": ErrorBody},
        },
        dependencies=keyed,
    )
    def get_result(service: ServiceDep, job_id: str) -> Response:
        """The result image, once the job is done and until its retention expires."""
        record = service.record(job_id)
        status = service.body(record).status
        if status == EXPIRED:
            raise ServiceError(
                410, "expired", "the result was kept for its retention time and removed"
            )
        if status != DONE:
            raise ServiceError(
                409,
                "not_ready" if status in (QUEUED, RUNNING) else f"job_{status}",
                f"the job is {status}",
                extra={"status": status, "job_error": record.error},
            )
        path = service.store.result_path(record)
        try:
            handle = open(path, "rb")  # noqa: SIM115 (closed by the stream; survives a cleanup)
        except (OSError, TypeError):
            raise ServiceError(410, "expired", "the result is no longer stored") from None
        filename = f"{safe_stem(record.spec.input_name)}_x{record.spec.scale:g}.{record.result_ext}"
        return StreamingResponse(
            _chunks(handle),
            media_type=MEDIA_TYPES[record.result_ext or "png"],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @app.delete("/v1/jobs/{job_id}", response_model=JobBody, responses=ERRORS, dependencies=keyed)
    def delete_job(service: ServiceDep, job_id: str, response: Response) -> JobBody:
        """Cancel a queued or running job; delete a finished one and its result."""
        record = service.record(job_id)
        if record.status == QUEUED and service.store.cancel_queued(
            job_id, service.config.retention
        ):
            return service.body(service.record(job_id))
        record = service.record(job_id)  # a worker may have taken it meanwhile
        if record.status == RUNNING:
            service.pool.cancel(job_id)
            response.status_code = 202
            return service.body(record).model_copy(update={"status": "cancelling"})
        body = service.body(record)
        service.store.delete(job_id)
        return body.model_copy(update={"status": "deleted", "result_url": None})

    @app.post(
        "/v1/upscale",
        response_class=Response,
        responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}, **ERRORS},
        dependencies=keyed,
    )
    async def upscale_now(service: ServiceDep, file: Upload, options: OptionsDep) -> Response:
        """Upscale a small image and answer with its bytes (same queue as the jobs)."""
        spec, data = await accept(service, file, options, sync=True)
        return await run_sync(service, spec, data)

    @app.get("/v1/models", response_model=ModelsBody, dependencies=keyed)
    def list_models(service: ServiceDep) -> dict:
        """Every model with its state (ready ones first), and what each `detail` setting picks."""
        return catalogue(service.config)


def safe_stem(name: str) -> str:
    """A file name stem fit for a header: uploads may be named anything."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._")
    return stem[:100] or "image"


def _chunks(handle: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(size):
            yield chunk


async def run_sync(service: Service, spec: JobSpec, data: bytes) -> Response:
    job_id = new_job_id()
    finished = service.hub.watch(job_id)
    try:
        record = await run_in_threadpool(
            service.store.submit,
            spec,
            data,
            capacity=service.config.queue_size,
            sync=True,
            job_id=job_id,
        )
    except QueueFullError as full:
        service.hub.forget(job_id)
        raise service.queue_full(full.queued) from None
    service.pool.notify()
    try:
        status = await asyncio.wait_for(finished, service.config.sync_timeout)
    except (TimeoutError, asyncio.CancelledError) as stopped:
        # Nobody will collect this result: stop the work rather than waste the accelerator.
        service.hub.forget(job_id)
        if not await run_in_threadpool(service.store.cancel_queued, job_id, 0.0):
            service.pool.cancel(job_id)  # already running: stop it at the next tile
        if isinstance(stopped, asyncio.CancelledError):
            raise
        raise ServiceError(
            503,
            "timeout",
            f"not finished within {service.config.sync_timeout:g} s; use POST /v1/jobs",
            headers={"Retry-After": str(service.retry_after())},
        ) from None
    try:
        record = await run_in_threadpool(service.record, job_id)
        if status != DONE:
            raise sync_failure(record)
        path = service.store.result_path(record)
        content = await run_in_threadpool(path.read_bytes) if path else b""
    finally:
        await run_in_threadpool(service.store.delete, job_id)
    headers = {
        "X-Upres-Model": record.model_used or spec.model,
        "X-Upres-Output-Size": "x".join(map(str, record.output_size or spec.planned_size)),
    }
    if record.notes:
        headers["X-Upres-Notes"] = " | ".join(record.notes).encode("ascii", "replace").decode()
    return Response(content, media_type=MEDIA_TYPES[record.result_ext or "png"], headers=headers)


def sync_failure(record: JobRecord) -> ServiceError:
    error = record.error or {"error": "failed", "detail": "the job did not finish"}
    status = {"bad_image": 400, "cancelled": 409, "failed": 422}.get(error["error"], 500)
    return ServiceError(status, error["error"], error.get("detail", ""))


def add_ops_routes(app: FastAPI) -> None:
    @app.get("/healthz", response_model=HealthBody)
    def health(service: ServiceDep) -> HealthBody:
        """Liveness, queue depth and the limits (no key needed)."""
        config = service.config
        counts = service.store.counts()
        return HealthBody(
            status="ok",
            version=upres.__version__,
            device=service.models.device,
            auth_required=config.key is not None,
            queue=QueueBody(
                queued=counts[QUEUED],
                running=counts[RUNNING],
                capacity=config.queue_size,
                workers=config.workers,
            ),
            models_loaded=service.models.loaded(),
            limits={
                "max_upload_bytes": config.max_upload_bytes,
                "max_input_pixels": config.max_input_pixels,
                "max_output_pixels": config.max_output_pixels,
                "max_input_size": config.max_input_size,
                "max_scale": config.max_scale,
                "sync_max_input_pixels": config.sync_max_input_pixels,
                "retention_seconds": config.retention,
            },
        )

    @app.get("/metrics", response_class=Response, dependencies=[Depends(require_key)])
    def metrics(service: ServiceDep) -> Response:
        """Prometheus text format."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# The page's languages: English and Simplified Chinese (any zh-* tag asks for the latter).
PAGE_LANGUAGES = {"en": "en", "zh": "zh-CN"}


def page_language(accept_language: str | None) -> str:
    """The first of the page's languages in Accept-Language, by quality; English otherwise."""
    ranked = []
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in PAGE_LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else "en"


def add_page_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def page(request: Request) -> HTMLResponse:
        # The script starts in this language unless the person picked one on the page.
        lang = page_language(request.headers.get("accept-language"))
        html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        html = html.replace(
            '<html lang="en">', f'<html lang="{PAGE_LANGUAGES[lang]}" data-lang="{lang}">', 1
        )
        headers = {"Cache-Control": "no-cache", "Vary": "Accept-Language"}
        return HTMLResponse(html, headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
