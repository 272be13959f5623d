"""Service settings: built-in defaults, then `UPRES_SERVE_*` variables, then CLI options.

Every field has an environment variable named after it: `max_upload_bytes` is read from
`UPRES_SERVE_MAX_UPLOAD_BYTES`. Durations accept seconds or a suffix (`90s`, `30m`, `24h`,
`7d`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from upres.models.user import models_folder

ENV_PREFIX = "UPRES_SERVE_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("upres")) / "serve"


def parse_duration(value: Any) -> float:
    """Seconds from 3600, "3600", "60m", "24h" or "7d"."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration (seconds, or a number with s/m/h/d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


class ServeConfig(BaseModel):
    """Everything `upres serve` can be told; each field doubles as UPRES_SERVE_<FIELD>."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = None
    data_dir: Path = Field(default_factory=default_data_dir)

    workers: int = Field(1, ge=1, le=64, description="jobs run at the same time")
    queue_size: int = Field(64, ge=1, description="queued jobs before 429")
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1)
    max_input_pixels: int = Field(4096 * 4096, ge=1, description="checked from the header")
    max_output_pixels: int = Field(4096 * 4096, ge=1)
    # Smart-Safe: longer inputs are downsized to this longest side first (0: never).
    max_input_size: int = Field(1024, ge=0)
    max_scale: float = Field(16.0, ge=1.0)
    sync_max_input_pixels: int = Field(512 * 512, ge=1, description="POST /v1/upscale only")
    sync_timeout: float = Field(120.0, gt=0)
    retention: float = Field(24 * 3600.0, gt=0, description="results kept this long")
    cleanup_interval: float = Field(60.0, gt=0)
    # A job that was running through this many crashes is failed rather than retried.
    max_attempts: int = Field(3, ge=1)
    intake_concurrency: int = Field(2, ge=1, description="uploads decoded at the same time")

    # The user's models folder (default: UPRES_MODELS_DIR, else <user data dir>/custom);
    # its files are served by their stem, rescanned on every listing and request.
    models_dir: Path = Field(default_factory=lambda: models_folder())
    # Let a job download a built-in model's weights (progress in its status); off: refused.
    allow_downloads: bool = False
    restoration_model: str = "realesrgan-x4plus"
    faithful_model: str = "dat-light-x4"
    model_cache_size: int = Field(2, ge=1)
    device: str = "auto"
    precision: str = "auto"
    tile: str | None = None
    log_level: str = "info"

    @field_validator("retention", "sync_timeout", "cleanup_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: Any) -> Any:
        return None if value is not None and not str(value).strip() else value

    @model_validator(mode="after")
    def _exposed_needs_key(self) -> ServeConfig:
        # Anyone who can reach a non-loopback address could otherwise use the accelerator.
        if not is_loopback(self.host) and self.api_key is None:
            raise ValueError(
                f"refusing to listen on {self.host} without an API key: set --api-key or"
                f" {ENV_PREFIX}API_KEY, or bind to 127.0.0.1"
            )
        return self

    @property
    def key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServeConfig:
        """Defaults < UPRES_SERVE_* variables < overrides (None values are ignored)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
