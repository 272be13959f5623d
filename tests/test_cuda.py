"""The paths that only a CUDA GPU takes: `pytest -m cuda` on a GPU machine
(`benchmarks/gpu/check.py` runs them there); skipped everywhere else, CI included.

Batches sized from free memory, out-of-memory handling forced with a per-process memory cap,
pinned non-blocking copies, the fp16 fallback for non-finite tiles, `--compile` with one crop
shape, tiled against whole, and the fast path against the reference modules.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import upres
from conftest import descriptor_of, tiny_compact
from test_engine_fast import Recorder, psnr, random_image
from test_fast import psnr as tensor_psnr
from test_fast import randomise_biases, tiny_networks
from upres.engine.fast import FastModule, accelerate
from upres.engine.plan import make_plan, tiles_per_batch
from upres.engine.run import TileRunner

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32() -> Iterator[None]:
    """fp32 means fp32 here: no TF32 in convolutions or matmuls, whatever the defaults."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def memory_cap() -> Iterator:
    """Caps this process's CUDA memory at `extra` bytes above what its allocator holds now
    (the cap applies to reserved memory, which the caching allocator takes in segments)."""

    def cap(extra: int) -> None:
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(CUDA).total_memory
        allowed = torch.cuda.memory_reserved(CUDA) + extra
        torch.cuda.set_per_process_memory_fraction(min(1.0, allowed / total), CUDA)

    yield cap
    torch.cuda.set_per_process_memory_fraction(1.0, CUDA)
    torch.cuda.empty_cache()


def reserved_by(run) -> int:
    """Reserved memory that `run()` needs beyond what the allocator holds before it."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(CUDA)
    before = torch.cuda.memory_reserved(CUDA)
    run()
    return torch.cuda.max_memory_reserved(CUDA) - before


def cuda_run(descriptor, pixels, plan, dtype=torch.float32):
    """A TileRunner on the GPU over the reference network in `dtype`."""
    network = copy.deepcopy(descriptor.model).to(CUDA, dtype=dtype).eval()
    recorder = Recorder(network)
    runner = TileRunner(descriptor, plan, lambda _dtype: recorder)
    return runner.run(pixels, np.dtype(np.float32)), runner, recorder


def cpu_reference(descriptor, pixels) -> np.ndarray:
    network = copy.deepcopy(descriptor.model).float().eval()
    with torch.inference_mode():
        x = torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]
        return network(x)[0].clamp(0, 1).numpy().transpose(1, 2, 0)


@pytest.fixture(scope="module")
def compact():
    return descriptor_of(tiny_compact(scale=2))


def test_tiles_are_batched_from_free_memory(compact):
    plan = make_plan(compact, CUDA, tile=64, overlap=16, precision="fp32", batch=None)
    assert plan.batch == tiles_per_batch(compact, CUDA, plan.dtype, plan.crop_shape)
    assert plan.batch > 1, "a GPU with free memory stacks 64-px tiles"
    image = random_image(300, 300)
    output, runner, recorder = cuda_run(compact, image, plan)
    assert max(shape[0] for shape in recorder.shapes) > 1
    assert runner.retries == 0
    assert psnr(output, cpu_reference(compact, image)) >= 80


def test_out_of_memory_halves_the_batch(compact, memory_cap):
    image = random_image(128, 2048)  # one row of 16 tiles: a batch of up to 14 alike
    plan = make_plan(compact, CUDA, tile=128, overlap=16, precision="fp32")
    plan = dataclasses.replace(plan, batch=16)
    # What one 128-px tile needs, measured; then room for about two of them.
    one_tile = reserved_by(
        lambda: cuda_run(compact, image[:, :128], dataclasses.replace(plan, batch=1))
    )
    memory_cap(2 * one_tile + 8 * 2**20)
    output, runner, recorder = cuda_run(compact, image, plan)
    assert max(shape[0] for shape in recorder.shapes) > 4  # tried big batches first
    assert runner.retries >= 1
    assert runner.batch < 16
    assert psnr(output, cpu_reference(compact, image)) >= 80


def test_out_of_memory_on_one_tile_halves_the_tile(compact, memory_cap):
    image = random_image(512, 512)
    plan = make_plan(compact, CUDA, tile=512, overlap=16, precision="fp32")
    small_tile = reserved_by(
        lambda: cuda_run(compact, image[:96, :96], dataclasses.replace(plan, tile=64))
    )
    memory_cap(2 * small_tile + 8 * 2**20)  # a 512-px crop's activations are ~30x larger
    output, runner, recorder = cuda_run(compact, image, plan)
    assert recorder.shapes[0][-2:] == (512, 512) and runner.retries >= 1
    assert all(shape[-1] < 512 for shape in recorder.shapes[1:])
    assert psnr(output, cpu_reference(compact, image)) >= 80


def test_crops_go_through_pinned_memory_and_arrive_intact(compact, monkeypatch):
    pinned = []
    pin = torch.Tensor.pin_memory

    def counting_pin(self, *args, **kwargs):
        pinned.append(self.shape)
        return pin(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "pin_memory", counting_pin)
    image = random_image(333, 517, seed=3)
    plan = make_plan(compact, CUDA, tile=64, overlap=16, precision="fp32", batch=None)
    output, runner, _ = cuda_run(compact, image, plan)
    assert len(pinned) >= 1 and runner.tiles_run > len(pinned)  # batches, each pinned
    assert psnr(output, cpu_reference(compact, image)) >= 80


def test_fp16_non_finite_tiles_are_redone_in_fp32():
    network = tiny_compact(scale=2)
    with torch.no_grad():  # activations far beyond fp16's 65504; fp32 holds them
        network.body[0].weight.mul_(1e6)
    descriptor = descriptor_of(network)
    image = random_image(64, 96)
    plan = make_plan(descriptor, CUDA, tile=128, precision="fp16")
    assert plan.dtype == torch.float16
    copies = {
        dtype: copy.deepcopy(descriptor.model).to(CUDA, dtype=dtype).eval()
        for dtype in (torch.float16, torch.float32)
    }
    runner = TileRunner(descriptor, plan, lambda dtype: copies[dtype])
    output = runner.run(image, np.dtype(np.float32))
    assert runner.fp32_fallbacks == 1
    assert np.isfinite(output).all()
    fp32_plan = make_plan(descriptor, CUDA, tile=128, precision="fp32")
    in_fp32, _, _ = cuda_run(descriptor, image, fp32_plan)
    assert psnr(output, in_fp32) >= 80


def test_compile_keeps_one_graph_for_every_crop_and_image(compact_checkpoint):
    torch._dynamo.reset()
    compiled = upres.load(
        compact_checkpoint, device="cuda", precision="fp32", tile=64, tile_overlap=16, compile=True
    )
    eager = upres.load(
        compact_checkpoint, device="cuda", precision="fp32", tile=64, tile_overlap=16
    )
    first = random_image(150, 211, seed=1)  # edge tiles narrower than the middle ones
    assert psnr(compiled(first), eager(first)) >= 60
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs >= 1, "nothing was compiled"
    second = random_image(97, 300, seed=2)  # another image size: the same crop shape
    assert psnr(compiled(second), eager(second)) >= 60
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_tiled_equals_whole_on_the_gpu(compact_checkpoint):
    image = random_image(200, 260, seed=4)
    tiled = upres.load(compact_checkpoint, device="cuda", precision="fp32", tile=64)
    whole = upres.load(compact_checkpoint, device="cuda", precision="fp32", tile=0)
    assert psnr(tiled(image), whole(image)) >= 80


@pytest.mark.parametrize("family", ["SwinIR", "Swin2SR", "HAT", "DAT"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fast_path_agrees_with_the_reference_on_the_gpu(family, dtype):
    reference = randomise_biases(tiny_networks()[family]).to(CUDA)
    fast = FastModule(copy.deepcopy(reference), dtype, channels_last=True)
    assert accelerate(fast) > 0
    torch.manual_seed(2)
    batch = torch.rand(2, 3, 37, 50, device=CUDA)  # padded to whole windows inside
    with torch.inference_mode():
        expected = reference(batch).float().cpu()
        got = fast(batch).float().cpu()
    assert tensor_psnr(expected, got) >= (80 if dtype == torch.float32 else 50)
