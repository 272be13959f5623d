"""`upres batch`: resumable, exactly-once folder upscaling, in-process and on Ray Data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import fsspec
import pytest
from PIL import Image
from typer.testing import CliRunner

from batch_support import CrashOnceSpec
from conftest import DATASETS, PROJECT_ROOT
from upres.batch import MANIFEST_NAME, ItemOptions
from upres.batch.driver import run_batch
from upres.batch.item import RunnerSpec, plan_items
from upres.cli.main import app

CROPS = [("Set5", "baby.png"), ("Set5", "bird.png"), ("Set14", "lenna.png")]


def write_inputs(folder: Path) -> list[str]:
    """Three real 24x20 crops (one in a sub-folder, one as JPEG) and one corrupt file."""
    (folder / "sub").mkdir(parents=True)
    names = []
    for index, (dataset, name) in enumerate(CROPS):
        source = DATASETS / dataset / "HR" / name
        if not source.exists():
            source = DATASETS / "Set5" / "HR" / "head.png"
        with Image.open(source) as image:
            crop = image.convert("RGB").crop((100, 100, 124, 120))
        target = ["a.png", "sub/b.png", "c.jpg"][index]
        crop.save(folder / target)
        names.append(target)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really an image")
    return [*names, "broken.png"]


def manifest_rows(dst: Path) -> list[dict]:
    return [json.loads(line) for line in (dst / MANIFEST_NAME).read_text().splitlines()]


@pytest.fixture
def spec(compact_checkpoint: Path) -> RunnerSpec:
    return RunnerSpec((str(compact_checkpoint),), device="cpu")


# --------------------------------------------------------------------------- local engine


def test_local_batch_writes_outputs_and_one_error_row(tmp_path: Path, spec: RunnerSpec) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    summary = run_batch(str(src), str(dst), spec, ItemOptions())
    assert (summary.done, summary.failed, summary.skipped) == (3, 1, 0)
    for name in ("a.png", "sub/b.png", "c.jpg"):
        with Image.open(dst / name) as image:
            assert image.size == (48, 40)
    rows = {row["input"]: row for row in manifest_rows(dst)}
    assert rows["broken.png"]["status"] == "failed" and rows["broken.png"]["error"]
    assert {rows[n]["status"] for n in ("a.png", "sub/b.png", "c.jpg")} == {"done"}
    assert not [p for p in dst.rglob("*upres-tmp*")]


def test_local_rerun_skips_everything_and_redoes_a_changed_or_lost_output(
    tmp_path: Path, spec: RunnerSpec
) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    run_batch(str(src), str(dst), spec, ItemOptions())
    again = run_batch(str(src), str(dst), spec, ItemOptions())
    assert (again.done, again.failed, again.skipped) == (0, 0, 4)
    (dst / "a.png").unlink()  # a lost output is redone; the failed input only when asked
    third = run_batch(str(src), str(dst), spec, ItemOptions(), retry_failed=True)
    assert (third.done, third.failed, third.skipped) == (1, 1, 2)


def test_local_run_killed_mid_batch_resumes_where_it_stopped(
    tmp_path: Path, spec: RunnerSpec
) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src)  # in order: a.png, broken.png, c.jpg, sub/b.png
    crashing = CrashOnceSpec(spec, str(tmp_path / "crashed-once"), hard=False, after=1)
    with pytest.raises(SystemExit):  # dies upscaling c.jpg
        run_batch(str(src), str(dst), crashing, ItemOptions(), processes=0)
    assert [row["input"] for row in manifest_rows(dst)] == ["a.png", "broken.png"]
    resumed = run_batch(str(src), str(dst), spec, ItemOptions())
    assert (resumed.done, resumed.failed, resumed.skipped) == (2, 0, 2)
    assert [row["input"] for row in manifest_rows(dst)][2:] == ["c.jpg", "sub/b.png"]
    assert not [p for p in dst.rglob("*upres-tmp*")]


def test_memory_urls_and_format(spec: RunnerSpec, tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    write_inputs(tmp_path)
    for path in tmp_path.rglob("*.*"):
        fs.pipe_file(f"/src/{path.relative_to(tmp_path)}", path.read_bytes())
    summary = run_batch("memory://src", "memory://dst", spec, ItemOptions(format="webp"))
    assert (summary.done, summary.failed) == (3, 1)
    assert fs.exists("/dst/sub/b.webp") and fs.exists(f"/dst/{MANIFEST_NAME}")
    assert [i.key for i in plan_items("memory://dst", "memory://elsewhere")] == [
        "a.webp",
        "c.webp",
        "sub/b.webp",
    ]  # the manifest and hidden temporaries are never inputs


def test_cli_json_summary_and_exit_status(tmp_path: Path, compact_checkpoint: Path) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    arguments = ["batch", str(src), str(dst), "-m", str(compact_checkpoint), "--device", "cpu"]
    result = CliRunner().invoke(app, [*arguments, "--json"])
    assert result.exit_code == 1, result.output  # one input failed
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"]) == (3, 1)
    assert summary["images_per_s"] > 0 and summary["megapixels_per_s"] > 0
    result = CliRunner().invoke(app, [*arguments, "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["skipped"] == 4


# --------------------------------------------------------------------------- Ray engine


@pytest.fixture(scope="module")
def local_ray() -> object:
    """One light local Ray for the module; workers find upres and these helpers by path."""
    ray = pytest.importorskip("ray")
    paths = [str(PROJECT_ROOT / "src"), str(PROJECT_ROOT / "tests"), *sys.path]
    ray.init(
        address="local",  # a fresh instance, not another cluster running on this machine
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}},
    )
    yield ray
    ray.shutdown()


def ray_options(workers: int = 2) -> object:
    from upres.batch.ray_runner import RayOptions

    return RayOptions(workers=workers)


def test_ray_batch_survives_a_killed_worker_and_resumes(
    local_ray: object, tmp_path: Path, spec: RunnerSpec
) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    crashing = CrashOnceSpec(spec, str(tmp_path / "crashed-once"))
    summary = run_batch(
        str(src), str(dst), crashing, ItemOptions(), engine="ray", ray_options=ray_options()
    )
    assert (tmp_path / "crashed-once").exists()  # a worker really died mid-batch
    assert (summary.done, summary.failed, summary.skipped) == (3, 1, 0)
    rows = manifest_rows(dst)
    assert len(rows) == 4  # exactly once: the retried item has a single row
    assert len({row["worker"] for row in rows}) >= 1
    for name in ("a.png", "sub/b.png", "c.jpg"):
        with Image.open(dst / name) as image:
            assert image.size == (48, 40)
    again = run_batch(
        str(src), str(dst), spec, ItemOptions(), engine="ray", ray_options=ray_options()
    )
    assert (again.done, again.failed, again.skipped) == (0, 0, 4)


def test_local_runner_reads_the_next_item_while_the_model_works(
    tmp_path: Path, spec: RunnerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    import upres.batch.local as local
    from upres.batch.item import plan_items

    src, dst = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    events: list[tuple[str, str, str]] = []  # (what, item, thread)
    real_read, real_infer = local.read_stage, local.infer_stage

    def read(item, options):
        events.append(("read", item.key, threading.current_thread().name))
        return real_read(item, options)

    def infer(runner, flight):
        events.append(("infer", flight.item.key, threading.current_thread().name))
        time.sleep(0.2)  # a slow model: the next read must not wait for it
        result = real_infer(runner, flight)
        events.append(("inferred", flight.item.key, threading.current_thread().name))
        return result

    monkeypatch.setattr(local, "read_stage", read)
    monkeypatch.setattr(local, "infer_stage", infer)
    items = list(plan_items(str(src), str(dst)))
    rows = list(local.run_local(items, spec, ItemOptions(), processes=0))
    assert [row["input"] for row in rows] == [item.key for item in items]  # order kept
    assert [row["status"] for row in rows].count("failed") == 1  # broken.png, as its row
    order = [(what, key) for what, key, _ in events]
    second = items[1].key
    assert order.index(("read", second)) < order.index(("inferred", items[0].key))
    assert {thread for what, _, thread in events if what == "read"} != {
        thread for what, _, thread in events if what == "infer"
    }
