"""The service builds the same request as the CLI and the API: exact sizes, the same
messages for the same mistakes, no filesystem path in an answer, and a body-read timeout."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from server_support import fast_config, live_server, png_bytes
from upres.errors import RequestError
from upres.request import UpscaleRequest


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("service")
    with live_server(fast_config(data_dir)) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=120) as client:
        yield client


def picture(width: int = 20, height: int = 14) -> bytes:
    rng = np.random.default_rng(0)
    return png_bytes(rng.integers(0, 256, (height, width, 3), np.uint8))


def test_exact_sizes_through_the_form(client: httpx.Client) -> None:
    for fields, size in (
        ({"width": "50"}, (50, 35)),
        ({"height": "21"}, (30, 21)),
        ({"long_side": "33"}, (33, 23)),
    ):
        answer = client.post("/v1/upscale", files={"file": ("a.png", picture())}, data=fields)
        assert answer.status_code == 200, answer.text
        assert PILImage.open(io.BytesIO(answer.content)).size == size
        assert answer.headers["x-upres-output-size"] == f"{size[0]}x{size[1]}"


@pytest.mark.parametrize(
    "fields",
    [{"scale": "0"}, {"scale": "-1"}, {"width": "40", "scale": "2"}, {"alpha": "magic"}],
)
def test_the_same_mistake_gets_the_same_message(client: httpx.Client, fields: dict) -> None:
    answer = client.post("/v1/upscale", files={"file": ("a.png", picture())}, data=fields)
    assert answer.status_code == 422
    with pytest.raises(RequestError) as expected:
        UpscaleRequest(**{k: float(v) if k == "scale" else v for k, v in fields.items()})
    assert answer.json()["error"] == "invalid_option"
    assert answer.json()["detail"] == str(expected.value)


def test_a_model_that_is_not_here_is_refused_without_a_path(
    client: httpx.Client, tmp_path: Path
) -> None:
    answer = client.post(
        "/v1/upscale", files={"file": ("a.png", picture())}, data={"model": "hat-l-x4"}
    )
    assert 400 <= answer.status_code < 500
    assert "/" not in answer.json()["detail"].replace("/v1/", "")


def test_a_body_that_never_arrives_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPRES_SERVE_BODY_TIMEOUT", "1")
    config = fast_config(tmp_path / "data")
    with (
        live_server(config, run_workers=False),
        socket.create_connection(("127.0.0.1", config.port), timeout=20) as sock,
    ):
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
        )
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert waited < 10
