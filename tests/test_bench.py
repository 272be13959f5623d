"""`upres bench`: both paths really run, and the JSON carries what the issue asks for."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from upres.bench.measure import flops_per_pixel
from upres.bench.models import BENCH_MODELS, select


def test_bench_json_times_both_paths_of_a_model() -> None:
    command = ["bench", "--quick", "--json", "-m", "compact", "--size", "32", "--device", "cpu"]
    completed = subprocess.run(
        [sys.executable, "-m", "upres", *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = json.loads(completed.stdout)
    assert report["device"] == "cpu" and report["input"] == [32, 32]
    (row,) = report["models"]
    assert row["name"] == "Compact x4"
    for key in ("stock_mpx_s", "fast_mpx_s", "speedup", "peak_mem_mb"):
        assert isinstance(row[key], float), key
    assert row["stock_mpx_s"] > 0 and row["fast_mpx_s"] > 0
    assert row["speedup"] == pytest.approx(row["fast_mpx_s"] / row["stock_mpx_s"])
    assert row["agreement_db"] >= 50  # the fast path computed the same image
    assert 0 < row["fraction_of_peak"] < 1.5
    # Compact has no window attention: the kernel is neither needed nor built for it.
    assert report["native_attention"] in ("not needed yet", "off (UPRES_NATIVE_KERNELS=0)")


def test_an_unknown_bench_model_is_a_usage_error() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "upres", "bench", "--quick", "-m", "nonesuch"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "no benchmark model matches nonesuch" in completed.stderr


def test_every_bench_model_builds_at_its_published_size() -> None:
    sizes = {m.name: sum(p.numel() for p in m.build().parameters()) / 1e6 for m in BENCH_MODELS}
    assert sizes["SwinIR-M x4"] == pytest.approx(11.9, abs=0.1)
    assert sizes["RRDBNet x4"] == pytest.approx(16.7, abs=0.1)
    assert sizes["DAT-light x4"] == pytest.approx(0.57, abs=0.02)
    assert len(select(["swin"])) == 2  # SwinIR-M and Swin2SR


def test_flops_per_pixel_counts_the_convolutions() -> None:
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert flops_per_pixel(conv) == 2 * 3 * 8 * 9  # multiply-adds per output pixel, x2
