"""`upres serve`: the HTTP API and web page under uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from upres.cli.common import EXIT_USAGE, cpu_threads, print_error, print_note

if TYPE_CHECKING:
    from pydantic import ValidationError

    from upres.server.config import ServeConfig

# The same as upres.server.config.ENV_PREFIX (a test checks), written out so that
# `upres serve --help` need not import the server stack.
ENV_PREFIX = "UPRES_SERVE_"


def config_problem(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{where.replace('_', '-')}: {message}" if where else message)
    return "; ".join(parts)


def env(name: str) -> str:
    return f"(env {ENV_PREFIX}{name.upper()})"


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str | None = typer.Option(
            None, "--host", help=f"Address to bind; default 127.0.0.1 {env('host')}."
        ),
        port: int | None = typer.Option(None, "--port", help=f"Default 8000 {env('port')}."),
        api_key: str | None = typer.Option(
            None,
            "--api-key",
            help=f"Clients send it as X-API-Key or Bearer; needed off loopback {env('api_key')}.",
        ),
        data_dir: Path | None = typer.Option(
            None, "--data-dir", help=f"Job database and results {env('data_dir')}."
        ),
        workers: int | None = typer.Option(
            None, "--workers", help=f"Jobs run at once; default 1 {env('workers')}."
        ),
        queue_size: int | None = typer.Option(
            None, "--queue-size", help=f"Waiting jobs before 429; default 64 {env('queue_size')}."
        ),
        max_upload_bytes: int | None = typer.Option(
            None, "--max-upload-bytes", help=f"Default 32 MiB {env('max_upload_bytes')}."
        ),
        max_input_pixels: int | None = typer.Option(
            None,
            "--max-input-pixels",
            help=f"Checked from the header; default 4096*4096 {env('max_input_pixels')}.",
        ),
        max_output_pixels: int | None = typer.Option(
            None, "--max-output-pixels", help=f"Default 4096*4096 {env('max_output_pixels')}."
        ),
        max_input_size: int | None = typer.Option(
            None,
            "--max-input-size",
            help=f"Downsize longer inputs first; default 1024, 0 off {env('max_input_size')}.",
        ),
        sync_max_input_pixels: int | None = typer.Option(
            None,
            "--sync-max-input-pixels",
            help=f"POST /v1/upscale input limit; default 512*512 {env('sync_max_input_pixels')}.",
        ),
        retention: str | None = typer.Option(
            None,
            "--retention",
            help=f"Results kept for: seconds, or 30m/24h/7d; default 24h {env('retention')}.",
        ),
        models_dir: Path | None = typer.Option(
            None,
            "--models-dir",
            help="Your models folder, served by file stem; default UPRES_MODELS_DIR or"
            f" <user data dir>/custom {env('models_dir')}.",
        ),
        allow_downloads: bool | None = typer.Option(
            None,
            "--allow-downloads/--no-downloads",
            help="Let a job download a model that is not here (progress in its status);"
            f" default off: such a job is refused {env('allow_downloads')}.",
        ),
        restoration_model: str | None = typer.Option(
            None,
            "--restoration-model",
            help=f"Detail reconstruction on; default realesrgan-x4plus {env('restoration_model')}.",
        ),
        faithful_model: str | None = typer.Option(
            None,
            "--faithful-model",
            help=f"Detail reconstruction off; default dat-light-x4 {env('faithful_model')}.",
        ),
        device: str | None = typer.Option(
            None, "--device", help=f"auto|cpu|cuda|cuda:N|mps {env('device')}."
        ),
        precision: str | None = typer.Option(
            None, "--precision", help=f"auto|fp32|fp16|bf16 {env('precision')}."
        ),
        tile: str | None = typer.Option(None, "--tile", help=f"auto or N {env('tile')}."),
        log_level: str | None = typer.Option(
            None, "--log-level", help=f"uvicorn log level; default info {env('log_level')}."
        ),
    ) -> None:
        """Serve the HTTP API (/v1/...) and the web page (/) with a persistent job queue.

        Set by environment only: UPRES_SERVE_MAX_SCALE, _SYNC_TIMEOUT, _CLEANUP_INTERVAL,
        _MODEL_CACHE_SIZE, _MAX_ATTEMPTS, _INTAKE_CONCURRENCY.
        """
        from pydantic import ValidationError

        from upres.server.config import ServeConfig

        overrides = {
            name: value
            for name, value in locals().items()
            if name in ServeConfig.model_fields and value is not None
        }
        try:
            config = ServeConfig.from_env(**overrides)
        except ValidationError as error:
            print_error(config_problem(error))
            raise typer.Exit(EXIT_USAGE) from None
        run_server(config)


def run_server(config: ServeConfig) -> None:
    import uvicorn

    from upres.server.app import create_app
    from upres.server.jobs import DataDirBusyError, JobStore

    try:  # fail with one line now rather than inside the server's start-up
        JobStore(config.data_dir).close()
    except DataDirBusyError as error:
        print_error(str(error))
        raise typer.Exit(EXIT_USAGE) from None
    # uvicorn configures only its own loggers; the service's (resumed jobs, failures) too.
    logging.basicConfig(level=config.log_level.upper(), format="%(levelname)s:     %(message)s")
    # Job workers run at once in this process: they split the free cores, not share them all.
    from upres.engine.cores import configure

    try:
        choice = configure(cpu_threads(None), workers=config.workers)
    except ValueError as error:  # a bad UPRES_THREADS
        print_error(str(error))
        raise typer.Exit(EXIT_USAGE) from None
    print_note(f"{choice.threads} CPU thread(s) per job worker ({choice.reason})")
    print_note(f"serving on http://{config.host}:{config.port}/ (data in {config.data_dir})")
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        timeout_graceful_shutdown=10,
    )
