"""The engine: tiling maths, exact crop-back, tiled == untiled, OOM recovery, precision fallback."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from conftest import descriptor_of, tiny_compact, tiny_swinir
from upres.engine import plan as plan_module
from upres.engine.plan import choose_precision, make_plan, parse_tile, size_rules
from upres.engine.run import TileRunner
from upres.engine.tiles import Span, axis_weights, split_axis, tile_grid
from upres.errors import OutOfMemoryError

CPU = torch.device("cpu")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def run(descriptor, pixels, *, tile, overlap=32, out=np.float32, model_for=None, precision="fp32"):
    plan = make_plan(descriptor, CPU, tile=tile, overlap=overlap, precision=precision)
    runner = TileRunner(descriptor, plan, model_for or (lambda dtype: descriptor.model.to(dtype)))
    return runner.run(pixels, np.dtype(out)), runner


@pytest.fixture(scope="module")
def compact():
    return descriptor_of(tiny_compact(scale=2))


@pytest.fixture(scope="module")
def swinir():
    return descriptor_of(tiny_swinir(scale=2))


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


# -- pure tiling maths --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "tile", "align"), [(1, 64, 8), (100, 64, 8), (257, 64, 1), (640, 128, 16)]
)
def test_split_axis_covers_the_axis_once(length, tile, align):
    spans = split_axis(length, tile, align)
    assert spans[0].start == 0 and spans[-1].stop == length
    assert all(a.stop == b.start for a, b in itertools.pairwise(spans))
    assert all(span.size <= max(tile, align) for span in spans)
    assert all(span.start % align == 0 for span in spans)


def test_blend_weights_are_a_partition_of_unity():
    height, width, scale, overlap = 70, 130, 3, 12
    total = np.zeros((height * scale, width * scale))
    for row in tile_grid(height, width, 32, overlap, 1):
        for tile in row:
            wy = axis_weights(tile.core_y, tile.crop_y, height, overlap, scale)
            wx = axis_weights(tile.core_x, tile.crop_x, width, overlap, scale)
            total[
                tile.crop_y.start * scale : tile.crop_y.stop * scale,
                tile.crop_x.start * scale : tile.crop_x.stop * scale,
            ] += np.outer(wy, wx)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_weights_have_no_ramp_at_the_image_border():
    weights = axis_weights(Span(0, 32), Span(0, 48), 100, 16, 1)
    assert weights[0] == 1.0 and weights[-1] == 0.0


# -- sizes and padding ----------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["compact", "swinir"])
def test_odd_sizes_come_back_exactly_scaled(model_name, request):
    descriptor = request.getfixturevalue(model_name)
    seen: list[tuple[int, int]] = []
    hook = descriptor.model.register_forward_pre_hook(
        lambda _m, args: seen.append(tuple(args[0].shape[-2:]))
    )
    try:
        output, _ = run(descriptor, random_image(37, 53), tile=4096)
    finally:
        hook.remove()
    assert output.shape == (74, 106, 3)
    multiple = size_rules(descriptor).multiple
    # Padded only up to the next multiple of the window (or the minimum), never a window more.
    expected = (
        max(size_rules(descriptor).minimum, -(-37 // multiple) * multiple),
        max(size_rules(descriptor).minimum, -(-53 // multiple) * multiple),
    )
    assert seen == [expected]


def test_swin_window_is_the_tile_multiple(swinir):
    assert size_rules(swinir).multiple == 8
    assert make_plan(swinir, CPU, tile=100).tile == 96


def test_tiny_inputs_are_padded_by_replication(compact, swinir):
    for descriptor in (compact, swinir):
        output, _ = run(descriptor, random_image(1, 3), tile=4096)
        assert output.shape == (2, 6, 3)


# -- tiled == untiled ------------------------------------------------------------------------


def test_tiled_cnn_is_bit_exact_when_the_receptive_field_fits(compact):
    image = random_image(90, 117, seed=3)
    whole, _ = run(compact, image, tile=4096, out=np.uint8)
    tiled, runner = run(compact, image, tile=32, overlap=16, out=np.uint8)
    assert runner.tiles_run > 4
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
    float_whole, _ = run(compact, image, tile=4096)
    float_tiled, _ = run(compact, image, tile=32, overlap=16)
    assert np.abs(float_whole - float_tiled).max() < 1e-5


def test_tiled_swin_agrees_with_whole_image_above_45db(swinir, photo):
    image = photo[100:196, 150:270].astype(np.float32) / 255
    whole, _ = run(swinir, image, tile=4096)
    tiled, runner = run(swinir, image, tile=48)  # default overlap
    assert runner.tiles_run >= 4
    assert psnr(whole, tiled) >= 45


# -- memory ------------------------------------------------------------------------------------


class OutOfMemoryAbove(torch.nn.Module):
    """Wraps a real network; raises the allocator's OOM for inputs larger than a side limit."""

    def __init__(self, network: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.network, self.limit, self.calls = network, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.network(x)


def test_out_of_memory_halves_only_the_failing_tile(compact):
    image = random_image(60, 180, seed=5)
    expected, _ = run(compact, image, tile=4096)
    wrapper = OutOfMemoryAbove(compact.model, limit=80)
    # Three 60 px cores with 12 px of context: the edge crops are 72 px wide and fit, the
    # middle crop is 84 px wide and does not; only it is retried, as smaller tiles.
    output, runner = run(compact, image, tile=64, overlap=12, model_for=lambda _dtype: wrapper)
    assert runner.retries == 1
    assert [call for call in wrapper.calls if max(call) > 80] == [(60, 84)]
    assert np.abs(output - expected).max() < 1e-5


def test_out_of_memory_below_the_floor_is_a_clear_error(compact):
    wrapper = OutOfMemoryAbove(compact.model, limit=0)
    with pytest.raises(OutOfMemoryError, match="out of memory"):
        run(compact, random_image(64, 64), tile=64, model_for=lambda _dtype: wrapper)


def test_auto_tile_is_planned_from_free_memory(compact, swinir, monkeypatch):
    monkeypatch.setattr(plan_module, "free_memory_bytes", lambda device: 64 * 1024**2)
    small = make_plan(swinir, CPU, tile="auto").tile
    monkeypatch.setattr(plan_module, "free_memory_bytes", lambda device: 16 * 1024**3)
    large = make_plan(swinir, CPU, tile="auto").tile
    assert small < large
    assert small % 8 == 0 and large % 8 == 0
    assert make_plan(compact, CPU, tile="auto").tile > small


def test_tile_size_env_is_the_default(compact, monkeypatch):
    monkeypatch.setenv("UPRES_TILE_SIZE", "40")
    assert make_plan(compact, CPU).tile == 40
    assert parse_tile("auto") is None
    with pytest.raises(ValueError):
        parse_tile("-3")


# -- precision ---------------------------------------------------------------------------------


def test_precision_auto_is_fp32_on_cpu_and_respects_the_descriptor(compact, swinir, monkeypatch):
    assert choose_precision(compact, CPU, "auto") == torch.float32
    assert choose_precision(swinir, CPU, "fp16") == torch.float32  # SwinIR turns black in fp16
    assert choose_precision(compact, CPU, "fp16") == torch.float16
    assert choose_precision(swinir, CPU, "bf16") == torch.bfloat16
    monkeypatch.setenv("UPRES_PRECISION", "bf16")
    assert choose_precision(compact, CPU, "auto") == torch.bfloat16


class InfiniteInHalf(torch.nn.Module):
    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.network(x.float())
        return (
            y.to(x.dtype)
            if x.dtype == torch.float32
            else torch.full_like(y, float("inf")).to(x.dtype)
        )


def test_non_finite_reduced_precision_output_is_redone_in_fp32(compact):
    image = random_image(24, 24)
    expected, _ = run(compact, image, tile=4096)
    wrapper = InfiniteInHalf(compact.model)
    output, runner = run(compact, image, tile=4096, precision="bf16", model_for=lambda _d: wrapper)
    assert runner.fp32_fallbacks == 1
    assert np.isfinite(output).all()
    assert np.abs(output - expected).max() < 1e-5


def test_integer_output_is_assembled_in_the_output_dtype(compact):
    output, _ = run(compact, random_image(40, 40), tile=16, overlap=8, out=np.uint16)
    assert output.dtype == np.uint16 and output.max() > 255
