"""The server as users run it (`python -m upres serve`), under load and under `kill -9`.

All traffic stays on 127.0.0.1; the request count and every wait are bounded.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from conftest import PROJECT_ROOT
from server_support import FAST_MODEL, crop_png, free_port, image_size, png_bytes, wait_for

CLIENTS = 16
REQUESTS = 240
MAX_UPLOAD = 100_000
# The server's whole resident memory, torch and the model included, must stay below this.
RSS_CAP_MB = 1500


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path


@contextmanager
def serve(data_dir: Path, *extra: str, port: int | None = None) -> Iterator[Server]:
    """`python -m upres serve` in a subprocess, stopped (SIGKILL) at the end if still alive."""
    port = port or free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    command = [sys.executable, "-m", "upres", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--restoration-model", FAST_MODEL]
    command += ["--log-level", "warning", *extra]
    log = data_dir.parent / f"server-{port}-{time.monotonic_ns()}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_until_up(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def wait_until_up(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{server.log.read_text()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not start in {timeout} s:\n{server.log.read_text()}")


class PeakRss:
    """Samples the server's resident memory in the background."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- load ---------------------------------------------------------------------------------


@dataclass
class Sent:
    kind: str  # valid-job | valid-sync | oversized | bomb | corrupt | not-image
    status: int
    seconds: float
    job_id: str | None = None
    retry_after: str | None = None


def request_mix(photo: np.ndarray) -> list[tuple[str, str, bytes, dict]]:
    """(kind, path, file bytes, options), shuffled with a fixed seed."""
    rng = random.Random(0)
    truncated = crop_png(photo, 32, 32)
    mix = []
    for index in range(REQUESTS):
        side = rng.choice((16, 24, 32))
        x, y = rng.randrange(0, 480), rng.randrange(0, 480)
        kind = ("valid-job",) * 9 + ("valid-sync",) * 2 + ("oversized", "bomb")
        kind += ("corrupt", "corrupt", "not-image")
        chosen = kind[index % len(kind)]
        if chosen == "valid-job":
            options = {"scale": rng.choice(("2", "4")), "sharpen": str(rng.choice((0, 0.3)))}
            mix.append((chosen, "/v1/jobs", crop_png(photo, side, side, x, y), options))
        elif chosen == "valid-sync":
            mix.append((chosen, "/v1/upscale", crop_png(photo, 16, 16, x, y), {"scale": "2"}))
        elif chosen == "oversized":
            mix.append((chosen, "/v1/jobs", rng.randbytes(MAX_UPLOAD + 5000), {}))
        elif chosen == "bomb":
            big = png_bytes(np.zeros((400, 400), np.uint8))  # 160,000 px > 65,536
            mix.append((chosen, "/v1/jobs", big, {}))
        elif chosen == "corrupt":
            cut = rng.randrange(20, len(truncated) * 4 // 5)  # always short of the pixel data
            mix.append((chosen, rng.choice(("/v1/jobs", "/v1/upscale")), truncated[:cut], {}))
        else:
            mix.append((chosen, "/v1/jobs", b"%PDF-1.4 not an image" * 20, {}))
    rng.shuffle(mix)
    return mix


def send_all(url: str, mix: list) -> list[Sent]:
    lanes = [mix[i::CLIENTS] for i in range(CLIENTS)]

    def client_lane(lane: list) -> list[Sent]:
        sent = []
        with httpx.Client(base_url=url, timeout=150) as client:
            for kind, path, data, options in lane:
                started = time.perf_counter()
                answer = client.post(path, files={"file": ("in.png", data)}, data=options)
                seconds = time.perf_counter() - started
                job_id = answer.json()["id"] if answer.status_code == 202 else None
                retry = answer.headers.get("retry-after")
                sent.append(Sent(kind, answer.status_code, seconds, job_id, retry))
        return sent

    with ThreadPoolExecutor(CLIENTS) as pool:
        return [s for lane in pool.map(client_lane, lanes) for s in lane]


def test_load_mixed_requests_from_16_clients(tmp_path: Path, photo: np.ndarray) -> None:
    data_dir = tmp_path / "data"
    limits = ["--queue-size", "16", "--max-upload-bytes", str(MAX_UPLOAD)]
    limits += ["--max-input-pixels", str(256 * 256)]
    mix = request_mix(photo)
    with serve(data_dir, *limits) as server, PeakRss(server.process.pid) as rss:
        started = time.perf_counter()
        sent = send_all(server.url, mix)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ended = [wait_for(client, s.job_id, timeout=120) for s in sent if s.job_id]
        elapsed = time.perf_counter() - started
        metrics = httpx.get(server.url + "/metrics").text

    statuses = Counter(s.status for s in sent)
    latencies = sorted(s.seconds for s in sent)
    figures = {
        "requests": len(sent),
        "clients": CLIENTS,
        "statuses": dict(sorted(statuses.items())),
        "by_kind": dict(Counter(f"{s.kind}:{s.status}" for s in sent)),
        "p50_ms": round(1000 * latencies[len(latencies) // 2]),
        "p95_ms": round(1000 * latencies[int(len(latencies) * 0.95)]),
        "max_ms": round(1000 * latencies[-1]),
        "jobs_done": sum(e["status"] == "done" for e in ended),
        "seconds": round(elapsed, 1),
        "peak_rss_mb": round(rss.peak / 2**20),
    }
    print(f"\nload test: {figures}")

    assert len(sent) == REQUESTS >= 200
    assert not [s for s in sent if s.status >= 500], figures
    allowed = {
        "valid-job": {202, 429},
        "valid-sync": {200, 429},
        "oversized": {413},
        "bomb": {413},
        "corrupt": {400},
        "not-image": {415},
    }
    wrong = [s for s in sent if s.status not in allowed[s.kind]]
    assert not wrong, wrong
    assert all(e["status"] == "done" for e in ended), [e for e in ended if e["status"] != "done"]
    # The queue filled (real work was done) and pushed back with 429 + Retry-After beyond it.
    # (synchronous requests wait in the same queue, so they count towards the 16 too)
    assert sum(s.kind.startswith("valid") and s.status in (200, 202) for s in sent) >= 16
    assert statuses[429] > 0
    assert all(s.retry_after and int(s.retry_after) >= 1 for s in sent if s.status == 429)
    assert 0 < rss.peak < RSS_CAP_MB * 2**20, figures
    assert 'route="/v1/jobs",status="202"' in metrics


# -- kill -9 -------------------------------------------------------------------------------


def statuses_of(client: httpx.Client, ids: list[str]) -> list[str]:
    return [client.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in ids]


def test_kill_9_mid_queue_then_restart_finishes_every_job(
    tmp_path: Path, photo: np.ndarray
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    with serve(data_dir, port=port) as server, httpx.Client(base_url=server.url) as client:
        ids = []
        for index in range(8):
            data = crop_png(photo, 96, 96, x=40 * index, y=100)
            answer = client.post("/v1/jobs", files={"file": (f"p{index}.png", data)})
            assert answer.status_code == 202
            ids.append(answer.json()["id"])
        deadline = time.monotonic() + 120
        while (states := statuses_of(client, ids))[0] != "done" or "running" not in states:
            assert time.monotonic() < deadline, states
            time.sleep(0.02)
        kept = client.get(f"/v1/jobs/{ids[0]}/result").content
        server.process.kill()  # SIGKILL: no shutdown hook runs
        server.process.wait(30)
    print(f"\nat kill -9: {Counter(states)}")
    assert "queued" in states and "running" in states

    with serve(data_dir, port=port) as server, httpx.Client(base_url=server.url) as client:
        finished = [wait_for(client, job_id, timeout=120) for job_id in ids]
        assert [job["status"] for job in finished] == ["done"] * len(ids)
        for job in finished:
            assert image_size(client.get(job["result_url"]).content) == (384, 384)
        # A result finished before the kill is kept, unchanged.
        assert client.get(f"/v1/jobs/{ids[0]}/result").content == kept
    print(f"after restart: all {len(ids)} jobs done")


def test_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from upres.cli.main import app

    data_dir = tmp_path / "data"
    with serve(data_dir):
        arguments = ["serve", "--port", str(free_port()), "--data-dir", str(data_dir)]
        second = CliRunner().invoke(app, arguments)
    assert second.exit_code == 2
    assert "in use by another upres server" in second.output


@pytest.fixture(autouse=True)
def _no_stray_servers() -> Iterator[None]:
    """Every server a test starts is gone when it ends."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    after = {child.pid for child in psutil.Process().children(recursive=True)}
    assert not (after - before)
