"""Downloading weights from a real HTTP server on the loopback interface: full, resumed,
refused on a wrong sha256, offline, and files dropped into the cache by hand."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_compact
from upres.cli.main import app
from upres.errors import ModelLoadError, ModelNotFoundError
from upres.models.cache import models_dir, sidecar_of
from upres.models.catalog import CATALOG, ModelCard
from upres.models.download import partial_path
from upres.models.loader import load_model
from upres.models.sources import UrlSource

PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Served:
    """What the test server holds, how it misbehaves, and what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_off: int = 0  # this many answers stop halfway through the body
    requests: list[tuple[str, str | None]] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    served: Served

    def do_GET(self) -> None:
        served = self.server.served  # type: ignore[attr-defined]
        served.requests.append((self.path, self.headers.get("Range")))
        body = served.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match.group(1)) if match else 0
        if start >= len(body) and match:
            self.send_error(416)
            return
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if served.cut_off > 0:
            served.cut_off -= 1
            payload = payload[: len(payload) // 2]
            self.close_connection = True
        self.wfile.write(payload)

    def log_message(self, *_args) -> None:  # keep test output clean
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    """A threaded HTTP server on 127.0.0.1; yields its base URL and its state."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.served = Served()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.served  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path / "cache"))
    return models_dir()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused, as offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def url_card(url: str | None, filename: str, sha256: str | None, **fields) -> ModelCard:
    return ModelCard(
        name="test-weights-x2",
        arch="test",
        task="sr",
        scale=2,
        license="MIT",
        source=UrlSource(url, filename, page=fields.pop("page", "")),
        summary="test",
        sha256=sha256,
        **fields,
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_full_download_is_verified_and_recorded(server, cache):
    base, served = server
    served.files["/w.pth"] = PAYLOAD
    seen = []
    card = url_card(f"{base}/w.pth", "w.pth", PAYLOAD_SHA256)
    path = card.source.fetch(card, progress=lambda done, total: seen.append((done, total)))
    assert path == cache / "w.pth" and path.read_bytes() == PAYLOAD
    assert sidecar_of(path).read_text().split()[0] == PAYLOAD_SHA256
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert leftovers(cache) == ["w.pth", "w.pth.sha256"]
    card.source.fetch(card)
    assert len(served.requests) == 1  # verified in the cache: not fetched again


def test_unknown_sha256_is_recorded_on_first_download(server, cache):
    base, served = server
    served.files["/w.pth"] = PAYLOAD
    card = url_card(f"{base}/w.pth", "w.pth", None)
    path = card.source.fetch(card, progress=lambda *_: None)
    assert sidecar_of(path).read_text().split()[0] == PAYLOAD_SHA256


def test_a_cut_off_download_resumes_with_a_range_request(server, cache):
    base, served = server
    served.files["/w.pth"] = PAYLOAD
    served.cut_off = 1
    card = url_card(f"{base}/w.pth", "w.pth", PAYLOAD_SHA256)
    path = card.source.fetch(card, progress=lambda *_: None)
    assert path.read_bytes() == PAYLOAD
    assert served.requests == [("/w.pth", None), ("/w.pth", f"bytes={len(PAYLOAD) // 2}-")]
    assert not partial_path(path).exists()


def test_a_partial_file_is_kept_and_resumed_by_the_next_run(server, cache):
    base, served = server
    served.files["/w.pth"] = PAYLOAD
    served.cut_off = 5  # more than one run's attempts
    card = url_card(f"{base}/w.pth", "w.pth", PAYLOAD_SHA256)
    with pytest.raises(ModelNotFoundError, match="run again to resume") as caught:
        card.source.fetch(card, progress=lambda *_: None)
    assert str(cache / "w.pth.part") in str(caught.value)
    assert (cache / "w.pth.part").stat().st_size > 0 and not (cache / "w.pth").exists()
    served.cut_off = 0
    assert card.source.fetch(card, progress=lambda *_: None).read_bytes() == PAYLOAD
    assert served.requests[-1][1] is not None  # the last request resumed


def test_a_wrong_sha256_is_refused_and_nothing_is_left(server, cache):
    base, served = server
    served.files["/w.pth"] = PAYLOAD
    card = url_card(f"{base}/w.pth", "w.pth", "0" * 64)
    with pytest.raises(ModelLoadError, match=f"sha256 {PAYLOAD_SHA256}, expected 0+"):
        card.source.fetch(card, progress=lambda *_: None)
    assert leftovers(cache) == []


def test_offline_error_names_the_url_and_where_to_put_the_file(cache, closed_port):
    url = f"http://127.0.0.1:{closed_port}/w.pth"
    card = url_card(url, "w.pth", None)
    with pytest.raises(ModelNotFoundError) as caught:
        card.source.fetch(card, progress=lambda *_: None)
    message = str(caught.value)
    assert "\n" not in message
    assert url in message and str(cache / "w.pth") in message and "by hand" in message


def test_a_missing_file_on_the_server_is_a_clear_error(server, cache):
    base, _served = server
    card = url_card(f"{base}/gone.pth", "gone.pth", None)
    with pytest.raises(ModelNotFoundError, match="HTTP 404"):
        card.source.fetch(card, progress=lambda *_: None)


def test_a_file_dropped_by_hand_is_verified_and_used(cache, closed_port):
    card = url_card(f"http://127.0.0.1:{closed_port}/w.pth", "w.pth", PAYLOAD_SHA256)
    cache.mkdir(parents=True)
    (cache / "w.pth").write_bytes(PAYLOAD)
    path = card.source.fetch(card)  # no network needed
    assert sidecar_of(path).read_text().split()[0] == PAYLOAD_SHA256


def test_a_wrong_file_dropped_by_hand_is_refused_but_not_deleted(cache, closed_port):
    card = url_card(f"http://127.0.0.1:{closed_port}/w.pth", "w.pth", PAYLOAD_SHA256)
    cache.mkdir(parents=True)
    (cache / "w.pth").write_bytes(b"something else")
    with pytest.raises(ModelLoadError, match=r"not the official w\.pth"):
        card.source.fetch(card)
    assert (cache / "w.pth").read_bytes() == b"something else"


def test_manual_source_says_where_to_get_the_file_and_where_to_put_it(cache):
    page = "https://example.org/weights"
    card = url_card(None, "manual.pth", None, page=page)
    assert not card.source.can_fetch(card)
    with pytest.raises(ModelNotFoundError, match="no direct download") as caught:
        card.source.fetch(card)
    assert page in str(caught.value) and str(cache / "manual.pth") in str(caught.value)


def test_a_damaged_download_in_the_cache_is_fetched_again(server, cache):
    base, served = server
    served.files["/w.pth"] = PAYLOAD
    card = url_card(f"{base}/w.pth", "w.pth", None)
    path = card.source.fetch(card, progress=lambda *_: None)
    path.write_bytes(b"damaged")
    assert card.source.fetch(card, progress=lambda *_: None).read_bytes() == PAYLOAD
    assert len(served.requests) == 2


def test_a_model_downloads_on_first_use_by_name(server, cache, monkeypatch):
    base, served = server
    checkpoint = cache.parent / "compact.pth"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"params": tiny_compact().state_dict()}, checkpoint)
    served.files["/tiny.pth"] = checkpoint.read_bytes()
    card = url_card(f"{base}/tiny.pth", "tiny.pth", None)
    monkeypatch.setitem(CATALOG, card.name, card)
    loaded = load_model(card.name)
    assert loaded.descriptor.architecture.id == "Compact" and loaded.path == cache / "tiny.pth"


def test_cli_fetch_downloads_and_reports_offline_clearly(server, cache, closed_port, monkeypatch):
    base, served = server
    served.files["/w.pth"] = PAYLOAD
    card = url_card(f"{base}/w.pth", "w.pth", PAYLOAD_SHA256)
    monkeypatch.setitem(CATALOG, card.name, card)
    runner = CliRunner()
    result = runner.invoke(app, ["models", "fetch", card.name, "--json"])
    assert result.exit_code == 0, result.output
    fetched = json.loads(result.stdout)
    assert fetched["path"] == str(cache / "w.pth") and fetched["sha256"] == PAYLOAD_SHA256

    offline = url_card(f"http://127.0.0.1:{closed_port}/x.pth", "x.pth", None)
    monkeypatch.setitem(CATALOG, card.name, offline)
    result = runner.invoke(app, ["models", "fetch", card.name])
    assert result.exit_code == 1
    assert "unreachable" in result.stderr and str(cache / "x.pth") in result.stderr
