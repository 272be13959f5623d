"""The public Python API: `Upscaler` turns images of any kind into bigger ones.

Every surface (CLI, service, batch) calls `Upscaler.upscale_image` or `upscale_file`;
none of them re-implements tiling, precision choice or file writing.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL.Image
import torch

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
from upres.engine.plan import DEFAULT_OVERLAP, DTYPES, Plan, make_plan, resolve_device
from upres.engine.run import ProgressCallback, TileRunner
from upres.engine.sharpen import sharpen as sharpen_pixels
from upres.errors import BadInputError, OutputExistsError
from upres.io.animation import is_animated_file, upscale_animation
from upres.io.image import (
    Image,
    fill_transparent_colour,
    image_from_array,
    image_from_pil,
    image_to_array,
    image_to_pil,
    read_image,
    unit_float,
    write_image,
)
from upres.io.video import VideoOptions, is_video_file, upscale_video
from upres.models.loader import LoadedModel, load_model

MAX_INPUT_ENV = "UPRES_MAX_INPUT_SIZE"
PRECISION_NAMES = {dtype: name for name, dtype in DTYPES.items()}


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
    value = os.environ.get(MAX_INPUT_ENV)
    return int(value) if value else None


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
        sharpen: float = 0.0,
        max_input_size: int | None = None,
        out_dtype: np.dtype | type | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[Image, UpscaleReport]:
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

    def __call__(self, image: Any, *, scale: float | None = None, sharpen: float = 0.0) -> Any:
        """Upscale a PIL image, a numpy array (HW/HWC, uint8/uint16/float) or a torch tensor.

        Returns the same kind: PIL in, PIL out; the array's dtype and layout are kept; a
        tensor (CHW or BCHW, float in [0, 1]) comes back on its device and dtype.
        """
        if isinstance(image, PIL.Image.Image):
            result, _ = self.upscale_image(image_from_pil(image), scale=scale, sharpen=sharpen)
            return image_to_pil(result)
        if isinstance(image, np.ndarray):
            bgr = self.channel_order == "bgr"
            decoded, dtype_name = image_from_array(swap_red_blue(image) if bgr else image)
            out_dtype = np.dtype(dtype_name) if dtype_name in ("uint8", "uint16") else np.float32
            result, _ = self.upscale_image(
                decoded, scale=scale, sharpen=sharpen, out_dtype=out_dtype
            )
            array = image_to_array(result, dtype_name)
            return swap_red_blue(array) if bgr else array
        if isinstance(image, torch.Tensor):
            return self._call_tensor(image, scale=scale, sharpen=sharpen)
        raise BadInputError(
            None, f"cannot upscale a {type(image).__name__}; give PIL, numpy or torch"
        )

    def _call_tensor(
        self, tensor: torch.Tensor, *, scale: float | None, sharpen: float
    ) -> torch.Tensor:
        batched = tensor.ndim == 4
        if tensor.ndim not in (3, 4):
            raise BadInputError(
                None, f"expected a CHW or BCHW tensor, got shape {tuple(tensor.shape)}"
            )
        items = tensor if batched else tensor[None]
        outputs = []
        for item in items:
            pixels = item.detach().float().cpu().permute(1, 2, 0).numpy()
            result, _ = self.upscale_image(
                Image(pixels=np.ascontiguousarray(pixels)),
                scale=scale,
                sharpen=sharpen,
                out_dtype=np.float32,
            )
            outputs.append(torch.from_numpy(result.pixels).permute(2, 0, 1))
        stacked = torch.stack(outputs).to(tensor.device, dtype=tensor.dtype)
        return stacked if batched else stacked[0]

    def upscale_file(
        self,
        source: str | Path,
        destination: str | Path,
        *,
        scale: float | None = None,
        sharpen: float = 0.0,
        format: str | None = None,
        quality: int | None = None,
        overwrite: bool = False,
        skip_existing: bool = False,
        max_input_size: int | None = None,
        max_input_pixels: int | None = None,
        progress: ProgressCallback | None = None,
        video: VideoOptions | None = None,
    ) -> FileResult:
        """Read, upscale and atomically write one file; never touches the input.

        Videos and animated images take their own path (io/video.py, io/animation.py);
        there `progress` counts frames instead of tiles.
        """
        source, destination = Path(source), Path(destination)
        started = time.perf_counter()
        if destination.exists():
            if skip_existing:
                return FileResult(source, destination, "skipped")
            if not overwrite:
                raise OutputExistsError(
                    f"{destination}: already exists (use --overwrite or --skip-existing)"
                )
            if source.exists() and source.resolve() == destination.resolve():
                raise OutputExistsError(f"{destination}: is the input itself; write elsewhere")
        media = {"scale": scale, "sharpen": sharpen, "max_input_size": max_input_size}
        media |= {"max_pixels": max_input_pixels}  # per frame
        if is_video_file(source):
            report = upscale_video(
                self, source, destination, options=video, progress=progress, **media
            )
            return FileResult(source, destination, "done", time.perf_counter() - started, report)
        if is_animated_file(source):
            report = upscale_animation(
                self, source, destination, quality=quality, progress=progress, **media
            )
            return FileResult(source, destination, "done", time.perf_counter() - started, report)
        image = read_image(source, max_pixels=max_input_pixels)
        result, report = self.upscale_image(
            image, scale=scale, sharpen=sharpen, max_input_size=max_input_size, progress=progress
        )
        # The result is ours alone: a huge PNG may be written straight from its pixels.
        written = write_image(result, destination, format=format, quality=quality, consume=True)
        return FileResult(source, written, "done", time.perf_counter() - started, report)


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
        self.model = model
        self.device = resolve_device(device)
        self.precision = card_precision(precision, model, self.device)
        self.tile = tile
        self.tile_overlap = tile_overlap
        # fast=False runs the checkpoint's own modules, cast to the planned dtype (the
        # reference path that `upres bench` compares against).
        self.fast = fast
        self.compile = compile and fast
        planned = self._plan(tile)
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

    def _plan(self, tile: str | int | None, image_width: int | None = None) -> Plan:
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
        )

    # -- images ---------------------------------------------------------------------

    def upscale_image(
        self,
        image: Image,
        *,
        scale: float | None = None,
        sharpen: float = 0.0,
        max_input_size: int | None = None,
        out_dtype: np.dtype | type | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[Image, UpscaleReport]:
        """decode is done; plan, infer, assemble here; encoding is the caller's."""
        factor = float(scale) if scale else float(self.scale)
        if factor <= 0 or not math.isfinite(factor):
            raise ValueError(f"scale must be a positive number, not {scale}")
        if not 0.0 <= sharpen <= 1.0:
            raise ValueError(f"sharpen must be between 0 and 1, not {sharpen}")
        if image.height == 0 or image.width == 0:
            raise BadInputError(image.source, "image has a zero side")
        report = UpscaleReport(input_size=(image.width, image.height))
        report.plan = self._plan_for(image, scale, max_input_size, out_dtype, sharpen)
        image = self._limit_input(image, max_input_size, report)
        target = (round(image.width * factor), round(image.height * factor))
        final_dtype = (
            np.dtype(out_dtype)
            if out_dtype is not None
            else (np.dtype(np.uint16) if image.bit_depth == 16 else np.dtype(np.uint8))
        )

        pixels = image.pixels
        if image.alpha is not None:
            pixels = fill_transparent_colour(pixels, image.alpha)
        passes = self._passes_for(factor)
        pixels = self._run_passes(pixels, passes, final_dtype, report, progress)
        alpha = None
        if image.alpha is not None:
            alpha = self._run_passes(image.alpha[:, :, None], passes, final_dtype, report, None)
        pixels = fit_to(pixels, target)
        if alpha is not None:
            alpha = fit_to(alpha, target)[:, :, 0] if alpha.ndim == 3 else fit_to(alpha, target)
        if sharpen > 0:
            pixels = unsharp_mask(pixels, sharpen)
        report.output_size = target
        report.model_passes = passes
        report.peak_host_bytes = process_peak_bytes()
        report.peak_device_bytes = device_peak_bytes(self.device)
        result = dataclasses.replace(image, pixels=pixels, alpha=alpha, info=dict(image.info))
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
        if limit and max(width, height) > limit:
            ratio = limit / max(width, height)
            width, height = max(1, round(width * ratio)), max(1, round(height * ratio))
        target = (round(width * factor), round(height * factor))
        passes = self._passes_for(factor)
        shapes = self._pass_shapes(width, height, channels, passes, alpha=False)
        if alpha:
            shapes += self._pass_shapes(width, height, 1, passes, alpha=True)
        itemsize = output_itemsize or (2 if bit_depth == 16 else 1)
        out_channels = 1 if channels == 1 else 3
        weights_cast = 0
        if self.fast and self.dtype != torch.float32:  # autocast keeps cast copies of weights
            weights_cast = sum(p.numel() * 2 for p in self.model.descriptor.model.parameters())
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
        )

    def _pass_shapes(
        self, width: int, height: int, channels: int, passes: int, *, alpha: bool
    ) -> list[PassShape]:
        """The passes `_run_passes` will make, with the channel adaptation of `_run_once`."""
        descriptor = self.model.descriptor
        wanted = descriptor.input_channels
        runs = channels if wanted == 1 and channels > 1 else 1
        pad = self.model.card.pre_pad if self.model.card else 0
        weight_bytes = sum(p.numel() * p.element_size() for p in descriptor.model.parameters())
        shapes = []
        for index in range(passes):
            padded_w, padded_h = width + 2 * pad, height + 2 * pad
            plan = self._plan(self.tile, image_width=padded_w)
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
        longest = max(image.width, image.height)
        if not limit or longest <= limit:
            return image
        ratio = limit / longest
        size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
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
        plan = self._plan(self.tile, image_width=pixels.shape[1])
        runner = TileRunner(self.model.descriptor, plan, self._model_for, progress)
        pad = self.model.card.pre_pad if self.model.card else 0
        if pad:
            pixels = reflect_pad(pixels, pad)
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
    if requested != "auto" or os.environ.get("UPRES_PRECISION") or device.type == "cpu":
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
        sharpen: float = 0.0,
        max_input_size: int | None = None,
        out_dtype: np.dtype | type | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[Image, UpscaleReport]:
        factor = float(scale) if scale else float(self.scale)
        if factor <= 0 or not math.isfinite(factor):
            raise ValueError(f"scale must be a positive number, not {scale}")
        if out_dtype is None:  # the input's depth, decided before stages make it float
            out_dtype = np.uint16 if image.bit_depth == 16 else np.uint8
        *leading, last = self.stages
        total = UpscaleReport(input_size=(image.width, image.height))
        total.plan = self.plan_image(
            image.width,
            image.height,
            image.pixels.shape[2],
            alpha=image.alpha is not None,
            bit_depth=image.bit_depth,
            scale=scale,
            max_input_size=max_input_size,
            sharpen=sharpen,
            output_itemsize=np.dtype(out_dtype).itemsize,
        )
        done = 1.0
        for stage in leading:
            image, report = stage.upscale_image(
                image, max_input_size=max_input_size, out_dtype=np.float32, progress=progress
            )
            merge(total, report)
            done *= stage.scale
            max_input_size = None  # only the pipeline's input is limited
        image, report = last.upscale_image(
            image,
            scale=factor / done,
            sharpen=sharpen,
            max_input_size=max_input_size,
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
    channel_order: str = "rgb",
) -> Upscaler | Pipeline:
    """Load a built-in model by name (default realesrgan-x4plus) or a checkpoint spandrel knows.

    A list of several names or files loads a chain that runs them in order (a Pipeline).
    `denoise_strength` (0..1) sets it for models that have one (realesr-general-v3-x4).
    `fast=False` runs the checkpoint's reference modules; `compile=True` adds torch.compile.
    `channel_order="bgr"` takes and returns numpy arrays in OpenCV's order (BGR, BGRA).
    """
    order = checked_channel_order(channel_order)
    options = {"device": device, "precision": precision, "tile": tile}
    options |= {"tile_overlap": tile_overlap, "fast": fast, "compile": compile}
    runner: Upscaler | Pipeline
    if isinstance(name_or_path, list | tuple) and len(name_or_path) != 1:
        runner = load_chain(name_or_path, denoise_strength=denoise_strength, **options)
    else:
        if isinstance(name_or_path, list | tuple):
            name_or_path = name_or_path[0]
        model = load_model(name_or_path, denoise_strength=denoise_strength)
        runner = Upscaler(model, **options)
    runner.channel_order = order
    return runner


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
    from upres.models.catalog import CATALOG

    card = CATALOG.get(str(target).lower())
    return strength if card is not None and card.blend_with else None
