"""The HTTP API against the real app under uvicorn, with a real pretrained model.

Images are small crops of a real photograph, so every job takes well under a second.
"""

from __future__ import annotations

import io
import re
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from typer.testing import CliRunner

from server_support import (
    FAST_MODEL,
    crop_png,
    fast_config,
    image_size,
    live_server,
    png_bytes,
    wait_for,
)
from upres.server.config import ServeConfig, parse_duration
from upres.server.jobs import DataDirBusyError, JobSpec, JobStore

LIMITS = {
    "max_upload_bytes": 200_000,
    "max_input_pixels": 256 * 256,
    "max_output_pixels": 512 * 512,
    "sync_max_input_pixels": 64 * 64,
    "queue_size": 8,
}


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height: a decompression bomb's calling card."""
    data = bytearray(png_bytes(np.zeros((1, 1, 3), np.uint8)))
    struct.pack_into(">II", data, 16, width, height)  # IHDR data starts at byte 16
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("api-data")
    with live_server(fast_config(data_dir, **LIMITS)) as url:
        yield url, data_dir


@pytest.fixture
def client(server: tuple[str, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=60) as client:
        yield client


def post_job(client: httpx.Client, data: bytes, name: str = "crop.png", **options: object):
    files = {"file": (name, data, "image/png")}
    return client.post("/v1/jobs", files=files, data={k: str(v) for k, v in options.items()})


# -- the happy paths ---------------------------------------------------------------------


def test_health_page_and_openapi(client: httpx.Client) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["auth_required"] is False
    assert health["queue"]["capacity"] == 8
    assert health["limits"]["max_input_pixels"] == 256 * 256

    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/upscale"):
        assert path in paths
    assert {"/v1/models", "/healthz", "/metrics"} <= set(paths)
    assert set(paths["/v1/jobs/{job_id}"]) == {"get", "delete"}

    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="compare"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


def test_models_list_the_catalogue_and_the_detail_defaults(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    names = {model["name"]: model for model in body["models"]}
    assert names[FAST_MODEL]["available"] is True
    assert names["realesrgan-x4plus"]["role"] == "restoration"
    assert body["defaults"] == {"detail_on": FAST_MODEL, "detail_off": FAST_MODEL}


def test_a_job_runs_to_a_real_result(client: httpx.Client, photo: np.ndarray) -> None:
    crop = np.ascontiguousarray(photo[200:220, 200:224])  # 24 x 20
    answer = post_job(client, png_bytes(crop))
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "running")
    assert job["model"] == FAST_MODEL and job["detail"] is True
    assert job["output_size"] == [96, 80]

    done = wait_for(client, job["id"])
    assert done["status"] == "done", done
    assert done["progress"]["done"] == done["progress"]["total"] > 0
    assert done["result_url"] == f"/v1/jobs/{job['id']}/result"
    assert done["expires_at"] is not None

    result = client.get(done["result_url"])
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/png"
    assert "crop_x4.png" in result.headers["content-disposition"]
    with Image.open(io.BytesIO(result.content)) as image:
        assert image.size == (96, 80)
        upscaled = np.asarray(image.convert("RGB"))
    # The real model ran: shrunk back, the result matches the input photo closely.
    shrunk = cv2.resize(upscaled, (24, 20), interpolation=cv2.INTER_AREA).astype(np.float64)
    mse = np.mean((shrunk - crop.astype(np.float64)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 24


@pytest.mark.parametrize(
    ("options", "media", "size"),
    [
        ({"scale": 2, "sharpen": 0.5, "format": "webp"}, "image/webp", (64, 48)),
        ({"scale": 3, "format": "jpg", "quality": 80, "detail": "false"}, "image/jpeg", (96, 72)),
    ],
)
def test_job_options(
    client: httpx.Client, photo: np.ndarray, options: dict, media: str, size: tuple
) -> None:
    job = post_job(client, crop_png(photo, 32, 24), **options).json()
    assert job["scale"] == options["scale"]
    done = wait_for(client, job["id"])
    assert done["status"] == "done", done
    result = client.get(done["result_url"])
    assert result.headers["content-type"] == media
    assert image_size(result.content) == size


def test_synchronous_upscale_answers_with_the_image(
    client: httpx.Client, photo: np.ndarray
) -> None:
    files = {"file": ("small.png", crop_png(photo, 16, 16), "image/png")}
    answer = client.post("/v1/upscale", files=files, data={"scale": "2"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["x-upres-model"] == FAST_MODEL
    assert answer.headers["x-upres-output-size"] == "32x32"
    assert image_size(answer.content) == (32, 32)

    files = {"file": ("big.png", crop_png(photo, 80, 80), "image/png")}
    refused = client.post("/v1/upscale", files=files)
    assert refused.status_code == 413
    assert refused.json()["limit"] == "sync_max_input_pixels"
    assert refused.json()["value"] == 64 * 64
    assert "/v1/jobs" in refused.json()["detail"]


# -- refusals: 4xx JSON that names the problem -------------------------------------------------


def refusal_cases(photo: np.ndarray) -> list[tuple[str, dict, int, dict]]:
    truncated = crop_png(photo, 32, 32)
    return [
        ("too many bytes", {"data": bytes(300_000)}, 413, {"error": "upload_too_large", "limit": "max_upload_bytes", "value": 200_000}),  # noqa: E501
        ("bomb header", {"data": png_claiming(30_000, 30_000)}, 413, {"error": "input_too_large", "limit": "max_input_pixels", "value": 65536}),  # noqa: E501
        ("too many pixels", {"data": png_bytes(np.zeros((300, 300), np.uint8))}, 413, {"limit": "max_input_pixels"}),  # noqa: E501
        ("output too big", {"data": crop_png(photo, 60, 60), "scale": 10}, 422, {"error": "output_too_large", "limit": "max_output_pixels", "value": 512 * 512}),  # noqa: E501
        ("scale too big", {"data": crop_png(photo, 8, 8), "scale": 17}, 422, {"error": "scale_too_large", "limit": "max_scale"}),  # noqa: E501
        ("truncated", {"data": truncated[: len(truncated) // 2]}, 400, {"error": "bad_image"}),
        ("not an image", {"data": b"hello, world\n" * 10}, 415, {"error": "unsupported_format"}),
        ("empty", {"data": b""}, 400, {"error": "empty_file"}),
        ("unknown model", {"data": crop_png(photo, 8, 8), "model": "no-such-model"}, 404, {"error": "unknown_model"}),  # noqa: E501
        ("model path", {"data": crop_png(photo, 8, 8), "model": "/etc/passwd"}, 404, {"error": "unknown_model"}),  # noqa: E501
        ("scale zero", {"data": crop_png(photo, 8, 8), "scale": 0}, 422, {"error": "invalid_option"}),  # noqa: E501
        ("sharpen > 1", {"data": crop_png(photo, 8, 8), "sharpen": 2}, 422, {"error": "invalid_option"}),  # noqa: E501
        ("bad format", {"data": crop_png(photo, 8, 8), "format": "gif"}, 422, {"error": "invalid_option"}),  # noqa: E501
    ]  # fmt: skip


def test_refusals_are_4xx_json_naming_the_problem(client: httpx.Client, photo: np.ndarray) -> None:
    for label, case, status, expected in refusal_cases(photo):
        options = {k: v for k, v in case.items() if k != "data"}
        for path in ("/v1/jobs", "/v1/upscale"):
            files = {"file": ("in.png", case["data"], "image/png")}
            data = {k: str(v) for k, v in options.items()}
            answer = client.post(path, files=files, data=data)
            assert answer.status_code == status, (label, path, answer.text)
            body = answer.json()
            assert body.items() >= expected.items(), (label, body)
            assert body["detail"], label


def test_requests_without_a_file_are_refused(client: httpx.Client) -> None:
    missing = client.post("/v1/jobs", data={"scale": "2"})
    assert missing.status_code == 422
    assert missing.json()["problems"][0]["field"] == "file"
    as_json = client.post("/v1/jobs", json={"file": "aGVsbG8="})
    assert as_json.status_code == 422
    assert client.get("/v1/jobs/not-a-job").json()["error"] == "job_not_found"
    assert client.get("/v1/jobs/" + "0" * 32 + "/result").status_code == 404
    assert client.get("/no/such/page").json()["error"] == "not_found"


def test_an_upload_without_a_length_is_cut_at_the_limit(client: httpx.Client) -> None:
    boundary = "upres-test-boundary"

    def body() -> Iterator[bytes]:
        yield (
            f"--{boundary}\r\nContent-Disposition: form-data; name=file; filename=x.png\r\n"
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        for _ in range(100):  # 6.4 MB, far past the 200 kB limit, sent chunked
            yield bytes(64 * 1024)

    answer = client.post(
        "/v1/jobs",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert answer.status_code == 413
    assert answer.json()["limit"] == "max_upload_bytes"


def test_metrics_count_requests_and_jobs(client: httpx.Client, photo: np.ndarray) -> None:
    job = post_job(client, crop_png(photo, 16, 16)).json()
    wait_for(client, job["id"])
    text = client.get("/metrics").text
    assert 'upres_http_requests_total{method="POST",route="/v1/jobs",status="202"}' in text
    assert 'upres_jobs_finished_total{status="done"}' in text
    assert 'upres_jobs{state="queued"}' in text
    assert "upres_refusals_total" in text
    assert "upres_job_duration_seconds_bucket" in text


# -- the queue: position, 429, cancel, delete ----------------------------------------------


def test_queue_cancel_delete_and_429(tmp_path: Path, photo: np.ndarray) -> None:
    config = fast_config(tmp_path, queue_size=3)
    with (
        live_server(config, run_workers=False) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        jobs = [post_job(client, crop_png(photo, 16, 16)).json() for _ in range(3)]
        assert [job["queue_position"] for job in jobs] == [1, 2, 3]

        full = post_job(client, crop_png(photo, 16, 16))
        assert full.status_code == 429
        assert int(full.headers["retry-after"]) >= 1
        assert full.json() | {"detail": ""} == {
            "error": "queue_full",
            "code": "queue_full",
            "limit": "queue_size",
            "value": 3,
            "detail": "",
        }
        sync_full = client.post(
            "/v1/upscale", files={"file": ("x.png", crop_png(photo, 8, 8), "image/png")}
        )
        assert sync_full.status_code == 429

        cancelled = client.delete(f"/v1/jobs/{jobs[0]['id']}")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        assert client.get(f"/v1/jobs/{jobs[1]['id']}").json()["queue_position"] == 1
        not_ready = client.get(f"/v1/jobs/{jobs[1]['id']}/result")
        assert not_ready.status_code == 409 and not_ready.json()["error"] == "not_ready"
        gone = client.get(f"/v1/jobs/{jobs[0]['id']}/result")
        assert gone.status_code == 409 and gone.json()["error"] == "job_cancelled"

        deleted = client.delete(f"/v1/jobs/{jobs[0]['id']}")
        assert deleted.json()["status"] == "deleted"
        assert client.get(f"/v1/jobs/{jobs[0]['id']}").status_code == 404
        assert post_job(client, crop_png(photo, 16, 16)).status_code == 202  # room again


def test_progress_by_tile_and_cancelling_a_running_job(tmp_path: Path, photo: np.ndarray) -> None:
    config = fast_config(tmp_path, tile="32", max_input_pixels=1 << 20)
    with live_server(config) as url, httpx.Client(base_url=url, timeout=30) as client:
        first = post_job(client, crop_png(photo, 192, 192, x=100, y=100), scale=1).json()
        seen: set[tuple[int, int]] = set()
        while (job := client.get(f"/v1/jobs/{first['id']}").json())["status"] != "done":
            progress = job["progress"]
            if progress["stage"] == "upscaling" and progress["total"]:
                seen.add((progress["done"], progress["total"]))
            time.sleep(0.02)
        totals = {total for _, total in seen}
        assert len(totals) == 1 and totals.pop() > 4  # one grid of many tiles
        assert len(seen) >= 2  # and it was seen advancing

        second = post_job(client, crop_png(photo, 192, 192, x=100, y=100), scale=1).json()
        while client.get(f"/v1/jobs/{second['id']}").json()["progress"]["done"] < 1:
            time.sleep(0.01)
        answer = client.delete(f"/v1/jobs/{second['id']}")
        assert answer.status_code == 202 and answer.json()["status"] == "cancelling"
        ended = wait_for(client, second["id"])
        assert ended["status"] == "cancelled"
        assert ended["error"]["error"] == "cancelled"


def test_smart_safe_downsize_applies_to_large_inputs(tmp_path: Path, photo: np.ndarray) -> None:
    config = fast_config(tmp_path, max_input_size=32)
    with live_server(config) as url, httpx.Client(base_url=url, timeout=30) as client:
        job = post_job(client, crop_png(photo, 64, 48)).json()
        assert job["input_size"] == [64, 48] and job["output_size"] == [128, 96]
        done = wait_for(client, job["id"])
        assert image_size(client.get(done["result_url"]).content) == (128, 96)
        assert any("downsized to 32x24" in note for note in done["notes"])


def test_results_expire_after_their_retention(tmp_path: Path, photo: np.ndarray) -> None:
    config = fast_config(tmp_path, retention=1, cleanup_interval=0.2)
    with live_server(config) as url, httpx.Client(base_url=url, timeout=30) as client:
        done = wait_for(client, post_job(client, crop_png(photo, 16, 16)).json()["id"])
        assert client.get(done["result_url"]).status_code == 200
        assert list((tmp_path / "results").iterdir())
        time.sleep(1.6)
        expired = client.get(done["result_url"])
        assert expired.status_code == 410 and expired.json()["error"] == "expired"
        assert client.get(f"/v1/jobs/{done['id']}").json()["status"] == "expired"
        assert list((tmp_path / "results").iterdir()) == []


# -- access ---------------------------------------------------------------------------------


def test_an_api_key_guards_the_api(tmp_path: Path) -> None:
    config = fast_config(tmp_path, api_key="s3cret-key")
    with live_server(config) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/healthz").json()["auth_required"] is True
        assert client.get("/").status_code == 200  # the page asks for the key itself
        refused = client.get("/v1/models")
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert client.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/v1/models", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        bearer = {"Authorization": "Bearer s3cret-key"}
        assert client.get("/v1/models", headers=bearer).status_code == 200
        assert client.get("/metrics", headers=bearer).status_code == 200


def test_only_loopback_without_a_key(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert ServeConfig(host=host, data_dir=tmp_path).key is None
    for host in ("0.0.0.0", "192.168.1.10", "example.org", "::"):
        with pytest.raises(ValidationError, match="without an API key"):
            ServeConfig(host=host, data_dir=tmp_path)
    assert ServeConfig(host="0.0.0.0", api_key="k", data_dir=tmp_path).key == "k"

    from upres.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "without an API key" in result.output


def test_config_reads_the_environment(tmp_path: Path) -> None:
    environ = {
        "UPRES_SERVE_PORT": "9001",
        "UPRES_SERVE_QUEUE_SIZE": "5",
        "UPRES_SERVE_RETENTION": "2h",
        "UPRES_SERVE_DATA_DIR": str(tmp_path),
        "UPRES_SERVE_API_KEY": "from-env",
    }
    config = ServeConfig.from_env(environ, queue_size=7)
    assert (config.port, config.queue_size, config.retention) == (9001, 7, 7200.0)
    assert config.data_dir == tmp_path and config.key == "from-env"
    assert "from-env" not in repr(config)
    assert parse_duration("90m") == 5400 and parse_duration(3) == 3.0
    with pytest.raises(ValueError):
        parse_duration("soon")


# -- persistence ------------------------------------------------------------------------------


def spec() -> JobSpec:
    return JobSpec(model=FAST_MODEL, scale=4, input_size=(16, 16), planned_size=(64, 64))


def test_queued_and_interrupted_jobs_resume_after_a_restart(
    tmp_path: Path, photo: np.ndarray
) -> None:
    config = fast_config(tmp_path)
    with live_server(config, run_workers=False) as url, httpx.Client(base_url=url) as client:
        ids = [post_job(client, crop_png(photo, 16, 16)).json()["id"] for _ in range(3)]
    # Simulate a crash mid-job: take one job as a worker would, then never finish it.
    store = JobStore(tmp_path)
    running = store.claim_next()
    assert running is not None and running.id == ids[0]
    store.close()

    with live_server(config) as url, httpx.Client(base_url=url, timeout=30) as client:
        for job_id in ids:
            done = wait_for(client, job_id)
            assert done["status"] == "done"
            assert image_size(client.get(done["result_url"]).content) == (64, 64)
    assert list((tmp_path / "inputs").iterdir()) == []  # inputs go once jobs end


def test_a_job_that_keeps_crashing_the_server_is_failed(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    record = store.submit(spec(), b"input", capacity=10)
    for _ in range(3):  # three starts, each "killed" while the job ran
        assert store.claim_next().id == record.id
        store.close()
        store = JobStore(tmp_path)
        store.recover(max_attempts=3)
    failed = store.get(record.id)
    assert failed.status == "failed" and failed.error["error"] == "crashed"
    store.close()


def test_one_data_dir_serves_one_server(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    with pytest.raises(DataDirBusyError):
        JobStore(tmp_path)
    store.close()
    JobStore(tmp_path).close()


def test_any_upload_name_gives_a_safe_download_name(
    client: httpx.Client, photo: np.ndarray
) -> None:
    answer = post_job(client, crop_png(photo, 8, 8), name='фото "1";\r\nx.png')
    done = wait_for(client, answer.json()["id"])
    result = client.get(done["result_url"])
    assert result.status_code == 200
    disposition = result.headers["content-disposition"]
    assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+_x4\.png"', disposition)


def test_detail_off_falls_back_sensibly_when_the_faithful_model_is_missing(
    tmp_path: Path,
) -> None:
    from upres.models.catalog import CATALOG
    from upres.server.models import available, choose

    config = ServeConfig(data_dir=tmp_path, faithful_model="no-such-faithful-x4")
    choice = choose(None, False, 4, config)
    faithful_here = [c for c in CATALOG.values() if c.task == "sr" and available(c)]
    if faithful_here:  # another classical SR model stands in, without invented detail
        assert choice.card.task == "sr" and choice.notes == []
    else:  # only restoration models here: used, and the job says so
        assert choice.card.name == "realesrgan-x4plus"
        assert "no faithful model is available" in choice.notes[0]
    # Detail on, or an explicit name, never falls back.
    assert choose(None, True, None, config).card.name == "realesrgan-x4plus"
    assert choose(FAST_MODEL, False, None, config).card.name == FAST_MODEL


def test_a_faithful_model_that_cannot_be_had_falls_back_at_run_time(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import upres.server.worker as worker
    from upres.errors import ModelNotFoundError

    unreachable = "realesrgan-x4plus-anime"  # stands in for a download that fails offline
    real_load = worker.load
    attempts: list[str] = []

    def load(name: str, **options: object) -> object:
        attempts.append(name)
        if name == unreachable:
            raise ModelNotFoundError(f"{name}: no network to download it")
        return real_load(name, **options)

    monkeypatch.setattr(worker, "load", load)
    config = fast_config(tmp_path, faithful_model=unreachable)
    with live_server(config) as url, httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(2):
            job = post_job(client, crop_png(photo, 16, 16), detail="false").json()
            assert job["model"] == unreachable
            done = wait_for(client, job["id"])
            assert done["status"] == "done" and done["model"] == FAST_MODEL
            assert any("could not be loaded" in note for note in done["notes"])
        named = post_job(client, crop_png(photo, 16, 16), model=unreachable).json()
        failed = wait_for(client, named["id"])  # asked for by name: no substitute
        assert failed["status"] == "failed" and failed["error"]["error"] == "failed"
    assert attempts.count(unreachable) == 1  # the failure is remembered for a while
