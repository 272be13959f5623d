"""The fast path computes the same thing as the reference modules, with less waste."""

from __future__ import annotations

import copy
import math

import pytest
import spandrel.architectures.SwinIR.__arch.SwinIR as swinir_arch
import torch
from spandrel.architectures.DAT import DAT
from spandrel.architectures.HAT import HAT
from spandrel.architectures.Swin2SR import Swin2SR
from spandrel.architectures.SwinIR import SwinIR

from upres.engine.fast import FastModule, accelerate
from upres.engine.fast.windows import border_mask, border_windows


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    mse = torch.mean((reference.double() - other.double()) ** 2).item()
    peak = (reference.max() - reference.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def randomise_biases(network: torch.nn.Module) -> torch.nn.Module:
    """Random init leaves position biases near zero and attention nearly uniform, where even
    a missing mask costs DAT only 15 dB: make both matter, so that a wrong mask shows."""
    torch.manual_seed(1)
    for name, parameter in network.named_parameters():
        if "relative_position_bias_table" in name or "logit_scale" in name:
            parameter.data.normal_(0, 1.0)
        elif name.endswith("temperature"):  # DAT's channel attention, per head
            parameter.data.uniform_(0.5, 3.0)
        elif ".attn." in name and ("qkv" in name or ".pos." in name):
            parameter.data.normal_(0, 0.5)
    return network.eval()


def tiny_networks() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    common = dict(window_size=8, img_range=1.0, mlp_ratio=2, upscale=2, upsampler="pixelshuffle")
    swin = dict(img_size=32, depths=[2, 2], embed_dim=24, num_heads=[2, 2], **common)
    return {
        "SwinIR": SwinIR(**swin),
        "Swin2SR": Swin2SR(**swin),
        # depth 4: spatial, channel, shifted spatial, channel attention
        "DAT": DAT(
            img_size=32,
            embed_dim=24,
            split_size=[4, 8],
            depth=[4],
            num_heads=[2],
            expansion_factor=2.0,
            upscale=2,
            img_range=1.0,
            upsampler="pixelshuffle",
        ),
        "HAT": HAT(
            img_size=32,
            depths=[2],
            embed_dim=24,
            num_heads=[2],
            compress_ratio=3,
            squeeze_factor=6,
            **common,
        ),
    }


@pytest.mark.parametrize("family", ["SwinIR", "Swin2SR", "HAT", "DAT"])
@pytest.mark.parametrize("size", [(32, 32), (40, 56), (8, 24), (37, 50)])
@pytest.mark.parametrize("kernel", ["native", "slices", "sdpa"])
def test_fp32_fast_path_matches_the_reference(
    family: str, size: tuple[int, int], kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from upres.engine.fast import native, windows

    calls = []
    if kernel == "native":  # DAT's spatial attention, fused (engine/fast/native)
        if family != "DAT" or native.library() is None:
            pytest.skip("the native kernel serves DAT, where a C++ compiler is found")
        real = native.window_attention
        monkeypatch.setattr(native, "window_attention", lambda *a: calls.append(1) or real(*a))
    else:
        monkeypatch.setattr(native, "supports", lambda *args: False)
        monkeypatch.setattr(windows, "choose_kernel", lambda q, k: kernel)
    reference = randomise_biases(tiny_networks()[family])
    fast = copy.deepcopy(reference)
    assert accelerate(fast) > 0
    torch.manual_seed(2)
    batch = torch.rand(2, 3, *size)
    with torch.inference_mode():
        expected = reference(batch)
        got = fast(batch)
        again = fast(batch)  # second call: cached biases and masks
    assert got.shape == expected.shape
    assert psnr(expected, got) >= 80
    assert torch.equal(got, again)
    assert bool(calls) == (kernel == "native"), "the kernel under test is the one that ran"


@pytest.mark.parametrize("family", ["SwinIR", "Swin2SR", "HAT", "DAT"])
def test_bf16_fast_path_stays_within_50_db(family: str) -> None:
    reference = tiny_networks()[family].eval()
    fast = FastModule(copy.deepcopy(reference), torch.bfloat16, channels_last=False)
    accelerate(fast)
    image = torch.rand(1, 3, 48, 40)
    with torch.inference_mode():
        assert psnr(reference(image), fast(image)) >= 50


def test_border_mask_equals_the_reference_mask() -> None:
    block = swinir_arch.SwinTransformerBlock(
        dim=8, input_resolution=(16, 16), num_heads=2, window_size=8, shift_size=4
    )
    rows, cols = 3, 5
    full = block.calculate_mask((rows * 8, cols * 8))
    index = border_windows(rows, cols)
    mask = border_mask(8, 4, rows, cols, torch.device("cpu"), torch.float32)
    assert torch.equal(mask, full[index])
    untouched = [i for i in range(rows * cols) if i not in index]
    assert not full[untouched].any(), "windows outside the border need no mask"


def test_dat_border_masks_equal_the_reference_masks() -> None:
    import spandrel.architectures.DAT.__arch.DAT as dat_arch

    from upres.engine.fast.dat import DATAdaptiveSpatialAttention

    network = tiny_networks()["DAT"]
    accelerate(network)
    module = next(m for m in network.modules() if isinstance(m, DATAdaptiveSpatialAttention))
    height, width = 24, 40  # 4x8 windows: 6x5 of them in branch 0, 3x10 in branch 1
    full = dat_arch.Adaptive_Spatial_Attention.calculate_mask(module, height, width)
    borders = module.border_masks(height, width, torch.float32)
    for (index, mask), reference in zip(borders, full, strict=True):
        assert torch.equal(mask, reference[index])
        untouched = [i for i in range(len(reference)) if i not in index]
        assert untouched and not reference[untouched].any(), "only border windows are masked"


def test_fast_blocks_never_build_the_full_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    network = randomise_biases(tiny_networks()["SwinIR"])
    accelerate(network)

    def refuse(self, x_size):
        raise AssertionError("full-size mask built")

    monkeypatch.setattr(swinir_arch.SwinTransformerBlock, "calculate_mask", refuse)
    with torch.inference_mode():
        assert network(torch.rand(1, 3, 48, 64)).shape == (1, 3, 96, 128)


def test_accelerated_network_keeps_its_state_dict() -> None:
    network = tiny_networks()["Swin2SR"]
    before = {k: v.clone() for k, v in network.state_dict().items()}
    accelerate(network)
    after = network.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("family", ["Swin2SR", "DAT"])
def test_a_bias_cached_under_bf16_does_not_leak_into_fp32(family: str) -> None:
    # One fp32 network serves every precision: the MLP-made bias must be cached exactly.
    reference = randomise_biases(tiny_networks()[family])
    network = copy.deepcopy(reference)
    accelerate(network)
    image = torch.rand(1, 3, 40, 56)
    with torch.inference_mode():
        FastModule(network, torch.bfloat16)(image)
        after_bf16 = FastModule(network, torch.float32)(image)
        assert psnr(reference(image), after_bf16) >= 80


@pytest.mark.parametrize("family", ["SwinIR", "Swin2SR", "HAT", "DAT"])
def test_attention_made_one_window_at_a_time_matches_the_reference(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from upres.engine.fast import native, windows

    # The smallest slice (one window), so border masks fall in many slices, some in none.
    monkeypatch.setattr(windows, "SCORES_BYTES", 1)
    monkeypatch.setattr(windows, "choose_kernel", lambda q, k: "slices")
    monkeypatch.setattr(native, "supports", lambda *args: False)
    reference = randomise_biases(tiny_networks()[family])
    fast = copy.deepcopy(reference)
    assert accelerate(fast) > 0
    if family == "DAT":
        swapped = {type(module).__name__ for module in fast.modules()}
        assert {"DATSpatialAttention", "DATSpatialGate", "DATAdaptiveChannelAttention"} <= swapped
    batch = torch.rand(2, 3, 40, 56)
    with torch.inference_mode():
        assert psnr(reference(batch), fast(batch)) >= 80
