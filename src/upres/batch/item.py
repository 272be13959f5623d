"""The one per-item function both runners call: read -> decode -> upscale -> encode ->
atomic write -> manifest row. It never raises for a bad input; the row says what failed.

Stills go through the three stages below. Animations and videos take `upscale_file`'s
own path (every frame, timing and audio kept) inside the infer stage; on a remote
filesystem through a local temporary copy.
"""

from __future__ import annotations

import io
import os
import posixpath
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from PIL import Image as PILImage

from upres.errors import UpresError
from upres.io.image import Image, decode_bytes, encode_bytes
from upres.io.paths import FORMAT_SUFFIX, MEDIA_SUFFIXES, VIDEO_SUFFIXES, output_suffix
from upres.preflight import ANIMATION, STILL, VIDEO
from upres.request import UpscaleRequest

if TYPE_CHECKING:  # torch: not needed to list, plan or drive a batch
    from upres.api import ImageRunner

# Suffixes whose files may hold several frames; only these are ever probed for a count.
MAYBE_ANIMATED_SUFFIXES = (".gif", ".apng", ".png", ".webp")


@dataclass(frozen=True, slots=True)  # slots: a 100k-item plan stays small
class WorkItem:
    """One input and where its result goes; plain strings so it travels to any worker."""

    key: str  # the input's path relative to SRC: the manifest key
    source: str  # full URL
    destination: str  # full URL
    fingerprint: str  # "size:mtime"; a changed input is redone


@dataclass(frozen=True)
class ItemOptions:
    """How to upscale and encode, the same for every item of a batch."""

    scale: float | None = None
    sharpen: float = 0.0
    format: str | None = None
    quality: int | None = None
    max_input_size: int | None = None
    max_input_pixels: int | None = None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def in_memory(item: WorkItem) -> bool:
    """memory:// lives in one process: no worker process or Ray actor can see it."""
    return any(url.startswith("memory://") for url in (item.source, item.destination))


def base_row(item: WorkItem) -> dict[str, Any]:
    """An item's manifest row before it runs (compact at 100k: SRC + input says the source)."""
    return {
        "input": item.key,
        "output": item.destination,
        "fingerprint": item.fingerprint,
        "worker": worker_name(),
    }


@dataclass
class InFlight:
    """One item between stages: its manifest row so far, and its images once made."""

    item: WorkItem
    options: ItemOptions
    row: dict[str, Any]
    started: float
    kind: str = STILL
    data: bytes | None = None  # an animation's bytes, kept for the remote path
    image: Image | None = None
    result: Image | None = None

    @property
    def failed(self) -> bool:
        return self.row.get("status") == "failed"


def process_item(runner: ImageRunner, item: WorkItem, options: ItemOptions) -> dict[str, Any]:
    """Upscale one item; return its manifest row (status done or failed, never an exception)."""
    return write_stage(infer_stage(runner, read_stage(item, options)))


def read_stage(item: WorkItem, options: ItemOptions) -> InFlight:
    """Read and decode (the disk and the decoder; safe in a helper thread)."""
    flight = InFlight(item, options, base_row(item), time.perf_counter())
    suffix = posixpath.splitext(item.key)[1].lower()

    def read() -> None:
        if suffix in VIDEO_SUFFIXES:  # by name alone: a video is never read whole here
            flight.kind = VIDEO
        else:
            fs, source = fsspec.core.url_to_fs(item.source)
            data = fs.cat_file(source)
            if suffix in MAYBE_ANIMATED_SUFFIXES and frame_count(data) > 1:
                flight.kind, flight.data = ANIMATION, data
            else:
                flight.image = decode_bytes(data, item.key, max_pixels=options.max_input_pixels)
        if flight.kind != STILL or suffix in _KEPT_BY_NAME:  # else the planned name stands
            # The kind is known now: a one-frame GIF becomes a PNG, an animation or a video
            # keeps a format that holds all of it (the same rule as `upres upscale`).
            kept = output_suffix(PurePosixPath(item.key), options.format, flight.kind == ANIMATION)
            flight.row["output"] = posixpath.splitext(item.destination)[0] + kept

    flight.row["kind"] = STILL  # until read says otherwise
    guarded(flight, read)
    flight.row["kind"] = flight.kind
    return flight


def frame_count(data: bytes) -> int:
    """Frames in a GIF, PNG or WebP. A still PNG or WebP is told from its first bytes
    (no acTL chunk before the pixels; no animation flag), so stills pay microseconds."""
    if data.startswith(b"\x89PNG"):
        pixels_at = data.find(b"IDAT")
        if data.find(b"acTL", 0, pixels_at if pixels_at > 0 else len(data)) < 0:
            return 1
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        animated_flag = data[12:16] == b"VP8X" and len(data) > 20 and data[20] & 0x02
        if not animated_flag:
            return 1
    try:
        with PILImage.open(io.BytesIO(data)) as pil:
            return int(getattr(pil, "n_frames", 1))
    except Exception:  # not an image: the still's decoder says what is wrong with it
        return 1


def infer_stage(runner: ImageRunner, flight: InFlight) -> InFlight:
    """Upscale (the model; the caller's thread)."""

    def infer() -> None:
        started = time.perf_counter()
        if flight.kind != STILL:
            upscale_media(runner, flight)
            flight.row["model_s"] = round(time.perf_counter() - started, 5)
            return
        assert flight.image is not None
        flight.result, _ = runner.upscale_image(
            flight.image,
            scale=flight.options.scale,
            sharpen=flight.options.sharpen,
            max_input_size=flight.options.max_input_size,
        )
        # The model's share of the item's time: the rest is the framework's.
        flight.row["model_s"] = round(time.perf_counter() - started, 5)

    return flight if flight.failed else guarded(flight, infer)


def media_request(options: ItemOptions) -> UpscaleRequest:
    """The batch's options for `upscale_file`; the destination's suffix sets the format,
    and an output left by an earlier run is replaced (the manifest decides what to skip)."""
    return UpscaleRequest(
        scale=options.scale,
        sharpen=options.sharpen,
        quality=options.quality,
        max_input_size=options.max_input_size,
        max_input_pixels=options.max_input_pixels,
        overwrite=True,
    )


def upscale_media(runner: ImageRunner, flight: InFlight) -> None:
    """An animation or a video, whole, through `upscale_file` (which writes atomically).

    A remote input is copied to a temporary folder, run there, and the result uploaded
    under a temporary name and renamed, like a still's.
    """
    src_fs, source = fsspec.core.url_to_fs(flight.item.source)
    dst_fs, destination = fsspec.core.url_to_fs(flight.row["output"])
    request = media_request(flight.options)
    if isinstance(src_fs, LocalFileSystem) and isinstance(dst_fs, LocalFileSystem):
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        result = runner.upscale_file(source, destination, request=request)
    else:
        with tempfile.TemporaryDirectory(prefix="upres-batch-") as folder:
            local_in = os.path.join(folder, "in" + posixpath.splitext(source)[1])
            local_out = os.path.join(folder, "out" + posixpath.splitext(destination)[1])
            if flight.data is not None:  # an animation already read: no second download
                with open(local_in, "wb") as handle:
                    handle.write(flight.data)
            else:
                src_fs.get_file(source, local_in)
            flight.data = None
            result = runner.upscale_file(local_in, local_out, request=request)
            atomic_upload(dst_fs, local_out, destination)
    flight.data = None
    report = result.report
    flight.row |= {"status": "done", "error": None}
    if report is not None:
        flight.row["input_size"] = list(report.input_size)
        flight.row["output_size"] = list(report.output_size)


def write_stage(flight: InFlight) -> dict[str, Any]:
    """Encode and write atomically (the encoder and the disk; safe in a helper thread)."""

    def write() -> None:
        assert flight.image is not None and flight.result is not None
        options, destination = flight.options, flight.row["output"]
        fmt = options.format or PurePosixPath(destination).suffix.lstrip(".")
        atomic_write(destination, encode_bytes(flight.result, fmt, options.quality))
        flight.row |= {"status": "done", "error": None}
        flight.row["input_size"] = [flight.image.width, flight.image.height]
        flight.row["output_size"] = [flight.result.width, flight.result.height]

    if not flight.failed and flight.kind == STILL:  # animations and videos are written
        guarded(flight, write)
    flight.image = flight.result = None  # the row outlives the pixels
    flight.row["seconds"] = round(time.perf_counter() - flight.started, 4)
    flight.row["finished_at"] = time.time()
    return flight.row


def guarded(flight: InFlight, stage: Callable[[], None]) -> InFlight:
    """Run a stage; whatever an input provokes becomes its failed row, not the batch's end."""
    try:
        stage()
    except (UpresError, ValueError, OSError) as error:
        flight.row |= {"status": "failed", "error": str(error)}
    except Exception as error:
        flight.row |= {
            "status": "failed",
            "error": f"{flight.item.key}: {type(error).__name__}: {error}",
        }
    return flight


def atomic_write(url: str, data: bytes) -> None:
    """Write beside the target under a hidden temporary name, then rename over it, so a
    crash never leaves half an image and a retried item just replaces its own output.

    The temporary name is fixed per output (no random part): an item cut short by a killed
    driver or a lost node is redone on the next run, and that rewrite takes over its
    leftover temporary file, so a finished batch has none. One item has one writer at a time.
    """
    fs, path = fsspec.core.url_to_fs(url)
    write_then_rename(fs, path, lambda tmp: fs.pipe_file(tmp, data))


def atomic_upload(fs: fsspec.AbstractFileSystem, local: str, path: str) -> None:
    """Upload a finished local file under a hidden temporary name, then rename it."""
    write_then_rename(fs, path, lambda tmp: fs.put_file(local, tmp))


def write_then_rename(
    fs: fsspec.AbstractFileSystem, path: str, write: Callable[[str], None]
) -> None:
    """`write` the temporary `.NAME.upres-tmp` beside `path`, then rename it over `path`;
    on any failure the temporary file is removed."""
    parent = fs._parent(path)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{PurePosixPath(path).name}.upres-tmp"
    try:
        write(tmp)
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise


def plan_items(src: str, dst: str, format: str | None = None) -> Iterator[WorkItem]:
    """Every still, animation and video under SRC (recursively, hidden names left out),
    mirrored into DST. A destination is named by suffix alone (no file is opened here);
    the item's read stage renames it once it knows the kind (a one-frame GIF -> PNG).

    Streamed one folder at a time (files in name order, then sub-folders in name order),
    so a 100k-image tree is never held as one listing.
    """
    src_fs, src_root = fsspec.core.url_to_fs(src)
    dst_fs, dst_root = fsspec.core.url_to_fs(dst)
    src_root, dst_root = src_root.rstrip("/") or "/", dst_root.rstrip("/") or "/"
    if src_fs.isfile(src_root):
        raise ValueError(f"{src}: SRC must be a folder (upres upscale takes single files)")
    same_fs = src_fs is dst_fs
    dst_url = dst_fs.unstrip_protocol(dst_root).rstrip("/")
    new_suffix = FORMAT_SUFFIX[format.lower()] if format else None
    for folder, subfolders, files in _listing(src_fs, src_root):
        # _listing descends into this very list: prune hidden folders and DST, fix the order.
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith(".") and not _inside(_join(folder, name), dst_root, same_fs)
        )
        if _inside(folder, dst_root, same_fs):  # DST is SRC, or holds it
            continue
        # Plain string work per file, paths and URLs made once per folder: at 100k files
        # pathlib and fsspec's per-path parsing cost more than listing the disk.
        prefix = posixpath.relpath(folder, src_root).removeprefix(".").lstrip("/")
        prefix = f"{prefix}/" if prefix else ""
        folder_url = src_fs.unstrip_protocol(folder).rstrip("/")
        for name in sorted(files):
            stem, suffix = posixpath.splitext(name)
            suffix = suffix.lower()
            if name.startswith(".") or suffix not in MEDIA_SUFFIXES:
                continue  # hidden names cover the manifest and our temporary files
            if suffix in VIDEO_SUFFIXES or suffix in _KEPT_BY_NAME:
                kept = suffix  # a video, or a GIF/APNG taken as animated until read
            else:
                kept = new_suffix or suffix
            yield WorkItem(
                key=prefix + name,
                source=f"{folder_url}/{name}",
                destination=f"{dst_url}/{prefix}{stem}{kept}",
                fingerprint=files[name],
            )


_KEPT_BY_NAME = (".gif", ".apng")


def _listing(
    fs: fsspec.AbstractFileSystem, folder: str
) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """Top-down, one folder at a time: (folder, its sub-folder names, {file name: fingerprint}).

    The caller may prune the sub-folder list in place. Local folders are read with
    os.scandir: fsspec's info() per entry was three quarters of planning 100k files.
    """
    subfolders: list[str] = []
    files: dict[str, str] = {}
    if isinstance(fs, LocalFileSystem):
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir():
                    subfolders.append(entry.name)
                elif entry.is_file():
                    stat = entry.stat()
                    files[entry.name] = f"{stat.st_size}:{stat.st_mtime}"  # as fsspec's info
    else:
        for info in fs.ls(folder, detail=True):
            path = info["name"].rstrip("/")
            if path == folder.rstrip("/"):
                continue
            name = path.rsplit("/", 1)[-1]
            if info["type"] == "directory":
                subfolders.append(name)
            else:
                files[name] = _fingerprint(info)
    yield folder, subfolders, files
    for name in subfolders:
        yield from _listing(fs, _join(folder, name))


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def _inside(path: str, folder: str, same_fs: bool) -> bool:
    """Results written into a DST inside SRC must not become inputs of the next run."""
    return same_fs and (path + "/").startswith(folder.rstrip("/") + "/")


def _fingerprint(info: dict[str, Any]) -> str:
    modified = info.get("mtime") or info.get("created") or info.get("LastModified") or ""
    if hasattr(modified, "timestamp"):
        modified = modified.timestamp()
    return f"{info.get('size')}:{modified}"


@dataclass(frozen=True)
class RunnerSpec:
    """How to load the model: small and picklable, so each Ray actor loads its own copy."""

    models: tuple[str, ...] | None = None  # None: the default model; several: a chain
    device: str = "auto"
    precision: str = "auto"
    tile: str | int | None = None
    tile_overlap: int = 32
    denoise_strength: float | None = None
    fast: bool = True
    compile: bool = False
    threads: int | None = None  # torch CPU threads, set where the model loads (each Ray actor)
    workers: int = 1  # processes sharing this machine's cores (Ray actors)

    def __call__(self) -> ImageRunner:
        from upres.api import load
        from upres.engine.cores import configure

        # An explicit count, else the cores free now split between the workers of this batch.
        configure(self.threads, workers=self.workers)
        return load(
            list(self.models) if self.models else None,
            device=self.device,
            precision=self.precision,
            tile=self.tile,
            tile_overlap=self.tile_overlap,
            denoise_strength=self.denoise_strength,
            fast=self.fast,
            compile=self.compile,
        )
