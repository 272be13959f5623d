"""Batch throughput: in-process vs Ray Data with 1 and 2 actors, on the same images.

    PYTHONPATH=src python benchmarks/batch_throughput.py [--images 20] [--size 64]
        [--model realesr-animevideov3-x4] [--device cpu] [--workers 1 2]

Crops real photographs into a temporary SRC, runs `upres.batch.driver.run_batch` once per
configuration into a fresh DST, and prints one markdown table; every figure is from this
run. Seconds include loading the model in each actor (what a user waits for), not
`ray.init` (started once, before the first Ray row, and timed on its own); "steady" counts
from the first image started to the last finished (worker-side timestamps from the
manifest rows), leaving model loading and actor start-up out.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from upres.batch.driver import run_batch
from upres.batch.item import ItemOptions, RunnerSpec

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"


def write_crops(folder: Path, count: int, size: int) -> None:
    """`count` size x size crops, taken in turn from Set14's photographs."""
    sources = sorted((DATASETS / "Set14" / "HR").glob("*.png"))
    folder.mkdir(parents=True)
    for index in range(count):
        with Image.open(sources[index % len(sources)]) as image:
            rgb = image.convert("RGB")
        step = index // len(sources)
        left, top = 16 + step * size, 16 + step * size
        rgb.crop((left, top, left + size, top + size)).save(folder / f"{index:03d}.png")


def start_ray(cpus: int) -> float:
    import ray

    started = time.perf_counter()
    src = str(ROOT / "src")
    paths = [src, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}},
    )
    return time.perf_counter() - started


def measure(src: Path, work: Path, label: str, spec: RunnerSpec, engine: str, ray: object) -> dict:
    spans: list[tuple[float, float]] = []  # (started, finished) per image, workers' clocks
    summary = run_batch(
        str(src),
        str(work / label),
        spec,
        ItemOptions(),
        engine=engine,
        ray_options=ray,
        on_row=lambda row: spans.append((row["finished_at"] - row["seconds"], row["finished_at"])),
    )
    assert summary.failed == 0, summary.errors
    # Steady state: from the first image started to the last finished, as the workers saw
    # it (rows reach the driver in bursts), so model loading and actor start are left out.
    span = max(end for _, end in spans) - min(start for start, _ in spans)
    steady = len(spans) / span if span > 0 else float("nan")
    return {"label": label, "steady": steady, **summary.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--model", default="realesr-animevideov3-x4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from upres.batch.ray_runner import RayOptions

    spec = RunnerSpec((args.model,), device=args.device)
    spec()  # convert/cache the weights once, so no configuration pays for it
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_crops(work / "src", args.images, args.size)
        rows = [measure(work / "src", work, "local (in-process)", spec, "local", None)]
        init_seconds = start_ray(max(os.cpu_count() or 1, max(args.workers)))
        for workers in args.workers:
            options = RayOptions(workers=workers)
            rows.append(
                measure(work / "src", work, f"ray, {workers} worker(s)", spec, "ray", options)
            )
    cores, load = os.cpu_count(), os.getloadavg()[0]
    print(
        f"{args.images} images of {args.size}x{args.size}, {args.model} on {args.device},"
        f" {cores} cores (load average {load:.1f}); ray.init took {init_seconds:.1f}s\n"
    )
    print("| engine | images | seconds | images/s | output megapixels/s | steady images/s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['label']} | {row['done']} | {row['seconds']:.1f} |"
            f" {row['images_per_s']:.2f} | {row['megapixels_per_s']:.3f} |"
            f" {row['steady']:.2f} |"
        )


if __name__ == "__main__":
    main()
