"""`upres batch` under the failures a 100k-image job meets, in small (a few hundred items):
the driver killed with SIGKILL mid-batch, and a Ray worker node lost mid-batch.

Both end with the same exactness check: every valid input has exactly one `done` row and
one output, every corrupt input exactly one `failed` row, and no temporary file is left.
benchmarks/scale_100k.py runs the same cases at 100,000 items.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PROJECT_ROOT
from upres.batch import MANIFEST_NAME, ItemOptions
from upres.batch.driver import run_batch
from upres.batch.item import RunnerSpec
from upres.batch.manifest import Manifest

BICUBIC = RunnerSpec(("bicubic",), device="cpu", threads=1)


def write_inputs(folder: Path, valid: int, corrupt: int) -> None:
    """Small real images (PNG and JPEG, two sizes) in two folders, and corrupt files at
    both ends of the listing (the top folder comes first, part1/ last)."""
    rng = np.random.default_rng(0)
    for index in range(valid):
        size = (16, 24)[index % 2]
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        suffix = ("png", "jpg")[index % 3 == 0]
        target = folder / f"part{index % 2}" / f"{index:04d}.{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG" if suffix == "png" else "JPEG")
        target.write_bytes(buffer.getvalue())
    for index in range(corrupt):
        where = folder / ("part1" if index % 2 else "")
        (where / f"broken{index}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(index))


def manifest_lines(dst: Path) -> list[str]:
    path = dst / MANIFEST_NAME
    return path.read_text().splitlines() if path.exists() else []


def assert_exactly_once(dst: Path, valid: int, corrupt: int) -> None:
    rows = [json.loads(line) for line in manifest_lines(dst) if line.endswith("}")]
    inputs = [row["input"] for row in rows]
    assert len(inputs) == len(set(inputs)) == valid + corrupt  # each input once
    statuses = [row["status"] for row in rows]
    assert (statuses.count("done"), statuses.count("failed")) == (valid, corrupt)
    outputs = [p for p in dst.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(outputs) == valid
    assert not list(dst.rglob("*upres-tmp*"))


def cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "upres", "batch", *arguments, "-m", "bicubic", "--threads", "1"]


def cli_env() -> dict[str, str]:
    paths = [str(PROJECT_ROOT / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    return os.environ | {"PYTHONPATH": os.pathsep.join(paths)}


def kill_driver_after(src: Path, dst: Path, rows: int) -> int:
    """Run `upres batch` in its own process, SIGKILL it once the manifest has `rows` rows;
    returns its exit status."""
    driver = subprocess.Popen(
        cli(str(src), str(dst), "--device", "cpu"),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(manifest_lines(dst)) < rows and driver.poll() is None:
        assert time.monotonic() < deadline, "the driver made no progress"
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    return driver.wait()


def test_driver_killed_with_sigkill_mid_batch_resumes_exactly_once(tmp_path: Path) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    valid, corrupt = 400, 5
    write_inputs(src, valid, corrupt)
    BICUBIC()  # its one-tensor file, made once before the driver's clock matters
    assert kill_driver_after(src, dst, 100) == -signal.SIGKILL  # killed, not finished
    recorded = [line for line in manifest_lines(dst) if line.endswith("}")]
    assert 100 <= len(recorded) < valid + corrupt

    rerun = run_batch(str(src), str(dst), BICUBIC, ItemOptions())  # here: no second start-up
    assert rerun.skipped == len(recorded)  # what was recorded is not redone
    assert rerun.skipped + rerun.done + rerun.failed == valid + corrupt
    assert rerun.failed >= 1  # part1/'s corrupt inputs come after the kill
    assert_exactly_once(dst, valid, corrupt)


def test_summary_keeps_counts_and_the_first_errors_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import upres.batch.driver as driver

    monkeypatch.setattr(driver, "ERRORS_KEPT", 3)
    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src, 4, 8)
    facts = run_batch(str(src), str(dst), BICUBIC, ItemOptions()).to_dict()
    assert (facts["done"], facts["failed"]) == (4, 8)
    assert len(facts["errors"]) == 3 and facts["errors_not_shown"] == 5
    assert facts["manifest"].endswith(MANIFEST_NAME)
    assert_exactly_once(dst, 4, 8)


def test_manifest_after_a_torn_last_line_keeps_every_new_row(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("file")
    whole = json.dumps({"input": "a.png", "output": "x", "status": "done", "fingerprint": "1"})
    (tmp_path / MANIFEST_NAME).write_text(whole + "\n" + '{"input": "b.p')  # killed mid-row
    with Manifest.open(fs, str(tmp_path)) as manifest:
        assert list(manifest.rows) == ["a.png"]
        manifest.append({"input": "b.png", "output": "y", "status": "failed", "fingerprint": "2"})
    with Manifest.open(fs, str(tmp_path)) as manifest:
        assert list(manifest.rows) == ["a.png", "b.png"]
        assert manifest.settled("b.png", "2") and not manifest.settled("b.png", "3")


# --------------------------------------------------------------------------- Ray node loss


def node_running(cluster: object, workers: set[str]) -> object | None:
    """The worker node (not the head) whose raylet started one of these host:pid workers."""
    import psutil

    raylets = {n.all_processes["raylet"][0].process.pid: n for n in cluster.worker_nodes}
    for worker in workers:
        try:
            parents = psutil.Process(int(worker.rsplit(":", 1)[1])).parents()
        except (psutil.NoSuchProcess, ValueError):
            continue
        for parent in parents:
            if parent.pid in raylets:
                return raylets[parent.pid]
    return None


@pytest.fixture
def ray_cluster() -> object:
    """A head and two worker nodes on 127.0.0.1, one CPU each: two actors, one spare CPU."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    paths = [str(PROJECT_ROOT / "src"), str(PROJECT_ROOT / "tests"), *sys.path]
    ray.init(
        address=cluster.address,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}},
    )
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow  # three Ray nodes, two actors, a node's death noticed: over a minute
def test_ray_batch_survives_losing_a_worker_node_mid_batch(
    ray_cluster: object, tmp_path: Path
) -> None:
    from upres.batch.ray_runner import RayOptions

    src, dst = tmp_path / "in", tmp_path / "out"
    valid, corrupt = 240, 4
    write_inputs(src, valid, corrupt)
    workers: set[str] = set()
    removed: list[int] = []
    finished = 0

    def on_row(row: dict) -> None:
        nonlocal finished
        finished += 1
        workers.add(row["worker"])
        if not removed and finished >= (valid + corrupt) // 3:
            node = node_running(ray_cluster, workers)
            if node is not None:  # the node of a live actor: it dies with its processes
                ray_cluster.remove_node(node, allow_graceful=False)
                removed.append(finished)

    summary = run_batch(
        str(src),
        str(dst),
        BICUBIC,
        ItemOptions(),
        engine="ray",
        ray_options=RayOptions(workers=2),
        on_row=on_row,
    )
    assert removed, "no worker node held an actor: nothing was lost"
    assert removed[0] < valid + corrupt  # lost mid-batch, not after it
    assert (summary.done, summary.failed) == (valid, corrupt)
    assert_exactly_once(dst, valid, corrupt)
