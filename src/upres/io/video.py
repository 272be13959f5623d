"""Video files: decode with PyAV, upscale frame by frame through the engine, encode.

Frame timing is kept by placing every output frame at its input frame's time on a clock
of one tick per frame at FFmpeg's base rate (so frame rate, frame count and duration
survive, exactly, even from a millisecond-clock MKV). The audio stream is copied packet
for packet when the output container can hold its codec, and re-encoded (AAC, or Opus for
WebM) otherwise. Frames stream through a window of a few (`IN_FLIGHT`): the model works
on one while this thread decodes and encodes, and memory stays bounded on any length.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from upres.errors import BadInputError
from upres.io.frames import FrameProgress, FrameUpscaler, MediaReport
from upres.io.image import Image, unit_float
from upres.io.paths import VIDEO_SUFFIXES

# Audio codecs each container takes as they are; anything else is re-encoded.
_COPYABLE_AUDIO = {
    ".mp4": {"aac", "mp3", "opus", "alac", "ac3", "eac3", "flac"},
    ".mov": {"aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s24le"},
    ".webm": {"opus", "vorbis"},
    ".avi": {"mp3", "ac3", "pcm_s16le", "aac"},
}
_DEFAULT_CODEC = {".webm": "libvpx-vp9"}
_ENCODED_AUDIO = {".webm": "libopus"}
# Decoded frames waiting for the model beyond the one it is working on.
IN_FLIGHT = 2


@dataclass(frozen=True)
class VideoOptions:
    """How to encode the upscaled video; codec None picks one that suits the container."""

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str = "yuv420p"


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def upscale_video(
    upscale_frame: FrameUpscaler,
    source: Path,
    destination: Path,
    *,
    options: VideoOptions | None = None,
    progress: FrameProgress | None = None,
    max_pixels: int | None = None,
) -> MediaReport:
    """Upscale every frame of `source` into `destination` (written to a temp name, renamed)."""
    options = options or VideoOptions()
    if destination.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(
            f"{destination}: a video needs a video file name ({', '.join(VIDEO_SUFFIXES)})"
        )
    report = MediaReport()
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(
        f".{destination.stem}.upres-tmp-{secrets.token_hex(4)}{destination.suffix}"
    )
    try:
        with _open_input(source, max_pixels) as reader:
            _transcode(reader, tmp, upscale_frame, report, options, progress)
        os.replace(tmp, destination)
    except av.FFmpegError as error:
        raise BadInputError(source, f"cannot decode or encode video ({error})") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return report


@contextlib.contextmanager
def _open_input(source: Path, max_pixels: int | None) -> Iterator[av.container.InputContainer]:
    if not source.exists():
        raise BadInputError(source, "file not found")
    try:
        container = av.open(str(source), "r")
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise BadInputError(source, f"not a readable video ({error})") from None
    try:
        if not container.streams.video:
            raise BadInputError(source, "has no video stream")
        context = container.streams.video[0].codec_context
        if max_pixels is not None and context.width * context.height > max_pixels:
            raise BadInputError(
                source,
                f"frames are {context.width}x{context.height}, more than the limit of"
                f" {max_pixels:,} pixels",
            )
        yield container
    finally:
        container.close()


def _transcode(
    reader: av.container.InputContainer,
    tmp: Path,
    upscale_frame: FrameUpscaler,
    report: MediaReport,
    options: VideoOptions,
    progress: FrameProgress | None,
) -> None:
    in_video = reader.streams.video[0]
    in_audio = reader.streams.audio[0] if reader.streams.audio else None
    total = _frame_estimate(in_video)
    streams = [in_video] + ([in_audio] if in_audio is not None else [])

    def upscale(frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        return np.ascontiguousarray(upscale_frame(Image(pixels=unit_float(rgb))).pixels)

    with av.open(str(tmp), "w") as writer, ThreadPoolExecutor(max_workers=1) as model:
        out = _Output(writer, in_video, in_audio, options, report)
        # The model works on one frame while this thread decodes and encodes the others;
        # at most IN_FLIGHT frames wait, so memory stays bounded on any clip length.
        pending: deque[tuple[av.VideoFrame, Future[np.ndarray]]] = deque()
        for packet in reader.demux(*streams):
            if packet.stream is in_audio:
                out.audio(packet)
                continue
            for frame in packet.decode():
                pending.append((frame, model.submit(upscale, frame)))
                while len(pending) > IN_FLIGHT:
                    out.video(*_ready(pending.popleft()))
                    _tell(progress, out.frames, total)
        while pending:
            out.video(*_ready(pending.popleft()))
            _tell(progress, out.frames, total)
        if out.frames == 0:
            raise BadInputError(reader.name, "video has no decodable frames")
        out.flush()
    report.frames = out.frames
    report.notes.append(f"{out.frames} frames")


def _ready(item: tuple[av.VideoFrame, Future[np.ndarray]]) -> tuple[av.VideoFrame, np.ndarray]:
    return item[0], item[1].result()


def _tell(progress: FrameProgress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, max(total, done))


class _Output:
    """The output container: the video stream is made at the first upscaled frame (its
    size is known only then), and the header is written at the first mux, once every
    stream exists, so audio that arrives earlier waits."""

    def __init__(
        self,
        writer: av.container.OutputContainer,
        in_video: av.video.stream.VideoStream,
        in_audio: av.audio.stream.AudioStream | None,
        options: VideoOptions,
        report: MediaReport,
    ) -> None:
        self.writer = writer
        self.in_video = in_video
        self.options = options
        self.report = report
        self.suffix = Path(writer.name).suffix.lower()
        self.out_audio, self.copy_audio = _add_audio(writer, in_audio, self.suffix)
        self.out_video: av.video.stream.VideoStream | None = None
        self.early_audio: list[av.Packet] = []
        self.clock = _Clock(_frame_rate(in_video))
        self.frames = 0

    def audio(self, packet: av.Packet) -> None:
        if self.out_video is None:
            self.early_audio.append(packet)
        else:
            _audio_packet(self.writer, packet, self.out_audio, self.copy_audio)

    def video(self, source: av.VideoFrame, pixels: np.ndarray) -> None:
        first = self.out_video is None
        pixels = _even(pixels, self.options.pix_fmt, self.report if first else None)
        if self.out_video is None:
            self.out_video = _add_video(
                self.writer, self.in_video, pixels, self.options, self.suffix
            )
            self.report.input_size = (source.width, source.height)
            self.report.output_size = (pixels.shape[1], pixels.shape[0])
            for packet in self.early_audio:
                _audio_packet(self.writer, packet, self.out_audio, self.copy_audio)
            self.early_audio.clear()
        _encode_frame(self.writer, self.out_video, self.clock.tick(source, self.frames), pixels)
        self.frames += 1

    def flush(self) -> None:
        if self.out_video is not None:
            self.writer.mux(self.out_video.encode(None))
        if self.out_audio is not None and not self.copy_audio:
            self.writer.mux(self.out_audio.encode(None))


def _frame_estimate(stream: av.video.stream.VideoStream) -> int:
    """For the progress bar: the header's count, else duration x rate (MKV/WebM lack one)."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        return max(1, round(float(stream.duration * stream.time_base * rate)))
    return 0


def _even(pixels: np.ndarray, pix_fmt: str, report: MediaReport | None) -> np.ndarray:
    """Subsampled chroma (yuv420p) needs even sides: repeat the last row/column once."""
    components = av.VideoFormat(pix_fmt, 2, 2).components
    need_w = any(c.width < 2 for c in components)
    need_h = any(c.height < 2 for c in components)
    height, width = pixels.shape[:2]
    pad_h = height % 2 if need_h else 0
    pad_w = width % 2 if need_w else 0
    if not pad_h and not pad_w:
        return pixels
    if report is not None:
        report.notes.append(
            f"{width}x{height} padded to {width + pad_w}x{height + pad_h}"
            f" ({pix_fmt} needs even sides)"
        )
    return np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _add_video(
    writer: av.container.OutputContainer,
    in_video: av.video.stream.VideoStream,
    pixels: np.ndarray,
    options: VideoOptions,
    suffix: str,
) -> av.video.stream.VideoStream:
    codec = options.codec or _DEFAULT_CODEC.get(suffix, "libx264")
    rate = _frame_rate(in_video)
    codec_options = {}
    if options.crf is not None:
        codec_options["crf"] = str(options.crf)
        if codec == "libvpx-vp9":
            codec_options["b"] = "0"  # constant quality: VP9 reads crf only with no bitrate
    if options.preset is not None:
        codec_options["preset"] = options.preset
    try:
        stream = writer.add_stream(codec, rate=rate, options=codec_options)
    except (av.FFmpegError, ValueError) as error:
        raise ValueError(f"cannot use video codec {codec!r} ({error})") from None
    stream.width, stream.height = pixels.shape[1], pixels.shape[0]
    stream.pix_fmt = options.pix_fmt
    # One tick per frame at the base rate: exact, where a millisecond clock (MKV, WebM)
    # would store 1/12 s as 83 or 84 ms and the frame rate would drift off 12.
    stream.codec_context.time_base = 1 / rate
    stream.time_base = 1 / rate
    return stream


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    """FFmpeg's base rate (the lowest that represents every timestamp), else the average."""
    return Fraction(stream.guessed_rate or stream.average_rate or 25)


class _Clock:
    """Maps input timestamps onto the output's one-tick-per-frame clock, strictly rising."""

    def __init__(self, rate: Fraction) -> None:
        self.rate = rate
        self.start: Fraction | None = None
        self.last = -1

    def tick(self, frame: av.VideoFrame, index: int) -> int:
        if frame.pts is None or frame.time_base is None:
            wanted = index
        else:
            seconds = Fraction(frame.pts) * frame.time_base
            self.start = seconds if self.start is None else self.start
            wanted = round((seconds - self.start) * self.rate)
        self.last = max(wanted, self.last + 1)
        return self.last


def _encode_frame(
    writer: av.container.OutputContainer,
    stream: av.video.stream.VideoStream,
    pts: int,
    pixels: np.ndarray,
) -> None:
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format=stream.pix_fmt)
    frame.pts = pts
    frame.time_base = stream.codec_context.time_base
    writer.mux(stream.encode(frame))


def _add_audio(
    writer: av.container.OutputContainer, in_audio: av.audio.stream.AudioStream | None, suffix: str
) -> tuple[av.audio.stream.AudioStream | None, bool]:
    """The output's audio stream and whether its packets are copied (True) or re-encoded."""
    if in_audio is None:
        return None, False
    allowed = _COPYABLE_AUDIO.get(suffix)
    if allowed is None or in_audio.codec_context.name in allowed:  # None: MKV takes anything
        return writer.add_stream_from_template(in_audio), True
    codec = _ENCODED_AUDIO.get(suffix, "aac")
    rate = in_audio.codec_context.sample_rate
    if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
        rate = 48000
    stream = writer.add_stream(codec, rate=rate)
    stream.layout = in_audio.codec_context.layout
    return stream, False


def _audio_packet(
    writer: av.container.OutputContainer,
    packet: av.Packet,
    out_audio: av.audio.stream.AudioStream | None,
    copy: bool,
) -> None:
    if out_audio is None or packet.dts is None:  # the demuxer's empty flush packet
        return
    if copy:
        packet.stream = out_audio
        writer.mux(packet)
        return
    for frame in packet.decode():
        frame.pts = None  # let the encoder number samples itself from zero
        writer.mux(out_audio.encode(frame))
