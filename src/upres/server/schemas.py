"""The service's JSON answers (they also make up the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class Options(BaseModel):
    """The upscale options of a request, once the form fields are validated."""

    model: str | None
    scale: float | None
    sharpen: float
    format: str
    quality: int | None
    detail: bool
    width: int | None = None
    height: int | None = None
    long_side: int | None = None
    alpha: str = "model"
    face: str | None = None  # a face model's name (upres.faces), or None


class ProgressBody(BaseModel):
    stage: str
    done: int
    total: int
    fraction: float


class JobBody(BaseModel):
    id: str
    status: str
    model: str
    detail: bool
    face: str | None = None
    scale: float
    sharpen: float
    format: str
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    progress: ProgressBody
    queue_position: int | None = None
    notes: list[str] = []
    error: dict | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    result_url: str | None = None


class ErrorBody(BaseModel):
    error: str
    code: str  # the same stable code as `error`, for clients that translate messages
    detail: str
    limit: str | None = None
    value: float | None = None


class QueueBody(BaseModel):
    queued: int
    running: int
    capacity: int
    workers: int


class HealthBody(BaseModel):
    status: str
    version: str
    device: str
    auth_required: bool
    queue: QueueBody
    models_loaded: list[str]
    limits: dict[str, int | float]


class ModelBody(BaseModel):
    name: str
    kind: str  # built-in | user (a file of the models folder)
    task: str
    role: str
    scale: int | None  # None for a broken file of the models folder
    arch: str
    license: str
    summary: str
    state: str  # cached | installed | user | download | manual | missing | broken
    ready: bool
    available: bool  # a job may use it now (ready, or a download the operator allows)
    reason: str  # why it is not ready; empty when it is


class ModelsBody(BaseModel):
    models: list[ModelBody]
    defaults: dict[str, str | None]
    notes: list[str]
    allow_downloads: bool = False


ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 415, 422, 429)}
