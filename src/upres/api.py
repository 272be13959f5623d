"""The public Python API: `Upscaler` turns images of any kind into bigger ones.

Every surface (CLI, service, batch) calls `Upscaler.upscale_image` or `upscale_file`;
none of them re-implements tiling, precision choice or file writing.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import PIL.Image
import torch

from upres.engine.cores import ThreadChoice, configure
from upres.engine.cores import current_choice as current_thread_choice
from upres.engine.cores import recheck as recheck_threads
from upres.engine.fast import FastModule, accelerate
from upres.engine.forecast import (
    ImagePlan,
    MemoryForecast,
    PassShape,
    device_allocated_bytes,
    device_peak_bytes,
    forecast_image,
    process_peak_bytes,
    resident_bytes,
    tile_count,
)
from upres.engine.plan import (
    DEFAULT_OVERLAP,
    PRECISION_NAMES,
    Plan,
    make_plan,
    precision_reason,
    resolve_device,
)
from upres.engine.run import ProgressCallback, TileRunner
from upres.engine.sharpen import sharpen as sharpen_pixels
from upres.errors import BadInputError, ModelNotFoundError, OutputError, RequestError
from upres.io.animation import upscale_animation
from upres.io.frames import FrameUpscaler, MediaReport
from upres.io.image import (
    Image,
    fill_transparent_colour,
    image_from_array,
    image_from_pil,
    image_to_array,
    image_to_pil,
    quantise,
    read_image,
    unit_float,
    write_image,
)
from upres.io.video import VideoOptions, upscale_video
from upres.models.loader import LoadedModel, load_model
from upres.preflight import ANIMATION, VIDEO, check_input
from upres.request import NO_TILING, UpscaleRequest, check_output_size, downsized, parse_tile
from upres.settings import setting

if TYPE_CHECKING:
    from upres.faces.enhance import FaceOptions

MAX_INPUT_ENV = "UPRES_MAX_INPUT_SIZE"


@dataclass
class UpscaleReport:
    """What happened to one image, for summaries and --json."""

    input_size: tuple[int, int] = (0, 0)  # width, height as given
    output_size: tuple[int, int] = (0, 0)
    model_passes: int = 0
    tiles: int = 0
    oom_retries: int = 0
    fp32_fallbacks: int = 0
    notes: list[str] = field(default_factory=list)
    tiling: list[dict[str, Any]] = field(default_factory=list)  # each model pass's Plan.summary()
    plan: ImagePlan | None = None  # the plan and memory forecast made before running
    peak_host_bytes: int | None = None  # measured: the process's peak resident memory
    peak_device_bytes: int | None = None  # measured: torch's peak on an accelerator


@dataclass
class FileResult:
    source: Path
    destination: Path
    status: str  # "done" | "skipped"
    seconds: float = 0.0
    report: UpscaleReport | None = None


def default_max_input_size() -> int | None:
    value = setting(MAX_INPUT_ENV)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{MAX_INPUT_ENV} must be a number of pixels, not {value!r}") from None


class ImageRunner:
    """What every way of running models offers on top of `upscale_image`: any image kind
    in (`__call__`) and files (`upscale_file`). Upscaler and Pipeline both inherit it, so
    the CLI and the API never care which one they hold."""

    name: str
    scale: int
    architecture: str
    device: torch.device
    dtype: torch.dtype
    # Colour order of numpy arrays given to and returned by __call__: "rgb", or "bgr" for
    # OpenCV's (BGR/BGRA; grey arrays have none). PIL images and tensors are always RGB.
    channel_order: str = "rgb"

    def upscale_image(
        self,
        image: Image,
        *,
        scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        long_side: int | None = None,
        sharpen: float = 0.0,
        alpha: str = "model",
        max_input_size: int | None = None,
        max_output_pixels: int | None = None,
        out_dtype: np.dtype | type | None = None,
        progress: ProgressCallback | None = None,
        size: tuple[int, int] | None = None,
    ) -> tuple[Image, UpscaleReport]:
        """Decode is done; plan, infer, assemble here; encoding is the caller's.

        One of scale, width, height, long_side (aspect kept) sets the result's size; `size`
        (width, height) is the exact size a caller has already worked out.
        """
        raise NotImplementedError

    def plan_image(
        self,
        width: int,
        height: int,
        channels: int = 3,
        *,
        alpha: bool = False,
        bit_depth: int = 8,
        scale: float | None = None,
        max_input_size: int | None = None,
        sharpen: float = 0.0,
        output_itemsize: int | None = None,
    ) -> ImagePlan:
        """What upscaling an image of this size would do and cost; runs no model."""
        raise NotImplementedError

    def __call__(
        self,
        image: Any,
        *,
        scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        long_side: int | None = None,
        sharpen: float = 0.0,
        alpha: str = "model",
        max_output_pixels: int | None = None,
    ) -> Any:
        """Upscale a PIL image, a numpy array (HW/HWC, uint8/uint16/float) or a torch tensor.

        Returns the same kind: PIL in, PIL out; the array's dtype and layout are kept; a
        tensor (CHW or BCHW, float in [0, 1]) comes back on its device and dtype. One of
        scale, width, height or long_side sets the size (default: the model's scale).
        """
        request = UpscaleRequest(
            scale=scale,
            width=width,
            height=height,
            long_side=long_side,
            sharpen=sharpen,
            alpha=alpha,
            max_output_pixels=max_output_pixels,
        )
        options = image_options(request)
        if isinstance(image, PIL.Image.Image):
            result, _ = self.upscale_image(image_from_pil(image), **options)
            return image_to_pil(result)
        if isinstance(image, np.ndarray):
            bgr = self.channel_order == "bgr"
            decoded, dtype_name = image_from_array(swap_red_blue(image) if bgr else image)
            out_dtype = np.dtype(dtype_name) if dtype_name in ("uint8", "uint16") else np.float32
            bgr = self.channel_order == "bgr"
            decoded, dtype_name = image_from_array(swap_red_blue(image) if bgr else image)
            out_dtype = np.dtype(dtype_name) if dtype_name in ("uint8", "uint16") else np.float32
            result, _ = self.upscale_image(decoded, out_dtype=out_dtype, **options)
            array = image_to_array(result, dtype_name)
            return swap_red_blue(array) if bgr else array
        if isinstance(image, torch.Tensor):
            return self._call_tensor(image, options)
        raise BadInputError(
            None, f"cannot upscale a {type(image).__name__}; give PIL, numpy or torch"
        )

    def _call_tensor(self, tensor: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        batched = tensor.ndim == 4
        if tensor.ndim not in (3, 4):
            raise BadInputError(
                None, f"expected a CHW or BCHW tensor, got shape {tuple(tensor.shape)}"
            )
        items = tensor if batched else tensor[None]
        outputs = []
        for item in items:
            pixels = item.detach().float().cpu().permute(1, 2, 0).numpy()
            decoded, _ = image_from_array(np.ascontiguousarray(pixels))  # range checks
            result, _ = self.upscale_image(decoded, out_dtype=np.float32, **options)
            planes = result.pixels
            if result.alpha is not None:
                planes = np.dstack([planes, result.alpha])
            outputs.append(torch.from_numpy(np.ascontiguousarray(planes)).permute(2, 0, 1))
        stacked = torch.stack(outputs).to(tensor.device, dtype=tensor.dtype)
        return stacked if batched else stacked[0]

    def upscale_file(
        self,
        source: str | Path,
        destination: str | Path,
        *,
        request: UpscaleRequest | None = None,
        progress: ProgressCallback | None = None,
        **options: Any,
    ) -> FileResult:
        """Check, read, upscale and atomically write one file; never touches the input.

        `options` are UpscaleRequest fields (scale, width, height, long_side, sharpen,
        alpha, format, quality, overwrite, skip_existing, max_input_size, max_input_pixels,
        max_output_pixels, video), applied over `request`. Everything that can be checked
        from headers is checked before any pixel is decoded (upres.preflight). Videos and
        animated images take their own path; there `progress` counts frames, not tiles.
        """
        source, destination = Path(source), Path(destination)
        request = (request or UpscaleRequest()).with_options(**options)
        checked = check_input(source, destination, request, self.scale)
        if checked.skip:
            return FileResult(source, destination, "skipped")
        started = time.perf_counter()
        try:
            if checked.info.kind in (VIDEO, ANIMATION):
                report = self._upscale_media(
                    checked.info.kind, source, destination, request, progress
                )
                return FileResult(
                    source, destination, "done", time.perf_counter() - started, report
                )
            image = read_image(source, max_pixels=request.max_input_pixels)
            result, report = self.upscale_image(image, progress=progress, **image_options(request))
            # The result is ours alone: a huge PNG may be written straight from its pixels.
            written = write_image(
                result, destination, format=request.format, quality=request.quality, consume=True
            )
        except OSError as error:  # reading failures are BadInputError already: this is the write
            raise OutputError(destination, f"cannot write ({error.strerror or error})") from None
        return FileResult(source, written, "done", time.perf_counter() - started, report)

    def _upscale_media(
        self,
        kind: str,
        source: Path,
        destination: Path,
        request: UpscaleRequest,
        progress: ProgressCallback | None,
    ) -> UpscaleReport:
        """Animations and videos: io decodes and encodes, every frame comes back here."""
        report = UpscaleReport()
        upscale_frame = self._frame_upscaler(request, report)
        if kind == VIDEO:
            media = upscale_video(
                upscale_frame,
                source,
                destination,
                options=video_options(request.video),
                progress=progress,
                max_pixels=request.max_input_pixels,
            )
        else:
            media = upscale_animation(
                upscale_frame,
                source,
                destination,
                quality=request.quality,
                progress=progress,
                max_pixels=request.max_input_pixels,
            )
        add_media(report, media)
        return report

    def _frame_upscaler(self, request: UpscaleRequest, report: UpscaleReport) -> FrameUpscaler:
        options = image_options(request)

        def upscale_frame(image: Image) -> Image:
            result, frame_report = self.upscale_image(image, out_dtype=np.uint8, **options)
            report.model_passes = frame_report.model_passes
            report.tiles += frame_report.tiles
            report.oom_retries += frame_report.oom_retries
            report.fp32_fallbacks += frame_report.fp32_fallbacks
            for note in frame_report.notes:  # the same note on every frame is said once
                if note not in report.notes:
                    report.notes.append(note)
            return result

        return upscale_frame


def image_options(request: UpscaleRequest) -> dict[str, Any]:
    """The request's fields that `upscale_image` takes."""
    return {
        "scale": request.scale,
        "width": request.width,
        "height": request.height,
        "long_side": request.long_side,
        "sharpen": request.sharpen,
        "alpha": request.alpha,
        "max_input_size": request.max_input_size,
        "max_output_pixels": request.max_output_pixels,
    }


def video_options(video: Any) -> VideoOptions:
    if isinstance(video, VideoOptions):
        return video
    return VideoOptions(video.codec, video.crf, video.preset, video.pix_fmt)


def add_media(report: UpscaleReport, media: MediaReport) -> None:
    report.input_size = media.input_size
    report.output_size = media.output_size
    for note in media.notes:
        if note not in report.notes:
            report.notes.append(note)


class Upscaler(ImageRunner):
    """A loaded model plus how to run it. Safe to share between calls and threads."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        device: str = "auto",
        precision: str = "auto",
        tile: str | int | None = None,
        tile_overlap: int = DEFAULT_OVERLAP,
        fast: bool = True,
        compile: bool = False,
    ) -> None:
        if model.card is not None and model.card.task == "face":
            raise ModelNotFoundError(
                f"{model.name} restores aligned faces, not whole images:"
                f" use it with --face-enhance {model.name} (face_enhance= in the API)"
            )
        self.model = model
        self.device = resolve_device(device)
        self.precision = card_precision(precision, model, self.device)
        if tile is None:
            tile = setting("UPRES_TILE_SIZE")
        self.tile = parse_tile(tile)  # None: planned from memory; 0: the whole image
        self.tile_overlap = tile_overlap
        # fast=False runs the checkpoint's own modules, cast to the planned dtype (the
        # reference path that `upres bench` compares against).
        self.fast = fast
        # An ONNX graph is already one fixed program: nothing for torch.compile to trace.
        self.compile = compile and fast and model.descriptor.architecture.id != "ONNX"
        # One tile per image whenever memory allows, for every model (evaluation sets it);
        # models with global operations get that anyway.
        self.prefer_whole = False
        planned = self._plan(None if self.tile == NO_TILING else self.tile)
        self.dtype = planned.dtype
        self._models: dict[torch.dtype, torch.nn.Module] = {}
        self._models_lock = threading.Lock()
        self._model_for(self.dtype)  # move to the device now, so errors surface at load

    # -- facts ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def scale(self) -> int:
        return self.model.descriptor.scale

    @property
    def architecture(self) -> str:
        return self.model.descriptor.architecture.name

    def __repr__(self) -> str:
        return (
            f"Upscaler({self.name!r}, arch={self.architecture}, scale={self.scale},"
            f" device={self.device}, dtype={str(self.dtype).removeprefix('torch.')})"
        )

    # -- the model on the device ----------------------------------------------------

    def _model_for(self, dtype: torch.dtype) -> torch.nn.Module:
        with self._models_lock:
            if dtype not in self._models:
                self._models[dtype] = (
                    self._fast_model(dtype) if self.fast else self._reference_model(dtype)
                )
            return self._models[dtype]

    def _reference_model(self, dtype: torch.dtype) -> torch.nn.Module:
        network = self.model.descriptor.model
        if self._models:  # keep the first copy; others are converted clones
            network = copy.deepcopy(next(iter(self._models.values())))
        return network.to(self.device, dtype=dtype).eval()

    def _fast_model(self, dtype: torch.dtype) -> torch.nn.Module:
        # Weights stay fp32 and are shared by every precision; autocast picks the dtype.
        network = self.model.descriptor.model
        if not self._models:
            accelerate(network)  # in place: same weights, same function, less waste
            network.to(self.device, dtype=torch.float32).eval()
            if self.device.type == "cpu":
                # Near-zero activations in deep residual nets become denormal floats, which
                # CPUs compute ~10x slower; flushing them changes outputs by < 1e-37.
                torch.set_flush_denormal(True)
        module: torch.nn.Module = FastModule(network, dtype).eval()
        if self.compile:
            module = torch.compile(module, dynamic=False)
        return module

    def _plan(
        self,
        tile: str | int | None,
        image_width: int | None = None,
        image_height: int | None = None,
    ) -> Plan:
        return make_plan(
            self.model.descriptor,
            self.device,
            tile=tile,
            overlap=self.tile_overlap,
            precision=self.precision,
            batch=None if self.fast else 1,
            fixed_shape=self.compile,
            autocast=self.fast,
            image_width=image_width,
            image_height=image_height,
            prefer_whole=self.prefer_whole,
        )

    # -- images ---------------------------------------------------------------------

    def upscale_image(
        self,
        image: Image,
        *,
        scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        long_side: int | None = None,
        sharpen: float = 0.0,
        alpha: str = "model",
        max_input_size: int | None = None,
        max_output_pixels: int | None = None,
        out_dtype: np.dtype | type | None = None,
        progress: ProgressCallback | None = None,
        size: tuple[int, int] | None = None,
    ) -> tuple[Image, UpscaleReport]:
        request = UpscaleRequest(
            scale=scale,
            width=width,
            height=height,
            long_side=long_side,
            sharpen=sharpen,
            alpha=alpha,
            max_input_size=max_input_size,
            max_output_pixels=max_output_pixels,
        )
        if image.height == 0 or image.width == 0:
            raise BadInputError(image.source, "image has a zero side")
        report = UpscaleReport(input_size=(image.width, image.height))
        image = self._limit_input(image, request.max_input_size, report)
        target = size or request.output_size(image.width, image.height, self.scale)
        check_output_size(image.source, (image.width, image.height), target, request.output_limit())
        report.plan = self._plan_for(
            image, target[0] / image.width, None, out_dtype, request.sharpen
        )
        final_dtype = (
            np.dtype(out_dtype)
            if out_dtype is not None
            else (np.dtype(np.uint16) if image.bit_depth == 16 else np.dtype(np.uint8))
        )
        factor = max(target[0] / image.width, target[1] / image.height)
        passes = self._passes_for(factor)

        pixels = image.pixels
        if image.alpha is not None:
            pixels = fill_transparent_colour(pixels, image.alpha)
        pixels = self._run_passes(pixels, passes, final_dtype, report, progress)
        pixels = fit_to(pixels, target)
        new_alpha = None
        if image.alpha is not None and request.alpha == "bicubic":
            new_alpha = resize_alpha(image.alpha, target, final_dtype)
        elif image.alpha is not None:
            planes = self._run_passes(image.alpha[:, :, None], passes, final_dtype, report, None)
            new_alpha = fit_to(planes, target)[:, :, 0]
        if request.sharpen > 0:
            pixels = unsharp_mask(pixels, request.sharpen)
        report.output_size = target
        report.model_passes = passes
        report.peak_host_bytes = process_peak_bytes()
        report.peak_device_bytes = device_peak_bytes(self.device)
        result = dataclasses.replace(image, pixels=pixels, alpha=new_alpha, info=dict(image.info))
        return result, report

    # -- the plan and its memory forecast, without running ---------------------------

    def _plan_for(
        self,
        image: Image,
        scale: float | None,
        max_input_size: int | None,
        out_dtype: np.dtype | type | None,
        sharpen: float,
    ) -> ImagePlan:
        itemsize = np.dtype(out_dtype).itemsize if out_dtype is not None else None
        return self.plan_image(
            image.width,
            image.height,
            image.pixels.shape[2],
            alpha=image.alpha is not None,
            bit_depth=image.bit_depth,
            scale=scale,
            max_input_size=max_input_size,
            sharpen=sharpen,
            output_itemsize=itemsize,
        )

    def plan_image(
        self,
        width: int,
        height: int,
        channels: int = 3,
        *,
        alpha: bool = False,
        bit_depth: int = 8,
        scale: float | None = None,
        max_input_size: int | None = None,
        sharpen: float = 0.0,
        output_itemsize: int | None = None,
    ) -> ImagePlan:
        """What upscaling a width x height image with `channels` colour channels (1 or 3,
        plus `alpha`) would do and cost: the engine's own plan and the memory forecast."""
        factor = float(scale) if scale else float(self.scale)
        limit = max_input_size if max_input_size is not None else default_max_input_size()
        width, height = downsized(width, height, limit)  # as _limit_input will
        target = (round(width * factor), round(height * factor))
        passes = self._passes_for(factor)
        shapes = self._pass_shapes(width, height, channels, passes, alpha=False)
        if alpha:
            shapes += self._pass_shapes(width, height, 1, passes, alpha=True)
        itemsize = output_itemsize or (2 if bit_depth == 16 else 1)
        out_channels = 1 if channels == 1 else 3
        weights_cast = 0
        if self.fast and self.dtype != torch.float32:  # autocast keeps cast copies of weights
            weights_cast = self._weight_numbers()[0] * 2
        forecast = forecast_image(
            shapes,
            input_bytes=width * height * (channels + int(alpha)) * 4,
            output_size=target,
            output_channels=out_channels + int(alpha),
            output_itemsize=itemsize,
            resized=target != (width * self.scale**passes, height * self.scale**passes),
            sharpened=sharpen > 0,
            baseline_bytes=resident_bytes() + weights_cast,
            peak_so_far_bytes=process_peak_bytes(),
            device_baseline_bytes=device_allocated_bytes(self.device),
        )
        first = shapes[0].plan
        return ImagePlan(
            device=str(self.device),
            precision=PRECISION_NAMES.get(first.dtype, str(first.dtype)),
            tile=first.tile,
            tile_rows=first.tile_rows,
            tiles=sum(tile_count(s.height, s.width, s.plan) * s.runs for s in shapes),
            model_passes=passes,
            output_size=target,
            forecast=forecast,
            precision_reason=precision_reason(first.dtype, self.device, self.precision, self.fast),
            threads=self._threads(),
        )

    def _threads(self) -> dict | None:
        if self.device.type != "cpu":
            return None
        choice = current_thread_choice()
        if choice is None:  # library use: torch's own count
            return {"threads": torch.get_num_threads(), "reason": "torch's default"}
        return {"threads": choice.threads, "reason": choice.reason}

    def _weight_numbers(self) -> tuple[int, int]:
        """The network's parameter count and bytes, counted once per weight dtype: walking a
        transformer's modules costs milliseconds, paid on every image otherwise."""
        network = self.model.descriptor.model
        dtype = next(network.parameters(), torch.empty(0)).dtype  # changes with .to(dtype)
        held = self.__dict__.get("_weights_counted")
        if held is None or held[0] is not network or held[1] != dtype:
            parameters = list(network.parameters())
            counts = (
                sum(p.numel() for p in parameters),
                sum(p.numel() * p.element_size() for p in parameters),
            )
            held = (network, dtype, counts)
            self.__dict__["_weights_counted"] = held
        return held[2]

    def _pass_shapes(
        self, width: int, height: int, channels: int, passes: int, *, alpha: bool
    ) -> list[PassShape]:
        """The passes `_run_passes` will make, with the channel adaptation of `_run_once`."""
        descriptor = self.model.descriptor
        wanted = descriptor.input_channels
        runs = channels if wanted == 1 and channels > 1 else 1
        pad = self.model.card.pre_pad if self.model.card else 0
        weight_bytes = self._weight_numbers()[1]
        shapes = []
        for index in range(passes):
            padded_w, padded_h = width + 2 * pad, height + 2 * pad
            tile = max(padded_w, padded_h) if self.tile == NO_TILING else self.tile
            plan = self._plan(tile, image_width=padded_w, image_height=padded_h)
            shapes.append(
                PassShape(
                    height=padded_h,
                    width=padded_w,
                    in_channels=wanted,
                    out_channels=descriptor.output_channels,
                    scale=self.scale,
                    plan=plan,
                    family=descriptor.architecture.id,
                    runs=runs,
                    last=index == passes - 1,
                    alpha=alpha,
                    first=index == 0,
                    weight_bytes=weight_bytes,
                )
            )
            width, height = width * self.scale, height * self.scale
        return shapes

    def _passes_for(self, factor: float) -> int:
        if self.scale <= 1:
            return 1
        # Enough model passes to reach the factor; the rest is a high-quality resize.
        return max(1, math.ceil(math.log(factor) / math.log(self.scale) - 1e-9))

    def _limit_input(self, image: Image, limit: int | None, report: UpscaleReport) -> Image:
        limit = limit if limit is not None else default_max_input_size()
        size = downsized(image.width, image.height, limit)
        if size == (image.width, image.height):
            return image
        report.notes.append(
            f"input {image.width}x{image.height} downsized to {size[0]}x{size[1]}"
            f" (max input size {limit})"
        )
        alpha = (
            None
            if image.alpha is None
            else cv2.resize(image.alpha, size, interpolation=cv2.INTER_AREA)
        )
        pixels = cv2.resize(image.pixels, size, interpolation=cv2.INTER_AREA)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        return dataclasses.replace(image, pixels=pixels, alpha=alpha, info=dict(image.info))

    def _run_passes(
        self,
        pixels: np.ndarray,
        passes: int,
        final_dtype: np.dtype,
        report: UpscaleReport,
        progress: ProgressCallback | None,
    ) -> np.ndarray:
        for index in range(passes):
            last = index == passes - 1
            pixels = unit_float(pixels)
            pixels = self._run_once(
                pixels, final_dtype if last else np.dtype(np.float32), report, progress
            )
        return pixels

    def _run_once(
        self,
        pixels: np.ndarray,
        out_dtype: np.dtype,
        report: UpscaleReport,
        progress: ProgressCallback | None,
    ) -> np.ndarray:
        """One model pass, adapting grey images to colour models and colour to grey models."""
        wanted = self.model.descriptor.input_channels
        have = pixels.shape[2]
        if wanted == have:
            return self._engine(pixels, out_dtype, report, progress)
        if have == 1:
            colour = self._engine(np.repeat(pixels, wanted, axis=2), out_dtype, report, progress)
            return to_grey(colour)
        if wanted == 1:
            planes = [
                self._engine(pixels[:, :, c : c + 1], out_dtype, report, progress)
                for c in range(have)
            ]
            return np.concatenate(planes, axis=2)
        raise BadInputError(None, f"model takes {wanted} channels, image has {have}")

    def _engine(
        self,
        pixels: np.ndarray,
        out_dtype: np.dtype,
        report: UpscaleReport,
        progress: ProgressCallback | None,
    ) -> np.ndarray:
        recheck_threads()  # a long batch follows the machine's load (engine/cores.py)
        pad = self.model.card.pre_pad if self.model.card else 0
        if pad:
            pixels = reflect_pad(pixels, pad)
        # --tile 0: the whole image is one tile (the engine still halves it on out-of-memory).
        tile = max(pixels.shape[:2]) if self.tile == NO_TILING else self.tile
        plan = self._plan(tile, image_width=pixels.shape[1], image_height=pixels.shape[0])
        report.tiling.append(plan.summary())
        if plan.global_operation or (self.prefer_whole and not plan.whole_image):
            report.notes.append(plan.why)
        runner = TileRunner(self.model.descriptor, plan, self._model_for, progress)
        output = runner.run(pixels, out_dtype)
        if pad:
            border = pad * self.scale
            output = np.ascontiguousarray(output[border:-border, border:-border])
        report.tiles += runner.tiles_run
        report.oom_retries += runner.retries
        report.fp32_fallbacks += runner.fp32_fallbacks
        if runner.retries:
            report.notes.append(f"out of memory: {runner.retries} tile(s) retried smaller")
        if runner.fp32_fallbacks:
            report.notes.append("non-finite output in reduced precision: retried in fp32")
        return output


def card_precision(requested: str, model: LoadedModel, device: torch.device) -> str:
    """An explicit request or UPRES_PRECISION wins; else the card's preference, off the CPU."""
    preferred = model.card.preferred_precision if model.card else "auto"
    if requested != "auto" or setting("UPRES_PRECISION") or device.type == "cpu":
        return requested
    return preferred


class Pipeline(ImageRunner):
    """Models run one after another (e.g. a x1 restoration, then a x4 upscaler).

    Each stage runs at its own scale with float results in between (no rounding between
    stages); `scale` is the chain's total: the last stage makes up the difference, with
    extra passes or a resize exactly as a single Upscaler does.
    """

    def __init__(self, stages: list[Upscaler]) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one model")
        self.stages = stages

    @property
    def name(self) -> str:
        return "+".join(stage.name for stage in self.stages)

    @property
    def scale(self) -> int:
        return math.prod(stage.scale for stage in self.stages)

    @property
    def architecture(self) -> str:
        return "+".join(stage.architecture for stage in self.stages)

    @property
    def device(self) -> torch.device:
        return self.stages[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.stages[0].dtype

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(repr(stage) for stage in self.stages)})"

    def upscale_image(
        self,
        image: Image,
        *,
        scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        long_side: int | None = None,
        sharpen: float = 0.0,
        alpha: str = "model",
        max_input_size: int | None = None,
        max_output_pixels: int | None = None,
        out_dtype: np.dtype | type | None = None,
        progress: ProgressCallback | None = None,
        size: tuple[int, int] | None = None,
    ) -> tuple[Image, UpscaleReport]:
        request = UpscaleRequest(
            scale=scale,
            width=width,
            height=height,
            long_side=long_side,
            sharpen=sharpen,
            alpha=alpha,
            max_input_size=max_input_size,
            max_output_pixels=max_output_pixels,
        )
        # The chain's result size, worked out once from its input; the last stage makes it.
        limited = downsized(image.width, image.height, request.max_input_size)
        target = size or request.output_size(*limited, self.scale)
        check_output_size(image.source, limited, target, request.output_limit())
        if out_dtype is None:  # the input's depth, decided before stages make it float
            out_dtype = np.uint16 if image.bit_depth == 16 else np.uint8
        *leading, last = self.stages
        total = UpscaleReport(input_size=(image.width, image.height))
        stage_max_input = request.max_input_size
        total.plan = self.plan_image(
            image.width,
            image.height,
            image.pixels.shape[2],
            alpha=image.alpha is not None,
            bit_depth=image.bit_depth,
            scale=target[0] / limited[0],
            max_input_size=request.max_input_size,
            sharpen=request.sharpen,
            output_itemsize=np.dtype(out_dtype).itemsize,
        )
        for stage in leading:
            image, report = stage.upscale_image(
                image,
                alpha=request.alpha,
                max_input_size=stage_max_input,
                max_output_pixels=request.max_output_pixels,
                out_dtype=np.float32,
                progress=progress,
            )
            merge(total, report)
            stage_max_input = None  # only the pipeline's input is limited
        image, report = last.upscale_image(
            image,
            size=target,
            sharpen=request.sharpen,
            alpha=request.alpha,
            max_input_size=stage_max_input,
            max_output_pixels=request.max_output_pixels,
            out_dtype=out_dtype,
            progress=progress,
        )
        merge(total, report)
        total.output_size = report.output_size
        total.peak_host_bytes = process_peak_bytes()
        total.peak_device_bytes = device_peak_bytes(self.device)
        return image, total

    def plan_image(
        self,
        width: int,
        height: int,
        channels: int = 3,
        *,
        alpha: bool = False,
        bit_depth: int = 8,
        scale: float | None = None,
        max_input_size: int | None = None,
        sharpen: float = 0.0,
        output_itemsize: int | None = None,
    ) -> ImagePlan:
        """Each stage's plan on the size the stage before it makes; the peak is the worst
        stage's plus the chain's input, which the caller holds throughout."""
        factor = float(scale) if scale else float(self.scale)
        *leading, last = self.stages
        plans = []
        first_input = width * height * (channels + int(alpha)) * 4
        done = 1.0
        for stage in leading:
            plan = stage.plan_image(
                width,
                height,
                channels,
                alpha=alpha,
                max_input_size=max_input_size,
                output_itemsize=4,
            )
            plans.append(plan)
            width, height = plan.output_size
            done *= stage.scale
            max_input_size = None
        plans.append(
            last.plan_image(
                width,
                height,
                channels,
                alpha=alpha,
                bit_depth=bit_depth,
                scale=factor / done,
                max_input_size=max_input_size,
                sharpen=sharpen,
                output_itemsize=output_itemsize,
            )
        )
        devices = [p.forecast.device_bytes for p in plans if p.forecast.device_bytes is not None]
        forecast = MemoryForecast(
            host_bytes=max(p.forecast.host_bytes for p in plans) + first_input * (len(plans) > 1),
            device_bytes=max(devices) if devices else None,
        )
        return dataclasses.replace(
            plans[0],
            tiles=sum(p.tiles for p in plans),
            model_passes=sum(p.model_passes for p in plans),
            output_size=plans[-1].output_size,
            forecast=forecast,
        )


def merge(total: UpscaleReport, stage: UpscaleReport) -> None:
    total.model_passes += stage.model_passes
    total.tiles += stage.tiles
    total.oom_retries += stage.oom_retries
    total.fp32_fallbacks += stage.fp32_fallbacks
    total.notes.extend(stage.notes)
    total.tiling.extend(stage.tiling)


# -- pixel helpers shared by the passes --------------------------------------------------


def swap_red_blue(array: np.ndarray) -> np.ndarray:
    """BGR <-> RGB and BGRA <-> RGBA as a new array; grey (+alpha) arrays are returned as is."""
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        return array
    order = [2, 1, 0, 3][: array.shape[2]]
    return np.ascontiguousarray(array[:, :, order])


CHANNEL_ORDERS = ("rgb", "bgr")


def checked_channel_order(order: str) -> str:
    if str(order).lower() not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be 'rgb' or 'bgr' (OpenCV), not {order!r}")
    return str(order).lower()


def reflect_pad(pixels: np.ndarray, pad: int) -> np.ndarray:
    """Mirror `pad` pixels onto every side (edge-repeat where the image is too small)."""
    mode = "reflect" if min(pixels.shape[:2]) > pad else "edge"
    return np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode=mode)


def to_grey(colour: np.ndarray) -> np.ndarray:
    """RGB -> one channel with BT.601 weights, in the same dtype."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey = colour.astype(np.float32) @ weights
    if np.issubdtype(colour.dtype, np.integer):
        grey = np.rint(grey).astype(colour.dtype)
    return grey[:, :, None]


def fit_to(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height) if needed: area for shrinking, Lanczos for growing."""
    height, width = pixels.shape[:2]
    if (width, height) == size:
        return pixels
    shrinking = size[0] < width
    method = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    resized = cv2.resize(pixels, size, interpolation=method)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    if resized.dtype == np.float32:
        np.clip(resized, 0.0, 1.0, out=resized)  # Lanczos rings past the range
    return resized


def resize_alpha(alpha: np.ndarray, size: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """--alpha bicubic: the alpha plane resized on its own (Real-ESRGAN's choice), no model."""
    resized = np.clip(cv2.resize(alpha, size, interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
    if np.issubdtype(dtype, np.integer):
        return quantise(resized, 16 if dtype == np.uint16 else 8)
    return resized.astype(np.float32)


def unsharp_mask(pixels: np.ndarray, amount: float) -> np.ndarray:
    """The `sharpen` option: 0..1 on a visible, halo-free scale (engine/sharpen.py)."""
    return sharpen_pixels(pixels, amount)


def load(
    name_or_path: str | Path | list[str | Path] | tuple[str | Path, ...] | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    tile: str | int | None = None,
    tile_overlap: int = DEFAULT_OVERLAP,
    denoise_strength: float | None = None,
    fast: bool = True,
    compile: bool = False,
    face_enhance: bool | str | None = None,
    face_strength: float = 1.0,
    face_min_size: float | None = None,
    face_confidence: float | None = None,
    channel_order: str = "rgb",
) -> ImageRunner:
    """Load a built-in model by name (default realesrgan-x4plus) or a checkpoint spandrel knows.

    A list of several names or files loads a chain that runs them in order (a Pipeline).
    `denoise_strength` (0..1) sets it for models that have one (realesr-general-v3-x4).
    `fast=False` runs the checkpoint's reference modules; `compile=True` adds torch.compile.
    `tile`: "auto"/None (planned from free memory), 0 (the whole image as one tile) or a
    size of at least 32 pixels. A bad option raises RequestError before anything loads.
    `face_enhance` (True for gfpgan-v1.4, or a face model's name or file) restores the
    faces found on each input and pastes them over the result (upres.faces), blended by
    `face_strength` (0..1); faces under `face_min_size` px or below `face_confidence` are
    left to the SR model.
    `channel_order="bgr"` takes and returns numpy arrays in OpenCV's order (BGR, BGRA).
    """
    order = checked_channel_order(channel_order)
    # The same rules and messages as every other surface, before any weights are read.
    checked = UpscaleRequest(
        tile=tile,
        tile_overlap=tile_overlap,
        precision=precision,
        device=device,
        denoise_strength=denoise_strength,
    )
    check_device(checked.device)  # a device that is not there is refused before weights load
    options = {"device": checked.device, "precision": checked.precision, "tile": checked.tile}
    options |= {"tile_overlap": checked.tile_overlap, "fast": fast, "compile": compile}
    faces = face_options(face_enhance, face_strength, face_min_size, face_confidence)
    runner: ImageRunner
    if isinstance(name_or_path, list | tuple) and len(name_or_path) != 1:
        runner = load_chain(name_or_path, denoise_strength=denoise_strength, **options)
    else:
        if isinstance(name_or_path, list | tuple):
            name_or_path = name_or_path[0]
        model = load_model(name_or_path, denoise_strength=denoise_strength)
        runner = Upscaler(model, **options)
    if faces is not None:
        from upres.faces.enhance import enhance

        runner = enhance(runner, faces)
    runner.channel_order = order
    return runner


def configure_cpu(threads: int | None = None) -> ThreadChoice:
    """Set this process up for CPU inference as the CLI does for its own: torch's threads
    from the cores free now, re-checked between images (an explicit `threads` is kept), and
    glibc told to keep freed tensor memory for the next tile (DAT-light at 64 px: 1.7x).
    For a program that owns its process; a library inside someone else's leaves both alone,
    which is why `load` does not do it."""
    whole = isinstance(threads, int) and not isinstance(threads, bool)
    if threads is not None and not (whole and threads >= 1):
        raise RequestError("threads", f"must be a whole number of at least 1, not {threads!r}")
    return configure(threads)


def check_device(device: str) -> None:
    """RequestError (a ValueError) when `device` is not on this machine, in one line."""
    try:
        resolve_device(device)
    except ValueError as error:
        raise RequestError("device", str(error).removeprefix("device ")) from None


def face_options(
    face_enhance: bool | str | None,
    strength: float,
    min_size: float | None,
    confidence: float | None,
) -> FaceOptions | None:
    """The FaceOptions `face_enhance` asks for (None: faces are not touched), checked now."""
    if face_enhance is None or face_enhance is False:
        return None
    from upres.faces.enhance import FaceOptions

    chosen: dict[str, Any] = {"strength": strength}
    if isinstance(face_enhance, str):
        chosen["model"] = face_enhance
    if min_size is not None:
        chosen["min_size"] = min_size
    if confidence is not None:
        chosen["min_confidence"] = confidence
    return FaceOptions(**chosen)


def load_chain(
    names_or_paths: list[str | Path] | tuple[str | Path, ...],
    *,
    denoise_strength: float | None = None,
    **options: Any,
) -> Pipeline:
    """Models that run one after another; the denoise strength goes to those that have one.

    `options` are Upscaler's (device, precision, tile, tile_overlap, fast, compile).
    """
    stages = []
    for target in names_or_paths:
        model = load_model(target, denoise_strength=strength_for(target, denoise_strength))
        stages.append(Upscaler(model, **options))
    return Pipeline(stages)


def strength_for(target: str | Path, strength: float | None) -> float | None:
    """Pass a denoise strength only to the built-in models that blend weights."""
    from upres.models.catalog import find_card

    card = find_card(str(target))
    return strength if card is not None and card.blend_with else None
