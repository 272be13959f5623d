"""Animated GIF, WebP and APNG: frames, timing, loop count and transparency survive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageSequence
from typer.testing import CliRunner

import upres
from upres.cli.main import app

SIZE = 24
DURATIONS = [100, 200, 50, 300]


def make_animation(path: Path, photo: np.ndarray, loop: int = 3) -> Path:
    """Four frames of a panning photo crop, each with a transparent top-left square."""
    frames = []
    for index in range(len(DURATIONS)):
        crop = photo[100 : 100 + SIZE, 100 + 6 * index :][:, :SIZE]
        alpha = np.full((SIZE, SIZE), 255, np.uint8)
        alpha[:8, :8] = 0
        frames.append(PILImage.fromarray(np.dstack([crop, alpha]), "RGBA"))
    options: dict = {"save_all": True, "append_images": frames[1:], "duration": DURATIONS}
    options["loop"] = loop
    if path.suffix == ".webp":
        options["lossless"] = True
    frames[0].save(path, disposal=2, **options) if path.suffix == ".gif" else frames[0].save(
        path, **options
    )
    return path


def frames_of(path: Path) -> tuple[list[np.ndarray], list[int], int | None]:
    with PILImage.open(path) as pil:
        loop = pil.info.get("loop")
        frames, durations = [], []
        for frame in ImageSequence.Iterator(pil):
            frames.append(np.asarray(frame.convert("RGBA")))
            durations.append(frame.info["duration"])
    return frames, durations, loop


@pytest.fixture(scope="module")
def runner(compact_checkpoint: Path) -> upres.ImageRunner:
    return upres.load(compact_checkpoint, device="cpu")


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_animation_round_trip(
    tmp_path: Path, photo: np.ndarray, runner: upres.ImageRunner, suffix: str
) -> None:
    source = make_animation(tmp_path / f"anim{suffix}", photo)
    destination = tmp_path / f"big{suffix}"
    seen: list[tuple[int, int]] = []
    result = runner.upscale_file(source, destination, progress=lambda d, t: seen.append((d, t)))
    frames, durations, loop = frames_of(destination)
    assert len(frames) == len(DURATIONS)
    assert durations == DURATIONS
    assert loop == 3
    for frame in frames:
        assert frame.shape == (2 * SIZE, 2 * SIZE, 4)
        # The transparent square stays transparent (the tiny model is random, so alpha is
        # near 0 and 255 rather than exact; GIF's 1-bit alpha makes it exact there).
        assert (frame[:14, :14, 3] < 64).all()
        assert (frame[20:, 20:, 3] > 192).all()
    # Frames differ (the crop pans): nothing was merged or repeated.
    assert not np.array_equal(frames[0][:, :, :3], frames[1][:, :, :3])
    assert seen[-1] == (4, 4)
    assert result.report is not None and result.report.output_size == (2 * SIZE, 2 * SIZE)


def test_cli_keeps_the_gif_format(
    tmp_path: Path, photo: np.ndarray, compact_checkpoint: Path
) -> None:
    source = make_animation(tmp_path / "anim.gif", photo, loop=0)
    outcome = CliRunner().invoke(
        app, ["upscale", str(source), "-m", str(compact_checkpoint), "--device", "cpu"]
    )
    assert outcome.exit_code == 0, outcome.output
    frames, durations, loop = frames_of(tmp_path / "anim_x2.gif")
    assert (len(frames), durations, loop) == (4, DURATIONS, 0)


def test_a_single_frame_gif_is_still_an_image(
    tmp_path: Path, photo: np.ndarray, runner: upres.ImageRunner
) -> None:
    source = tmp_path / "still.gif"
    PILImage.fromarray(photo[:SIZE, :SIZE]).save(source)
    runner.upscale_file(source, tmp_path / "still.png")
    with PILImage.open(tmp_path / "still.png") as pil:
        assert pil.size == (2 * SIZE, 2 * SIZE) and getattr(pil, "n_frames", 1) == 1
