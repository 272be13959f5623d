"""The local engine's worker processes: the driver stays light, and an input that kills
its process fails alone instead of ending the batch."""

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

from batch_support import CrashOnceSpec, CrashOnWidthSpec
from test_batch_scale import (
    BICUBIC,
    assert_exactly_once,
    cli_env,
    kill_driver_after,
    manifest_lines,
    write_inputs,
)
from upres.batch import ItemOptions
from upres.batch.driver import run_batch
from upres.batch.item import RunnerSpec
from upres.batch.workers import WorkerCrashed
from upres.errors import UpresError


def rows_of(dst: Path) -> list[dict]:
    return [json.loads(line) for line in manifest_lines(dst)]


def write_poison(folder: Path, width: int, count: int) -> None:
    """Valid images of a width the crashing runner dies on."""
    rng = np.random.default_rng(1)
    for index in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (9, width, 3), dtype=np.uint8)).save(buffer, "PNG")
        (folder / f"poison{index}.png").write_bytes(buffer.getvalue())


def test_model_runs_in_a_worker_process_and_the_driver_never_imports_torch(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src, 30, 2)
    script = (
        "import sys\n"
        "from upres.batch import ItemOptions\n"
        "from upres.batch.driver import run_batch\n"
        "from upres.batch.item import RunnerSpec\n"
        f"spec = RunnerSpec(('bicubic',), device='cpu', threads=1)\n"
        f"summary = run_batch({str(src)!r}, {str(dst)!r}, spec, ItemOptions(), processes=2)\n"
        "print(summary.done, summary.failed, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["30", "2", "False"]
    workers = {row["worker"] for row in rows_of(dst)}
    assert len(workers) == 2  # two processes shared the work
    assert not any(worker.endswith(f":{os.getpid()}") for worker in workers)
    assert_exactly_once(dst, 30, 2)


def test_a_worker_killed_mid_batch_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src, 40, 2)
    crashing = CrashOnceSpec(BICUBIC, str(tmp_path / "crashed-once"), hard=True, after=10)
    summary = run_batch(str(src), str(dst), crashing, ItemOptions())
    assert (tmp_path / "crashed-once").exists()  # a worker really died mid-batch
    assert (summary.done, summary.failed) == (40, 2)  # the items it held were replayed
    assert len({row["worker"] for row in rows_of(dst)}) == 2  # the first and its successor
    assert_exactly_once(dst, 40, 2)


def test_an_input_that_kills_its_worker_fails_alone(tmp_path: Path) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src, 20, 1)
    write_poison(src, 13, 3)
    summary = run_batch(str(src), str(dst), CrashOnWidthSpec(BICUBIC, 13), ItemOptions())
    assert (summary.done, summary.failed) == (20, 4)
    killed = [row for row in rows_of(dst) if "died on this input" in (row["error"] or "")]
    assert sorted(row["input"] for row in killed) == ["poison0.png", "poison1.png", "poison2.png"]
    assert all("exit code 139" in row["error"] for row in killed)
    assert_exactly_once(dst, 20, 4)
    again = run_batch(str(src), str(dst), BICUBIC, ItemOptions(), retry_failed=True)
    assert again.done == 3  # a failed row is retried like any other


def test_workers_that_always_die_stop_the_batch_with_a_clear_error(tmp_path: Path) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_poison(src, 13, 12)
    with pytest.raises(WorkerCrashed, match="died 10 time"):
        run_batch(str(src), str(dst), CrashOnWidthSpec(BICUBIC, 13), ItemOptions())


def test_a_model_that_cannot_load_raises_the_same_error_as_in_process(tmp_path: Path) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src, 2, 0)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    spec = RunnerSpec((str(broken),), device="cpu", threads=1)
    with pytest.raises(UpresError) as in_worker:
        run_batch(str(src), str(dst), spec, ItemOptions())
    with pytest.raises(UpresError) as in_process:
        run_batch(str(src), str(dst), spec, ItemOptions(), processes=0)
    assert type(in_worker.value) is type(in_process.value)
    assert str(in_worker.value) == str(in_process.value)


def test_a_worker_outlives_a_killed_driver_only_to_finish_its_item(tmp_path: Path) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src, 300, 0)
    assert kill_driver_after(src, dst, 20) == -signal.SIGKILL
    worker_pid = int(json.loads(manifest_lines(dst)[0])["worker"].rsplit(":", 1)[1])
    deadline = time.monotonic() + 20
    while _alive(worker_pid):
        assert time.monotonic() < deadline, "the orphaned worker kept running"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")
