"""The side-by-side ONNX benchmark's machinery: interleaved rounds and the busy condition."""

from __future__ import annotations

import importlib
import multiprocessing
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "onnx_cpu.py"


def load_script():
    # Importable by name, so the spawned spinner process can find its function.
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    return importlib.import_module("onnx_cpu")


def test_rounds_interleave_engines_and_keep_the_best() -> None:
    bench = load_script()
    calls: list[str] = []
    engines = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    best = bench.best_of(engines, rounds=3)
    assert calls == ["a", "b"] * 3 and set(best) == {"a", "b"}
    assert all(0 <= seconds < 1 for seconds in best.values())


def test_busy_condition_keeps_another_process_spinning_and_stops_it() -> None:
    bench = load_script()
    with bench.condition("busy"):
        spinners = multiprocessing.active_children()
        assert len(spinners) == 1 and spinners[0].is_alive()
    assert not spinners[0].is_alive()
    with bench.condition("quiet"):
        assert not multiprocessing.active_children()
