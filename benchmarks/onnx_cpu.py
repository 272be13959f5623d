"""upres against ONNX Runtime on the same networks, side by side, quiet and with a core busy.

    PYTHONPATH=src python benchmarks/onnx_cpu.py [--sizes 64 128] [--models compact dat]
        [--threads 2] [--rounds 3] [--conditions quiet busy] [--device cpu|cuda]

For Compact (realesr-animevideov3-x4), RRDBNet (realesrgan-x4plus), DAT-light (dat-light-x4)
and SwinIR-M (random weights) on a crop of Set14 `comic`, in one process, rounds interleaved
(every engine once per round, best of `--rounds`), seconds per image for:

  upres default   the fast path in the precision upres picks (bf16 on a CPU with AMX or
                  AVX-512 BF16)
  upres fp32      the fast path in fp32
  ORT fp32        the same network exported by `upres export` and run by ONNX Runtime
                  (CUDA provider with --device cuda, where onnxruntime-gpu is installed)
  stock fp32      the checkpoint's reference modules (upres --no-fast)
  upres free-cores  upres default with the threads upres picks from the cores free now
                  (engine/cores.py), instead of `--threads`: chosen once per condition,
                  outside the timing, as upres's own governor re-checks every ~10 s
  ORT free-cores  ONNX Runtime with that same thread count

"busy": a subprocess spins on one core for the whole condition. Every engine gets the same
`--threads`. The ratio columns are upres's speed over ONNX Runtime's (above 1: faster);
each row also gives upres default's PSNR against stock fp32.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from upres.api import Upscaler  # noqa: E402
from upres.bench.models import select as bench_models  # noqa: E402
from upres.engine.allocator import keep_freed_memory  # noqa: E402
from upres.engine.cores import choose_threads  # noqa: E402
from upres.models.export import export_onnx  # noqa: E402
from upres.models.loader import LoadedModel, descriptor_from_state_dict, load_model  # noqa: E402
from upres.models.onnx import open_session  # noqa: E402

DATASETS = Path(os.environ.get("UPRES_DATASETS", ROOT.parent / "shared" / "datasets"))
if not DATASETS.is_dir():
    DATASETS = Path("/work/shared/datasets")
COMIC = DATASETS / "Set14" / "HR" / "comic.png"
MODELS = {
    "compact": "realesr-animevideov3-x4",
    "rrdbnet": "realesrgan-x4plus",
    "dat": "dat-light-x4",
    "swinir": "SwinIR-M x4",  # random weights, from upres bench's set
}
TRANSFORMERS = {"dat", "swinir"}  # exported at a fixed shape (see models/export.py)


def comic_crop(size: int) -> np.ndarray:
    with PILImage.open(COMIC) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    if rgb.shape[0] < size or rgb.shape[1] < size:
        rgb = np.pad(rgb, ((0, size), (0, size), (0, 0)), mode="symmetric")
    return np.ascontiguousarray(rgb[:size, :size])


def load_network(key: str) -> LoadedModel:
    if key != "swinir":
        return load_model(MODELS[key])
    torch.manual_seed(0)
    network = bench_models(["swinir"])[0].build()
    descriptor = descriptor_from_state_dict(network.state_dict(), Path("swinir-m-random"))
    return LoadedModel(descriptor, "swinir-m-random", None, Path("swinir-m-random"))


def spin(parent: int, spinning: Any) -> None:
    """Keep one core busy until told to stop, or until the benchmark is gone."""
    spinning.set()
    while os.getppid() == parent:
        for _ in range(1_000_000):
            pass


@contextmanager
def condition(name: str):
    """'busy': another process keeps one core spinning while the block runs."""
    spinner = None
    if name == "busy":
        context = multiprocessing.get_context("spawn")
        spinning = context.Event()
        spinner = context.Process(target=spin, args=(os.getpid(), spinning), daemon=True)
        spinner.start()
        spinning.wait()  # a spawned child imports this module (torch) before it spins
        time.sleep(0.5)
    try:
        yield
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.join()


def best_of(engines: dict[str, Callable[[], np.ndarray]], rounds: int) -> dict[str, float]:
    best = dict.fromkeys(engines, math.inf)
    for _ in range(rounds):
        for name, run in engines.items():  # interleaved: conditions drift alike for all
            # ONNX Runtime's threads spin on for a while after a run; let them stop, or the
            # next engine (whichever it is) shares the cores with them.
            time.sleep(0.3)
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def engines_for(
    key: str, size: int, device: str, threads: int, folder: Path
) -> dict[str, Callable[[], np.ndarray]]:
    crop = comic_crop(size)
    options = {"device": device, "tile": size, "tile_overlap": 0}
    # Each engine gets its own copy: the fast path swaps modules in place.
    default = Upscaler(load_network(key), **options)
    fp32 = Upscaler(load_network(key), precision="fp32", **options)
    stock = Upscaler(load_network(key), precision="fp32", fast=False, **options)
    # Convolutional graphs take any size: one export serves every size.
    graph = folder / (f"{key}-{size}.onnx" if key in TRANSFORMERS else f"{key}.onnx")
    if not graph.exists():
        export_onnx(load_network(key), graph, tile=size, dynamic=key not in TRANSFORMERS)
    session = open_session(graph, torch.device(device), threads)
    # ONNX Runtime fixes its threads per session: one per count upres chooses, opened once.
    sessions: dict[int, object] = {}

    def ort_free() -> np.ndarray:
        count = free_threads[0]
        if count not in sessions:
            sessions[count] = open_session(graph, torch.device(device), count)
        return sessions[count].run(None, feed)[0]

    feed = {"input": np.ascontiguousarray(crop.transpose(2, 0, 1))[None]}

    def with_threads(count: int, run: Callable[[], np.ndarray]) -> np.ndarray:
        torch.set_num_threads(count)
        return run()

    return {
        "upres default": lambda: with_threads(threads, lambda: default(crop)),
        "upres fp32": lambda: with_threads(threads, lambda: fp32(crop)),
        "ORT fp32": lambda: session.run(None, feed)[0],
        "stock fp32": lambda: with_threads(threads, lambda: stock(crop)),
        "upres free-cores": lambda: with_threads(free_threads[0], lambda: default(crop)),
        "ORT free-cores": ort_free,
    }


# What upres would choose for itself in the current condition (set in main, per condition).
free_threads = [1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conditions", nargs="+", default=["quiet", "busy"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--graphs", help="Keep exported graphs in this folder (re-runs reuse).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    keep_freed_memory()  # as every upres surface does at start (engine/cores.configure)
    print(f"torch {torch.__version__}, threads {args.threads}, device {args.device},")
    print(f"load average at start {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    header = "| model | input | machine | upres default | upres fp32 | ORT fp32 | stock fp32"
    ratios = "default vs ORT | free-cores vs ORT free-cores"
    print(f"\n{header} | upres free-cores | ORT free-cores | {ratios} | default PSNR vs stock |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.graphs or temporary
        Path(folder).mkdir(parents=True, exist_ok=True)
        for key in args.models:
            for size in args.sizes:
                engines = engines_for(key, size, args.device, args.threads, Path(folder))
                agreement = psnr(engines["upres default"](), engines["stock fp32"]())
                for name in args.conditions:
                    with condition(name):
                        load = os.getloadavg()[0]
                        free_threads[0] = choose_threads().threads
                        engines["ORT free-cores"]()  # its session opens outside the timing
                        best = best_of(engines, args.rounds)
                    cells = " | ".join(f"{best[e]:.3f}" for e in engines)
                    name = f"{name}, upres chose {free_threads[0]} thread(s)"
                    ratio = best["ORT fp32"] / best["upres default"]
                    free = best["ORT free-cores"] / best["upres free-cores"]
                    print(
                        f"| {key} | {size} px | {name} (load {load:.1f}) | {cells}"
                        f" | {ratio:.2f}x | {free:.2f}x | {agreement:.1f} dB |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
