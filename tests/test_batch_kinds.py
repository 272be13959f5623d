"""`upres batch` takes every kind of input: stills, animated GIF/WebP/APNG and videos."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import av
import fsspec
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import PROJECT_ROOT
from upres.batch import MANIFEST_NAME, ItemOptions
from upres.batch.driver import run_batch
from upres.batch.item import RunnerSpec, frame_count, plan_items
from upres.cli.main import app

FRAMES = 3
VIDEO_FRAMES = 4


def frames(photo: np.ndarray, count: int, size: int = 16) -> list[Image.Image]:
    """Crops of a real photo panning right: every frame different."""
    return [
        Image.fromarray(np.ascontiguousarray(photo[200 : 200 + size, 200 + 3 * i :][:, :size]))
        for i in range(count)
    ]


def make_clip(path: Path, photo: np.ndarray) -> None:
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=12)
        video.width, video.height, video.pix_fmt = 32, 16, "yuv420p"
        for index in range(VIDEO_FRAMES):
            crop = np.ascontiguousarray(photo[200:216, 200 + 2 * index :][:, :32])
            container.mux(video.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        container.mux(video.encode(None))


def write_every_kind(folder: Path, photo: np.ndarray) -> None:
    (folder / "sub").mkdir(parents=True)
    still, *rest = frames(photo, FRAMES)
    still.save(folder / "still.png")
    still.save(folder / "moving.gif", save_all=True, append_images=rest, duration=80, loop=0)
    still.save(folder / "single.gif")  # one frame: a still
    still.save(folder / "sub/moving.webp", save_all=True, append_images=rest, duration=80)
    still.save(folder / "moving.png", save_all=True, append_images=rest, duration=80)  # APNG
    make_clip(folder / "sub/clip.mp4", photo)


def frame_total(path: Path) -> int:
    if path.suffix == ".mp4":
        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(video=0))
    with Image.open(path) as image:
        return int(getattr(image, "n_frames", 1))


def output_size(path: Path) -> tuple[int, int]:
    if path.suffix == ".mp4":
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return stream.codec_context.width, stream.codec_context.height
    with Image.open(path) as image:
        return image.size


# What each input becomes: its output, the kind recorded, frames, PIL format.
EXPECTED = {
    "still.png": ("still.png", "still", 1, "PNG"),
    "moving.gif": ("moving.gif", "animation", FRAMES, "GIF"),
    "single.gif": ("single.png", "still", 1, "PNG"),
    "sub/moving.webp": ("sub/moving.webp", "animation", FRAMES, "WEBP"),
    "moving.png": ("moving.png", "animation", FRAMES, "PNG"),
    "sub/clip.mp4": ("sub/clip.mp4", "video", VIDEO_FRAMES, None),
}


@pytest.fixture
def spec(compact_checkpoint: Path) -> RunnerSpec:
    return RunnerSpec((str(compact_checkpoint),), device="cpu")


def check_outputs(dst: Path) -> None:
    rows = {}
    for line in (dst / MANIFEST_NAME).read_text().splitlines():
        row = json.loads(line)
        rows[row["input"]] = row
    assert set(rows) == set(EXPECTED)
    for name, (output, kind, count, pil_format) in EXPECTED.items():
        row, path = rows[name], dst / output
        assert row["status"] == "done", row
        assert row["kind"] == kind, (name, row)
        assert row["output"].endswith(output), (name, row["output"])
        assert frame_total(path) == count, name
        if pil_format:
            with Image.open(path) as image:
                assert image.format == pil_format, name
        width, height = row["input_size"]
        assert output_size(path) == (2 * width, 2 * height) == tuple(row["output_size"]), name
    assert not (dst / "single.gif").exists()
    assert not list(dst.rglob("*upres-tmp*"))


def test_cli_batch_takes_every_kind_and_a_rerun_skips_them(
    tmp_path: Path, spec: RunnerSpec, photo: np.ndarray
) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_every_kind(src, photo)
    arguments = ["batch", str(src), str(dst), "-m", spec.models[0], "--device", "cpu", "--json"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"], summary["skipped"]) == (len(EXPECTED), 0, 0)
    check_outputs(dst)
    again = json.loads(CliRunner().invoke(app, arguments).stdout)
    assert (again["done"], again["failed"], again["skipped"]) == (0, 0, len(EXPECTED))


def test_ray_batch_takes_every_kind(tmp_path: Path, spec: RunnerSpec, photo: np.ndarray) -> None:
    ray = pytest.importorskip("ray")
    from upres.batch.ray_runner import RayOptions

    src, dst = tmp_path / "in", tmp_path / "out"
    write_every_kind(src, photo)
    paths = [str(PROJECT_ROOT / "src"), *sys.path]  # workers import this checkout's upres
    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}},
    )
    try:
        options = RayOptions(workers=1)
        summary = run_batch(
            str(src), str(dst), spec, ItemOptions(), engine="ray", ray_options=options
        )
        assert (summary.done, summary.failed) == (len(EXPECTED), 0), summary.errors
        check_outputs(dst)
        again = run_batch(
            str(src), str(dst), spec, ItemOptions(), engine="ray", ray_options=options
        )
        assert (again.done, again.skipped) == (0, len(EXPECTED))
    finally:
        ray.shutdown()


def test_format_for_stills_leaves_animations_and_videos_in_their_own(
    tmp_path: Path, spec: RunnerSpec, photo: np.ndarray
) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    write_every_kind(src, photo)
    (src / "sub/clip.mp4").unlink()  # the video's rule is by name: checked in the plan below
    summary = run_batch(str(src), str(dst), spec, ItemOptions(format="jpg"))
    assert (summary.done, summary.failed) == (len(EXPECTED) - 1, 0)
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("[!.]*.*")) == [
        "moving.gif",
        "moving.png",
        "single.jpg",
        "still.jpg",
        "sub/moving.webp",
    ]
    (src / "clip.mp4").write_bytes(b"")
    planned = {item.key: item.destination for item in plan_items(str(src), str(dst), "png")}
    assert planned["clip.mp4"].endswith("/clip.mp4")


def test_remote_filesystem_runs_animations_through_a_local_copy(
    spec: RunnerSpec, photo: np.ndarray
) -> None:
    fs = fsspec.filesystem("memory")
    still, *rest = frames(photo, FRAMES)
    with fs.open("/kinds-in/a.gif", "wb") as handle:
        still.save(handle, format="GIF", save_all=True, append_images=rest)
    with fs.open("/kinds-in/b.png", "wb") as handle:
        still.save(handle, format="PNG")
    try:
        summary = run_batch("memory://kinds-in", "memory://kinds-out", spec, ItemOptions())
        assert (summary.done, summary.failed) == (2, 0), summary.errors
        with fs.open("/kinds-out/a.gif", "rb") as handle, Image.open(handle) as image:
            assert (image.format, image.n_frames, image.size) == ("GIF", FRAMES, (32, 32))
        assert not [p for p in fs.find("/kinds-out") if "upres-tmp" in p]
    finally:
        fs.rm("/kinds-in", recursive=True)
        fs.rm("/kinds-out", recursive=True)


def test_frame_count_reads_stills_from_their_first_bytes(photo: np.ndarray, tmp_path: Path) -> None:
    still, *rest = frames(photo, FRAMES)
    for suffix in ("png", "webp", "gif"):
        still.save(tmp_path / f"one.{suffix}")
        still.save(tmp_path / f"many.{suffix}", save_all=True, append_images=rest)
        assert frame_count((tmp_path / f"one.{suffix}").read_bytes()) == 1
        assert frame_count((tmp_path / f"many.{suffix}").read_bytes()) == FRAMES
    assert frame_count(b"not an image") == 1
