"""CPU threads chosen for the cores actually free: affinity, cgroup quota, current load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import descriptor_of, tiny_compact
from upres.api import Upscaler
from upres.batch.item import RunnerSpec
from upres.cli.main import app
from upres.engine import cores
from upres.models.loader import LoadedModel


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    cores._governor = None
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("50000 100000", 0.5), ("junk", None)],
)
def test_cgroup_quota_is_read_as_cores(tmp_path: Path, text: str, expected: float | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert cores.cgroup_quota_cores(path) == expected
    assert cores.cgroup_quota_cores(tmp_path / "absent") is None


def test_a_quota_below_the_affinity_limits_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores, "affinity_cores", lambda: 8)
    monkeypatch.setattr(cores, "cgroup_quota_cores", lambda: 2.4)
    assert cores.usable_cores() == 2
    monkeypatch.setattr(cores, "cgroup_quota_cores", lambda: 0.3)
    assert cores.usable_cores() == 1


def test_affinity_is_respected_in_a_real_process() -> None:
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
    code += "from upres.engine.cores import usable_cores; print(usable_cores())"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert found.stdout.strip() == "1"


@pytest.mark.parametrize(
    ("busy", "workers", "threads"),
    [(0.0, 1, 4), (0.3, 1, 4), (1.0, 1, 3), (2.6, 1, 1), (9.0, 1, 1), (0.0, 2, 2), (1.0, 2, 1)],
)
def test_threads_follow_the_free_cores(
    monkeypatch: pytest.MonkeyPatch, busy: float, workers: int, threads: int
) -> None:
    monkeypatch.setattr(cores, "usable_cores", lambda: 4)
    choice = cores.choose_threads(workers=workers, busy=busy)
    assert choice.threads == threads and choice.usable_cores == 4
    assert "4 usable core(s)" in choice.reason
    assert ("busy with other work" in choice.reason) == (busy >= 0.5)
    assert ("shared by 2 workers" in choice.reason) == (workers == 2)


def test_a_spinning_process_is_seen_as_busy() -> None:
    code = "import time\nend = time.monotonic() + 6\nwhile time.monotonic() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-S", "-c", code])
    try:
        time.sleep(1.0)  # the interpreter starts, then spins
        busy = cores.busy_cores_elsewhere(cores.usable_cores(), sample_seconds=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy >= 0.7


def test_a_long_batch_rechecks_and_follows_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = iter([0.0, 1.0, 0.0])
    monkeypatch.setattr(cores, "usable_cores", lambda: 2)
    monkeypatch.setattr(cores, "busy_cores_elsewhere", lambda _usable: next(loads))
    monkeypatch.setattr(cores, "RECHECK_SECONDS", 0.0)
    assert cores.configure().threads == 2 and torch.get_num_threads() == 2
    upscaler = Upscaler(LoadedModel(descriptor_of(tiny_compact()), "tiny", None, Path("t")))
    image = np.random.default_rng(0).random((24, 24, 3), dtype=np.float32)
    upscaler(image)  # another process took a core meanwhile
    assert torch.get_num_threads() == 1 and cores.current_choice().threads == 1
    upscaler(image)  # and gave it back
    assert torch.get_num_threads() == 2


def test_an_explicit_count_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores, "RECHECK_SECONDS", 0.0)
    choice = cores.configure(3)
    assert choice.threads == 3 and choice.reason == "set by --threads"
    assert cores.recheck().threads == 3 and torch.get_num_threads() == 3


def test_batch_workers_split_the_free_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores, "usable_cores", lambda: 4)
    monkeypatch.setattr(cores, "busy_cores_elsewhere", lambda _usable: 0.0)
    import upres.api

    monkeypatch.setattr(upres.api, "load", lambda *args, **kwargs: None)
    RunnerSpec(workers=2)()
    assert torch.get_num_threads() == 2
    assert cores.current_choice().reason == "4 usable core(s), shared by 2 workers"


def test_json_says_what_was_chosen_and_why(tmp_path: Path, compact_checkpoint: Path) -> None:
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16), "blue").save(image)
    arguments = ["upscale", str(image), "-m", str(compact_checkpoint), "--json"]
    outcome = CliRunner().invoke(app, [*arguments, "-o", str(tmp_path / "a.png")])
    assert outcome.exit_code == 0, outcome.output
    chosen = json.loads(outcome.stdout)["chosen"]
    assert chosen["engine"] == "torch" and chosen["precision"] in ("float32", "bfloat16")
    short = {"float32": "fp32", "bfloat16": "bf16"}[chosen["precision"]]
    assert chosen["precision_reason"].startswith(f"{short}: this CPU")
    assert chosen["threads"] >= 1 and "usable core(s)" in chosen["threads_reason"]
    outcome = CliRunner().invoke(app, [*arguments, "--threads", "1", "-o", str(tmp_path / "b.png")])
    chosen = json.loads(outcome.stdout)["chosen"]
    assert chosen["threads"] == 1 and chosen["threads_reason"] == "set by --threads"
