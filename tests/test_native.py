"""The native window-attention kernel: built once per machine, same maths as torch's path,
and never in the way where it cannot be built."""

from __future__ import annotations

import copy
import ctypes
import logging
import math
import platform
import shutil
import subprocess

import pytest
import torch

from upres.engine.fast import native
from upres.engine.fast.windows import attention_in_slices, shifted_border


@pytest.fixture
def kernel() -> None:
    """Skips where the kernel cannot be built (built into the test session's cache dir)."""
    if native.library() is None:
        pytest.skip("no C++ compiler: the native kernel cannot be built here")


@pytest.fixture(scope="session")
def portable_library(tmp_path_factory) -> ctypes.CDLL:
    """The kernel without AVX512-BF16's dot products: the vector code other CPUs run."""
    if platform.machine() not in ("x86_64", "AMD64") or native.library() is None:
        pytest.skip("the portable build differs only on x86, where a compiler is found")
    target = tmp_path_factory.mktemp("portable") / "window_attention.so"
    flags = [*native.FLAGS, *native.openmp_flags(), "-mno-avx512bf16"]
    command = [*native.compiler(), *flags, str(native.SOURCE)]
    subprocess.run([*command, "-o", str(target)], check=True)
    return native.bind(ctypes.CDLL(str(target)))


@pytest.fixture(params=["native", "portable"])
def build_of(request, kernel, monkeypatch) -> str:
    """The kernel as built for this machine, and (on x86) its portable build."""
    if request.param == "portable":
        lib = request.getfixturevalue("portable_library")
        monkeypatch.setattr(native, "library", lambda: lib)
    return request.param


def reference(qkv, window, shift, heads, bias, scale, border) -> torch.Tensor:
    """Torch's path in float64: roll, cut windows, attend (bias, border masks), paste, roll back."""
    qkv = qkv.double()
    _, batch, height, width, channels = qkv.shape
    (win_h, win_w), d = window, channels // heads
    rolled = torch.roll(qkv, (-shift[0], -shift[1]), (2, 3))
    rows, cols = height // win_h, width // win_w
    windows = rolled.reshape(3, batch, rows, win_h, cols, win_w, heads, d)
    windows = windows.permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(3, batch, rows * cols, heads, -1, d)
    double_border = None if border is None else (border[0], border[1].double())
    bias = None if bias is None else bias.double()
    out = attention_in_slices(*windows, bias, scale, double_border)
    out = out.view(batch, rows, cols, heads, win_h, win_w, d).permute(0, 1, 4, 2, 5, 3, 6)
    out = out.reshape(batch, height, width, channels)
    return torch.roll(out, shift, (1, 2))


def strided_qkv(batch: int, height: int, width: int, channels: int, dtype) -> torch.Tensor:
    """(3, B, H, W, C) as DAT makes it: a view of a linear's (B, H, W, 3, 2C) output, one half."""
    full = torch.randn(batch, height, width, 3, 2 * channels) * 2
    return full.to(dtype).permute(3, 0, 1, 2, 4)[..., channels:]


def psnr(expected: torch.Tensor, got: torch.Tensor) -> float:
    mse = torch.mean((expected.double() - got.double()) ** 2).item()
    peak = (expected.max() - expected.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("window", "heads", "channels", "shifted", "with_bias"),
    [
        ((8, 32), 3, 30, True, True),  # DAT-light's branches: 10-wide heads, 256 tokens
        ((32, 8), 3, 30, False, True),
        ((4, 8), 1, 12, True, True),
        ((4, 4), 2, 16, True, False),
        ((8, 8), 4, 64, False, True),  # 16-wide heads
        ((2, 8), 2, 16, True, True),
    ],
)
def test_kernel_matches_torch(build_of, window, heads, channels, shifted, with_bias, dtype) -> None:
    torch.manual_seed(0)
    batch, rows, cols = 2, 3, 2
    height, width = rows * window[0], cols * window[1]
    qkv = strided_qkv(batch, height, width, channels, dtype)
    n = window[0] * window[1]
    bias = torch.randn(heads, n, n) if with_bias else None
    shift = (window[0] // 2, window[1] // 2) if shifted else (0, 0)
    border = shifted_border(window, shift, rows, cols, qkv.device, dtype) if shifted else None
    scale = (channels // heads) ** -0.5
    assert native.supports(qkv, heads, window)

    out = torch.full((batch, height, width, 2 * channels), float("nan"), dtype=dtype)
    native.window_attention(qkv, out[..., :channels], window, shift, heads, bias, scale, border)
    expected = reference(qkv, window, shift, heads, bias, scale, border)

    assert psnr(expected, out[..., :channels]) >= (100 if dtype == torch.float32 else 50)
    assert torch.isnan(out[..., channels:]).all(), "wrote outside its half of the channels"


def fast_dat_against_reference(image: torch.Tensor) -> float:
    """PSNR of the accelerated tiny DAT (tests/test_fast.py) against its reference modules."""
    from test_fast import randomise_biases, tiny_networks
    from upres.engine.fast import accelerate

    reference_net = randomise_biases(tiny_networks()["DAT"])
    fast = copy.deepcopy(reference_net)
    accelerate(fast)
    with torch.inference_mode():
        return psnr(reference_net(image), fast(image))


def test_dat_runs_through_the_kernel_and_matches_the_reference(kernel, monkeypatch) -> None:
    calls = []
    real = native.window_attention
    monkeypatch.setattr(native, "window_attention", lambda *a: calls.append(1) or real(*a))
    assert fast_dat_against_reference(torch.rand(2, 3, 40, 56)) >= 80
    assert len(calls) == 2 * 2, "two spatial blocks, two branches each"


def test_kernel_is_built_once_and_reused(kernel, monkeypatch) -> None:
    assert native.library_path().is_file()
    native.library.cache_clear()

    def refuse(target):
        raise AssertionError("rebuilt although the cache holds it")

    monkeypatch.setattr(native, "build", refuse)
    try:
        assert native.library() is not None
        assert native.state() == "ready"
    finally:
        native.library.cache_clear()


def test_without_a_compiler_torch_does_the_work(monkeypatch, tmp_path, caplog) -> None:
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    native.library.cache_clear()
    try:
        assert native.state() == "not needed yet", "reporting it must not build it"
        with caplog.at_level(logging.WARNING, logger="upres"):
            assert native.library() is None
        assert "native kernels unavailable" in caplog.text
        assert native.state().startswith("unavailable: ")
        assert fast_dat_against_reference(torch.rand(1, 3, 32, 32)) >= 80
        assert not any(tmp_path.joinpath("kernels").glob("*.part")), "no half-written library"
    finally:
        native.library.cache_clear()


def test_switched_off_by_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("UPRES_NATIVE_KERNELS", "0")
    native.library.cache_clear()
    try:
        assert native.library() is None
        assert native.state() == "off (UPRES_NATIVE_KERNELS=0)"
        qkv = strided_qkv(1, 8, 32, 30, torch.float32)
        assert not native.supports(qkv, 3, (8, 32))
    finally:
        native.library.cache_clear()


def test_shapes_it_does_not_take_are_refused(kernel, monkeypatch) -> None:
    qkv = strided_qkv(1, 8, 32, 30, torch.float32)
    assert native.supports(qkv, 3, (8, 32))
    assert not native.supports(qkv.clone().requires_grad_(), 3, (8, 32)), "no backward"
    assert not native.supports(qkv, 1, (8, 32)), "30-wide heads: not built in"
    assert not native.supports(qkv, 3, (8, 12)), "96 tokens is fine, but 32 is not a multiple of 12"
    assert not native.supports(qkv, 3, (3, 5)), "15 tokens: not a multiple of 16"
    assert not native.supports(qkv.to(torch.float16), 3, (8, 32)), "float16: not built in"
    every_other_channel = torch.randn(3, 1, 8, 32, 60)[..., ::2]
    assert not native.supports(every_other_channel, 3, (8, 32)), "channels must be adjacent"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not native.supports(qkv, 3, (8, 32)), "torch.compile traces torch's path"


def test_a_compiler_command_of_several_words_and_a_damaged_build(kernel, monkeypatch, tmp_path):
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", f"{shutil.which('c++') or 'c++'} -DUPRES_CHECK=1")
    native.library.cache_clear()
    try:
        # A file under the library's name that is no library (e.g. built against another
        # libstdc++, or cut short by a full disk): it is rebuilt, not given up on.
        target = native.library_path()
        target.parent.mkdir(parents=True)
        target.write_bytes(b"not a shared library")
        assert native.library() is not None, "CXX is split into words, as a shell would"
        assert target.stat().st_size > 1000
        assert not list(target.parent.glob("*.part")), "no temporary file left behind"
    finally:
        native.library.cache_clear()


def test_tracing_takes_torchs_path(kernel, monkeypatch) -> None:
    qkv = strided_qkv(1, 8, 32, 30, torch.float32)
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    assert not native.supports(qkv, 3, (8, 32)), "an ONNX export traces torch's operators"


def test_channel_attention_in_fp16_normalises_before_multiplying() -> None:
    import spandrel.architectures.DAT.__arch.DAT as dat_arch

    from upres.engine.fast.dat import DATAdaptiveChannelAttention

    torch.manual_seed(0)
    reference_module = dat_arch.Adaptive_Channel_Attention(24, num_heads=2).eval()
    fast_module = copy.deepcopy(reference_module)
    fast_module.__class__ = DATAdaptiveChannelAttention
    # 1,024 tokens of large values: the raw (d x d) products pass fp16's 65,504.
    x = torch.randn(1, 1024, 24) * 20
    with torch.inference_mode():
        expected = reference_module(x, 32, 32)
        got = fast_module.half()(x.half(), 32, 32).float()
    assert torch.isfinite(got).all()
    assert psnr(expected, got) >= 40
