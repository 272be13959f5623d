"""Videos: real clips made here with PyAV from a photo crop, upscaled by a tiny model."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

import upres
from upres.cli.main import app
from upres.errors import BadInputError
from upres.io.video import VideoOptions

FRAMES = 16
RATE = 12
WIDTH, HEIGHT = 48, 32
SAMPLE_RATE = 48000


def make_clip(path: Path, photo: np.ndarray, audio_codec: str | None = "aac") -> Path:
    """16 frames of a photo crop panning right, 12 fps, with a 440 Hz tone."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if audio_codec is not None:  # every stream exists before the first mux
            audio = container.add_stream(audio_codec, rate=SAMPLE_RATE)
            audio.layout = "mono"
        for index in range(FRAMES):
            crop = np.ascontiguousarray(photo[200 : 200 + HEIGHT, 200 + 2 * index :][:, :WIDTH])
            container.mux(video.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        container.mux(video.encode(None))
        if audio_codec is None:
            return path
        samples = round(SAMPLE_RATE * FRAMES / RATE)
        tone = np.sin(2 * np.pi * 440 * np.arange(samples) / SAMPLE_RATE).astype(np.float32)
        chunk = 960
        for start in range(0, samples, chunk):
            piece = tone[None, start : start + chunk]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), "flt", "mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            frame.time_base = Fraction(1, SAMPLE_RATE)
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video))
        facts = {
            "rate": video.average_rate,
            "frames": len(frames),
            "size": (frames[0].width, frames[0].height),
            "video_seconds": float((frames[-1].pts - frames[0].pts) * video.time_base)
            + 1 / float(video.average_rate),
        }
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            samples = sum(f.samples for f in container.decode(audio))
            facts["sample_rate"] = audio.codec_context.sample_rate
            facts["audio_seconds"] = samples / audio.codec_context.sample_rate
            facts["audio_codec"] = audio.codec_context.name
    return facts


@pytest.fixture(scope="module")
def runner(compact_checkpoint: Path) -> upres.ImageRunner:
    return upres.load(compact_checkpoint, device="cpu")


@pytest.mark.parametrize(
    ("suffix", "audio_codec", "options"),
    [
        (".mp4", "aac", VideoOptions(crf=20, preset="veryfast")),  # AAC copied
        (".mkv", "libopus", VideoOptions(codec="libx265", crf=28, preset="ultrafast")),
        (".webm", "aac", VideoOptions(crf=40)),  # AAC cannot go in WebM: re-encoded to Opus
    ],
)
def test_video_keeps_timing_and_audio(
    tmp_path: Path,
    photo: np.ndarray,
    runner: upres.ImageRunner,
    suffix: str,
    audio_codec: str,
    options: VideoOptions,
) -> None:
    source = make_clip(tmp_path / "clip.mkv", photo, audio_codec)
    destination = tmp_path / f"out{suffix}"
    seen: list[tuple[int, int]] = []
    result = runner.upscale_file(
        source, destination, video=options, progress=lambda d, t: seen.append((d, t))
    )
    before, after = probe(source), probe(destination)
    assert after["size"] == (2 * WIDTH, 2 * HEIGHT)
    assert after["frames"] == before["frames"] == FRAMES
    assert after["rate"] == RATE
    assert before["rate"] == pytest.approx(RATE, rel=1e-3)  # MKV's millisecond clock
    assert after["video_seconds"] == pytest.approx(before["video_seconds"], abs=1 / RATE)
    assert after["sample_rate"] == before["sample_rate"] == SAMPLE_RATE
    # Copied where the container takes the codec (MP4: AAC, MKV: Opus), else Opus for WebM.
    assert after["audio_codec"] == ("aac" if suffix == ".mp4" else "opus")
    assert after["audio_seconds"] == pytest.approx(before["audio_seconds"], abs=0.05)
    assert seen[-1][0] == FRAMES
    assert result.report is not None and result.report.output_size == (2 * WIDTH, 2 * HEIGHT)
    assert [p.name for p in tmp_path.iterdir() if "upres-tmp" in p.name] == []


def test_odd_output_is_padded_to_even_and_said(
    tmp_path: Path, photo: np.ndarray, runner: upres.ImageRunner
) -> None:
    source = make_clip(tmp_path / "clip.mp4", photo)
    result = runner.upscale_file(source, tmp_path / "out.mp4", scale=1.5)
    assert probe(tmp_path / "out.mp4")["size"] == (72, 48)  # 48x32 x1.5: already even
    result = runner.upscale_file(source, tmp_path / "odd.mp4", scale=1.03)  # 49x33
    assert probe(tmp_path / "odd.mp4")["size"] == (50, 34)
    assert result.report is not None
    assert any("padded to 50x34" in note for note in result.report.notes)


def test_silent_clip_and_frame_size_limit(
    tmp_path: Path, photo: np.ndarray, runner: upres.ImageRunner
) -> None:
    source = make_clip(tmp_path / "silent.mov", photo, audio_codec=None)
    runner.upscale_file(source, tmp_path / "out.mov")
    facts = probe(tmp_path / "out.mov")
    assert (facts["frames"], facts["size"], "sample_rate" in facts) == (FRAMES, (96, 64), False)
    with pytest.raises(BadInputError, match="more than the limit"):
        runner.upscale_file(source, tmp_path / "limited.mov", max_input_pixels=1000)
    assert not (tmp_path / "limited.mov").exists()


def test_cli_upscales_a_clip(tmp_path: Path, photo: np.ndarray, compact_checkpoint: Path) -> None:
    source = make_clip(tmp_path / "clip.mp4", photo)
    destination = tmp_path / "out.mp4"
    outcome = CliRunner().invoke(
        app,
        [
            *["upscale", str(source), "-o", str(destination), "-m", str(compact_checkpoint)],
            *["--device", "cpu", "--video-codec", "libx264", "--crf", "23", "--preset", "fast"],
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    assert probe(destination)["frames"] == FRAMES


def test_cli_corrupt_video_is_one_line_error(tmp_path: Path, compact_checkpoint: Path) -> None:
    source = tmp_path / "broken.mp4"
    source.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    outcome = CliRunner().invoke(
        app, ["upscale", str(source), "-o", str(tmp_path / "out"), "-m", str(compact_checkpoint)]
    )
    assert outcome.exit_code == 1
    errors = [line for line in outcome.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "broken.mp4" in errors[0]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["broken.mp4"]
