"""The fast path's engine: batched tiles, fixed shapes, autocast precision, torch.compile.

Every test runs real tiny architectures; wrappers only record or refuse calls, the maths
is always the network's own.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil

import numpy as np
import pytest
import torch

import upres
from conftest import descriptor_of, tiny_compact, tiny_swinir
from upres.engine import plan as plan_module
from upres.engine.plan import choose_precision, make_plan
from upres.engine.run import TileRunner

CPU = torch.device("cpu")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


class Recorder(torch.nn.Module):
    """Wraps a real network and records the shape of every batch it is given."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.shapes = network, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.network(x)


class OutOfMemoryWhenBatched(Recorder):
    """Raises the allocator's OOM for any batch of more than one tile."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.network(x)


def run(descriptor, pixels, *, wrapper_type=Recorder, **plan_options):
    """Run a TileRunner in fp32 on the reference network; returns output, runner, wrapper."""
    plan_options = {"precision": "fp32", **plan_options}
    plan = make_plan(descriptor, CPU, **plan_options)
    wrapper = wrapper_type(descriptor.model.float().eval())
    runner = TileRunner(descriptor, plan, lambda _dtype: wrapper)
    return runner.run(pixels, np.dtype(np.float32)), runner, wrapper


@pytest.fixture(scope="module")
def compact():
    return descriptor_of(tiny_compact(scale=2))


@pytest.fixture(scope="module")
def swinir():
    return descriptor_of(tiny_swinir(scale=2))


# -- batching -----------------------------------------------------------------------------------

# 5 cores across: with tile 32 the Compact's last core is narrower (27, 27, 27, 27, 23 px) and
# SwinIR's, on 8 px windows, is 3 px; edge crops are narrower than the middle ones either way.
BATCH_IMAGE = (70, 131)


@pytest.mark.parametrize("model_name", ["compact", "swinir"])
def test_batched_tiles_equal_one_tile_at_a_time(model_name, request):
    descriptor = request.getfixturevalue(model_name)
    image = random_image(*BATCH_IMAGE, seed=1)
    single, single_runner, single_calls = run(descriptor, image, tile=32, overlap=16, batch=1)
    batched, batched_runner, batched_calls = run(descriptor, image, tile=32, overlap=16, batch=4)
    assert batched_runner.plan.batch == 4
    assert single_runner.tiles_run == batched_runner.tiles_run >= 10
    assert all(shape[0] == 1 for shape in single_calls.shapes)
    assert max(shape[0] for shape in batched_calls.shapes) > 1
    assert len(batched_calls.shapes) < len(single_calls.shapes)
    assert batched.shape == single.shape == (BATCH_IMAGE[0] * 2, BATCH_IMAGE[1] * 2, 3)
    assert np.abs(batched - single).max() < 1e-5


def test_batches_only_stack_crops_of_the_same_shape(compact):
    image = random_image(*BATCH_IMAGE, seed=2)
    _, _, calls = run(compact, image, tile=32, overlap=16, batch=8)
    widths = [shape[-1] for shape in calls.shapes]
    # Per row: the left edge crop, the three middle crops stacked, the right edge crop.
    assert [shape[0] for shape in calls.shapes[:3]] == [1, 3, 1]
    assert widths[:3] == [27 + 16, 27 + 32, 23 + 16]


def test_out_of_memory_in_a_batch_halves_the_batch_and_keeps_the_image(compact):
    image = random_image(*BATCH_IMAGE, seed=3)
    expected, _, _ = run(compact, image, tile=32, overlap=16, batch=1)
    output, runner, calls = run(
        compact, image, tile=32, overlap=16, batch=4, wrapper_type=OutOfMemoryWhenBatched
    )
    assert runner.batch == 1
    assert runner.retries == 2  # the batch of 3 middle crops, then its first half of 2
    # Row 1: edge, 3 middle (refused), 1 + 2 (refused), 1 + 1, edge; then no row stacks again.
    assert [shape[0] for shape in calls.shapes] == [1, 3, 1, 2, 1, 1, 1] + [1] * 10
    assert runner.tiles_run == 15  # refused attempts are retries, not tiles
    assert np.abs(output - expected).max() < 1e-5


# -- fixed shape (for torch.compile) -------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["compact", "swinir"])
def test_fixed_shape_feeds_one_input_shape(model_name, request):
    descriptor = request.getfixturevalue(model_name)
    image = random_image(*BATCH_IMAGE, seed=4)
    _, runner, calls = run(descriptor, image, tile=32, overlap=16, fixed_shape=True)
    assert {tuple(shape[-2:]) for shape in calls.shapes} == {runner.plan.crop_shape}
    _, _, free_calls = run(descriptor, image, tile=32, overlap=16)
    assert len({shape[-2:] for shape in free_calls.shapes}) > 1  # the test can tell


def test_fixed_shape_feeds_one_batch_size_too(compact):
    # Rows of 5 tiles in batches of 4: the row's last group is filled up, not a new shape.
    image = random_image(*BATCH_IMAGE, seed=4)
    fixed, runner, calls = run(compact, image, tile=32, overlap=16, fixed_shape=True, batch=4)
    assert set(calls.shapes) == {(4, 3, *runner.plan.crop_shape)}
    free, _, free_calls = run(compact, image, tile=32, overlap=16, batch=4)
    assert len({shape[0] for shape in free_calls.shapes}) > 1  # the test can tell
    assert np.abs(fixed - free).max() < 1e-5


def test_fixed_shape_out_of_memory_lowers_the_padded_batch(compact):
    # One tile per row: each group is one crop padded to the batch, so the batch must drop.
    image = random_image(40, 30, seed=8)
    plan = dict(tile=32, overlap=16, fixed_shape=True, batch=4)
    output, runner, calls = run(compact, image, wrapper_type=OutOfMemoryWhenBatched, **plan)
    assert runner.batch == 1 and runner.retries >= 1
    assert calls.shapes[-1][0] == 1
    unbatched, _, _ = run(compact, image, tile=32, overlap=16, fixed_shape=True, batch=1)
    assert np.abs(output - unbatched).max() < 1e-5


def test_fixed_shape_cnn_output_equals_free_shape_output(compact):
    # Border crops are widened inward to the full shape, never padded past the image.
    image = random_image(*BATCH_IMAGE, seed=5)
    free, _, _ = run(compact, image, tile=32, overlap=16)
    fixed, _, _ = run(compact, image, tile=32, overlap=16, fixed_shape=True)
    assert np.abs(fixed - free).max() < 1e-5


def test_fixed_shape_swin_output_agrees_with_free_shape_output(swinir):
    image = random_image(*BATCH_IMAGE, seed=6)
    free, _, _ = run(swinir, image, tile=32, overlap=16)
    fixed, _, _ = run(swinir, image, tile=32, overlap=16, fixed_shape=True, batch=4)
    assert psnr(free, fixed) >= 40


# -- Upscaler: fast vs reference ---------------------------------------------------------------


def upscale(checkpoint, image, **options) -> np.ndarray:
    upscaler = upres.load(checkpoint, device="cpu", tile=32, tile_overlap=16, **options)
    output = upscaler(image)
    assert output.dtype == np.float32
    return output


@pytest.mark.parametrize("checkpoint_name", ["compact_checkpoint", "swinir_checkpoint"])
def test_fast_fp32_matches_the_reference_modules(checkpoint_name, request, photo):
    checkpoint = request.getfixturevalue(checkpoint_name)
    image = photo[200:270, 180:311].astype(np.float32) / 255
    reference = upscale(checkpoint, image, precision="fp32", fast=False)
    fast = upscale(checkpoint, image, precision="fp32", fast=True)
    assert fast.shape == reference.shape == (140, 262, 3)
    assert psnr(reference, fast) >= 80


@pytest.mark.parametrize("checkpoint_name", ["compact_checkpoint", "swinir_checkpoint"])
def test_fast_bf16_stays_within_50_db_of_the_fp32_reference(checkpoint_name, request, photo):
    checkpoint = request.getfixturevalue(checkpoint_name)
    image = photo[200:270, 180:311].astype(np.float32) / 255
    reference = upscale(checkpoint, image, precision="fp32", fast=False)
    upscaler = upres.load(checkpoint, device="cpu", tile=32, tile_overlap=16, precision="bf16")
    assert upscaler.dtype == torch.bfloat16
    fast = upscaler(image)
    assert not np.array_equal(fast, reference)  # bf16 really ran
    assert psnr(reference, fast) >= 50


def test_fast_upscaler_plans_autocast_and_the_reference_does_not(compact_checkpoint):
    fast = upres.load(compact_checkpoint, device="cpu", precision="fp32")
    reference = upres.load(compact_checkpoint, device="cpu", precision="fp32", fast=False)
    assert fast._plan(None).autocast and not reference._plan(None).autocast
    assert fast._plan(None).batch == reference._plan(None).batch == 1  # CPU: no stacking


# -- precision on the CPU ----------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_cpu_auto_precision_is_bf16_only_under_autocast_with_native_bf16(
    compact, swinir, native, monkeypatch
):
    monkeypatch.setattr(plan_module, "cpu_has_native_bf16", lambda: native)
    no_bf16 = copy.copy(swinir)
    no_bf16.supports_bfloat16 = False
    for descriptor in (compact, swinir, no_bf16):
        assert choose_precision(descriptor, CPU, "auto", autocast=False) == torch.float32
        assert choose_precision(descriptor, CPU, "fp32", autocast=True) == torch.float32
    expected = torch.bfloat16 if native else torch.float32
    assert choose_precision(compact, CPU, "auto", autocast=True) == expected
    assert choose_precision(swinir, CPU, "auto", autocast=True) == expected
    assert choose_precision(no_bf16, CPU, "auto", autocast=True) == torch.float32
    assert make_plan(compact, CPU, autocast=True).dtype == expected
    assert make_plan(compact, CPU, autocast=False).dtype == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_precision_reason_says_why_each_precision_was_chosen(native, monkeypatch):
    monkeypatch.setattr(plan_module, "cpu_has_native_bf16", lambda: native)
    auto_cpu = plan_module.precision_reason(
        torch.bfloat16 if native else torch.float32, CPU, "auto", True
    )
    if native:
        assert auto_cpu == "bf16: this CPU computes bf16 natively (AMX or AVX-512 BF16)"
        model_says_no = plan_module.precision_reason(torch.float32, CPU, "auto", True)
        assert model_says_no == "fp32: the model does not support bf16"
    else:
        assert auto_cpu == "fp32: this CPU has no native bf16 (no AMX or AVX-512 BF16)"
    reference = plan_module.precision_reason(torch.float32, CPU, "auto", False)
    assert reference == "fp32: the reference path (--no-fast) runs in fp32"
    assert plan_module.precision_reason(torch.float32, CPU, "fp32", True) == "fp32: as asked"
    refused = plan_module.precision_reason(torch.float32, CPU, "fp16", True)
    assert refused == "fp32: fp16 asked, not supported by the model"


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse2 avx2 fma", False),  # converts to fp32: no gain
        ("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),  # AMD Zen 4, Intel Cooper Lake
        ("fpu avx512f amx_bf16 amx_tile", True),  # Intel Sapphire Rapids
    ],
)
def test_cpu_has_native_bf16_reads_the_bf16_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: some CPU\nflags\t\t: {flags}\n")
    assert plan_module.cpu_has_native_bf16(str(cpuinfo)) is native
    assert plan_module.cpu_has_native_bf16(str(tmp_path / "absent")) is False


# -- torch.compile ------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_compact_matches_the_uncompiled_fast_path(compact_checkpoint, photo):
    if not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler (g++ or c++); none on PATH")
    image = photo[200:270, 180:311].astype(np.float32) / 255
    eager = upscale(compact_checkpoint, image, precision="fp32", fast=True, compile=False)
    compiled_upscaler = upres.load(
        compact_checkpoint, device="cpu", precision="fp32", tile=32, tile_overlap=16, compile=True
    )
    plan = compiled_upscaler._plan(None)
    assert plan.fixed_shape and dataclasses.replace(plan, fixed_shape=False) != plan
    compiled = compiled_upscaler(image)
    assert compiled.shape == eager.shape
    assert np.abs(compiled - eager).max() < 1e-4


# -- wide images: short, wide tiles ---------------------------------------------------------


def test_a_wide_image_gets_short_wide_tiles_not_small_squares(compact, monkeypatch):
    monkeypatch.setattr(plan_module, "BAND_BYTES", 4 * 1024 * 1024)  # a small band budget
    monkeypatch.setattr(plan_module, "free_memory_bytes", lambda device: 8 * 1024**3)
    plan = make_plan(compact, torch.device("cuda"), image_width=2000, overlap=16)
    # 4 MiB / (4000 output px x 4 channels x 4 B) = 65 output rows = 32 input rows, less
    # 2 x 16 of context: below the smallest tile, so the smallest tile
    assert plan.tile_rows == plan_module.SMALLEST_TILE
    assert plan.tile > 4 * plan.tile_rows  # the width keeps the memory-planned size
    on_cpu = make_plan(compact, CPU, image_width=2000, overlap=16)
    assert on_cpu.tile_rows == 32 and on_cpu.tile == 2 * 32  # host memory: at most 2:1
    explicit = make_plan(compact, CPU, tile=64, image_width=2000)
    assert explicit.tile_rows is None  # a tile the user chose is left square


def test_short_wide_tiles_give_the_same_image(compact):
    image = random_image(70, 131, seed=7)
    square, _, _ = run(compact, image, tile=32, overlap=16)
    plan = make_plan(compact, CPU, tile=64, overlap=16, precision="fp32")
    wide = dataclasses.replace(plan, tile_rows=16)
    recorder = Recorder(compact.model.float().eval())
    output = TileRunner(compact, wide, lambda _dtype: recorder).run(image, np.dtype(np.float32))
    assert np.abs(output - square).max() < 1e-5
    assert max(shape[2] for shape in recorder.shapes) <= 16 + 2 * 16  # short...
    assert max(shape[3] for shape in recorder.shapes) > 16 + 2 * 16  # ...and wide
