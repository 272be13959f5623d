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
from PIL import ImageSequence

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


def animated(format: str, frames: int = 3, size: int = 12) -> bytes:
    rng = np.random.default_rng(1)
    images = [
        PILImage.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)) for _ in range(frames)
    ]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format, save_all=True, append_images=images[1:], duration=[70, 80, 90], loop=0
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("format", "media_type"),
    [("GIF", "image/gif"), ("WEBP", "image/webp"), ("PNG", "image/png")],
)
def test_an_animation_comes_back_animated_in_its_own_format(
    client: httpx.Client, format: str, media_type: str
) -> None:
    upload = {"file": (f"a.{format.lower()}", animated(format))}
    answer = client.post("/v1/upscale", files=upload, data={"format": "jpg"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == media_type
    with PILImage.open(io.BytesIO(answer.content)) as result:
        assert result.format == format and result.size == (48, 48)
        assert result.n_frames == 3
        durations = []
        for frame in ImageSequence.Iterator(result):
            frame.load()  # WebP reports a frame's duration once it is decoded
            durations.append(frame.info.get("duration"))
        assert durations == [70, 80, 90]


def test_a_video_gets_a_415_that_says_why(client: httpx.Client, tmp_path: Path) -> None:
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    answer = client.post("/v1/upscale", files={"file": ("clip.mp4", path.read_bytes())})
    assert answer.status_code == 415
    assert answer.json()["error"] == "video_not_accepted"
    assert "upres upscale" in answer.json()["detail"]
