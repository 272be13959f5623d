"""Helpers for the service tests: a real uvicorn server on a free loopback port."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from PIL import Image

from upres.server import ServeConfig, create_app

# The tiny real pretrained model: fast enough for many jobs on a 2-core CPU.
FAST_MODEL = "realesr-animevideov3-x4"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fast_config(data_dir: Path, **overrides: object) -> ServeConfig:
    settings: dict = {
        "data_dir": data_dir,
        "restoration_model": FAST_MODEL,
        "faithful_model": FAST_MODEL,
        "port": free_port(),
    }
    return ServeConfig(**(settings | overrides))


@contextmanager
def live_server(config: ServeConfig, *, run_workers: bool = True) -> Iterator[str]:
    """Run the app under uvicorn in a thread; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, run_workers=run_workers),
            host="127.0.0.1",
            port=config.port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def crop_png(photo: np.ndarray, width: int, height: int, x: int = 200, y: int = 200) -> bytes:
    """A small crop of a real photograph, as PNG bytes."""
    return png_bytes(np.ascontiguousarray(photo[y : y + height, x : x + width]))


def wait_for(client: httpx.Client, job_id: str, timeout: float = 60.0) -> dict:
    """Poll until the job leaves queued/running."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["status"] not in ("queued", "running"):
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {body['status']} after {timeout} s")
        time.sleep(0.05)


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size
