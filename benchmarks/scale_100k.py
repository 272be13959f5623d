"""`upres batch` at 100,000 images: throughput, framework overhead, driver memory, resume,
and the loss of a Ray node, on the `bicubic` pseudo-model so the framework's cost shows.

    PYTHONPATH=src python benchmarks/scale_100k.py [--sizes 1000 10000 100000]
        [--ray-sizes 1000 10000] [--workers 1 2] [--local-workers 1] [--kill-size 100000]
        [--node-loss-size 2000]
        [--parts throughput kill node-loss] [--tmp /tmp]

Generates the inputs under a temporary folder (deleted at the end): folders of 1,000 small
images (16/24/32 px; PNG, JPEG, WebP, RGBA PNG) with 3 corrupt files per 1,000 mixed in.
Every configuration runs `upres.batch.driver.run_batch` in a fresh driver process (so its
peak RSS is its own) into a fresh DST, and prints one markdown table row as it finishes.
The local engine's model runs in worker processes (`--local-workers`); the largest one's
peak RSS is reported beside the driver's.

- overhead/item = (driver wall time - model seconds / workers) / items, where the model
  seconds are the `model_s` of every manifest row (the runner call, measured in the
  worker). Wall time runs from the call of `run_batch` (listing and the manifest included;
  the model's load and Ray's actor start too) to its return; not `ray.init`.
- kill: a driver is killed with SIGKILL once the manifest has half the items, then rerun;
  "skip seconds" is the rerun's time from start to the first item sent (manifest load,
  listing, skip check). Then every valid input must have exactly one `done` row and one
  output, every corrupt one exactly one `failed` row, and no temporary file may be left.
- node loss: a Ray cluster of a head and two worker nodes (`ray.cluster_utils.Cluster`,
  all on 127.0.0.1, one CPU each), two actors; a worker node is removed a third of the way
  through; the same exactness checks follow.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PER_FOLDER = 1000
CORRUPT_PER_FOLDER = 3
SIZES = (16, 24, 32)
FORMATS = (("png", "RGB"), ("jpg", "RGB"), ("webp", "RGB"), ("png", "RGBA"))


# --------------------------------------------------------------------------- the inputs


def sample_images() -> list[tuple[str, bytes]]:
    """A dozen distinct small images, encoded once; the tree repeats their bytes."""
    rng = np.random.default_rng(0)
    samples = []
    for size in SIZES:
        for suffix, mode in FORMATS:
            pixels = rng.integers(0, 256, (size, size, len(mode)), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels, mode).save(buffer, {"jpg": "JPEG"}.get(suffix, suffix))
            samples.append((suffix, buffer.getvalue()))
    return samples


def corrupt_files(png: bytes) -> list[tuple[str, bytes]]:
    return [("png", png[: len(png) // 2]), ("jpg", b"not an image at all"), ("webp", b"")]


def generate(root: Path, count: int) -> dict[str, int]:
    """`count` inputs in folders of 1,000 under g<k>/d<j>: 1k is g00/d000, 10k is g00."""
    samples = sample_images()
    broken = corrupt_files(samples[0][1])
    valid = corrupt = 0
    for folder_index in range(-(-count // PER_FOLDER)):
        folder = root / f"g{folder_index // 10:02d}" / f"d{folder_index % 10:03d}"
        folder.mkdir(parents=True)
        for index in range(min(PER_FOLDER, count - folder_index * PER_FOLDER)):
            if index < CORRUPT_PER_FOLDER:
                suffix, data = broken[index % len(broken)]
                corrupt += 1
            else:
                suffix, data = samples[index % len(samples)]
                valid += 1
            (folder / f"{index:04d}.{suffix}").write_bytes(data)
    return {"valid": valid, "corrupt": corrupt}


def source_for(root: Path, count: int) -> Path:
    return {1000: root / "g00" / "d000", 10000: root / "g00"}.get(count, root)


# --------------------------------------------------------------------------- one driver


def driver(args: argparse.Namespace) -> None:
    """Runs in its own process: one batch, then its facts as one JSON line on stdout."""
    import resource

    from upres.batch.driver import run_batch
    from upres.batch.item import ItemOptions, RunnerSpec

    spec = RunnerSpec(("bicubic",), device="cpu", threads=1)
    ray_options, cluster, init_seconds = None, None, 0.0
    if args.engine == "ray":
        import ray

        from upres.batch.ray_runner import RayOptions

        started = time.perf_counter()
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}}
        if args.node_loss:
            from ray.cluster_utils import Cluster

            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
            for _ in range(2):
                cluster.add_node(num_cpus=1)
            ray.init(address=cluster.address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(
                address="local",  # a fresh instance, never another cluster on this machine
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env=env,
            )
        init_seconds = time.perf_counter() - started
        ray_options = RayOptions(workers=args.workers)

    first_sent: list[float] = []
    finished = 0
    removed_at: int | None = None
    workers_seen: set[str] = set()

    def on_start(todo: int, skipped: int) -> None:
        first_sent.append(time.perf_counter())

    def on_row(row: dict) -> None:
        nonlocal finished, removed_at
        finished += 1
        workers_seen.add(row["worker"])
        if cluster is not None and removed_at is None and finished >= args.items // 3:
            node = node_running(cluster, workers_seen)
            if node is not None:  # a whole node that holds an actor, and its processes, gone
                cluster.remove_node(node, allow_graceful=False)
                removed_at = finished

    before = resource.getrusage(resource.RUSAGE_SELF)
    rss_before = peak_rss_mb()  # imports, Ray
    started = time.perf_counter()
    summary = run_batch(
        args.src,
        args.dst,
        spec,
        ItemOptions(),
        engine=args.engine,
        ray_options=ray_options,
        processes=args.workers,
        on_start=on_start,
        on_row=on_row,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    facts = summary.to_dict()
    facts |= {
        "wall": wall,
        "plan_seconds": first_sent[0] - started,
        "init_seconds": init_seconds,
        # The driver's own CPU (all its threads); on Ray that is the serial part of a batch.
        "driver_cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "peak_rss_mb": peak_rss_mb(),
        "rss_growth_mb": peak_rss_mb() - rss_before,
        "node_removed_after": removed_at,
        # Joined worker processes (the local engine's); Ray's actors are not our children.
        "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    print(json.dumps(facts), flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident size. Not ru_maxrss: Linux carries that over exec from
    the forking parent, so a small driver started by a big process would report the parent."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def node_running(cluster: object, workers: set[str]) -> object | None:
    """The worker node (not the head) whose raylet started one of these host:pid workers."""
    import psutil

    raylets = {n.all_processes["raylet"][0].process.pid: n for n in cluster.worker_nodes}
    for worker in workers:
        try:
            parents = psutil.Process(int(worker.rsplit(":", 1)[1])).parents()
        except (psutil.NoSuchProcess, ValueError):
            continue
        for parent in parents:
            if parent.pid in raylets:
                return raylets[parent.pid]
    return None


def run_driver(src: Path, dst: Path, engine: str, workers: int, items: int, **flags: bool) -> dict:
    command = [sys.executable, __file__, "--driver", str(src), str(dst), engine, str(workers)]
    command += ["--items", str(items)] + [f"--{k.replace('_', '-')}" for k, v in flags.items() if v]
    done = subprocess.run(command, capture_output=True, text=True, env=driver_env())
    if done.returncode != 0:
        raise RuntimeError(f"driver failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def driver_env() -> dict[str, str]:
    paths = [str(ROOT / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    return os.environ | {"PYTHONPATH": os.pathsep.join(paths), "RAY_DEDUP_LOGS": "0"}


# --------------------------------------------------------------------------- the checks


def manifest_rows(dst: Path) -> list[dict]:
    rows = []
    with open(dst / ".upres-manifest.jsonl", "rb") as handle:
        for line in handle:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                rows.append({"torn": True})
    return rows


def model_seconds(dst: Path) -> float:
    return sum(row.get("model_s", 0.0) for row in manifest_rows(dst))


def exactness(dst: Path, counts: dict[str, int]) -> dict[str, object]:
    """Every valid input once done and on disk, every corrupt one once failed, no temp."""
    rows = [row for row in manifest_rows(dst) if "torn" not in row]
    per_input: dict[str, int] = {}
    for row in rows:
        per_input[row["input"]] = per_input.get(row["input"], 0) + 1
    statuses = [row["status"] for row in rows]
    outputs = [p for p in dst.rglob("*") if p.is_file() and not p.name.startswith(".")]
    temporaries = [p for p in dst.rglob("*upres-tmp*")]
    exact = (
        statuses.count("done") == counts["valid"] == len(outputs)
        and statuses.count("failed") == counts["corrupt"]
        and set(per_input.values()) == {1}
        and not temporaries
    )
    return {
        "done_rows": statuses.count("done"),
        "failed_rows": statuses.count("failed"),
        "duplicate_rows": sum(n - 1 for n in per_input.values()),
        "outputs": len(outputs),
        "temporaries": len(temporaries),
        "torn_lines": len(manifest_rows(dst)) - len(rows),
        "exact": exact,
    }


def line_count(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


# --------------------------------------------------------------------------- the parts


def throughput(root: Path, work: Path, args: argparse.Namespace) -> None:
    print(
        "\n| engine | items | wall s | items/s | model ms/item | overhead ms/item |"
        " driver peak RSS MB (growth in run_batch) | largest worker RSS MB |"
        " driver CPU ms/item | failed rows |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    configs = [("local", w, size) for w in args.local_workers for size in args.sizes]
    configs += [("ray", w, size) for w in args.workers for size in args.ray_sizes]
    for engine, workers, size in configs:
        dst = work / f"out-{engine}-{workers}-{size}"
        facts = run_driver(source_for(root, size), dst, engine, workers, size)
        items = facts["done"] + facts["failed"]
        model = model_seconds(dst)
        overhead = (facts["wall"] - model / workers) / items
        label = f"{engine}, {workers} worker(s)"
        worker_rss = f"{facts['workers_peak_rss_mb']:.0f}" if engine == "local" else "-"
        print(
            f"| {label} | {items} | {facts['wall']:.1f} | {items / facts['wall']:.0f} |"
            f" {1000 * model / items:.2f} | {1000 * overhead:.2f} |"
            f" {facts['peak_rss_mb']:.0f} (+{facts['rss_growth_mb']:.0f}) | {worker_rss} |"
            f" {1000 * facts.get('driver_cpu_s', float('nan')) / items:.2f} | {facts['failed']} |",
            flush=True,
        )
        shutil.rmtree(dst)


def kill_and_resume(root: Path, work: Path, args: argparse.Namespace, counts: dict) -> None:
    size = args.kill_size
    src, dst = source_for(root, size), work / "out-kill"
    command = [sys.executable, __file__, "--driver", str(src), str(dst), "local", "1"]
    process = subprocess.Popen(
        [*command, "--items", str(size)], env=driver_env(), stdout=subprocess.DEVNULL
    )
    manifest = dst / ".upres-manifest.jsonl"
    while line_count(manifest) < size // 2 and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    recorded = line_count(manifest)
    strays = len(list(dst.rglob("*upres-tmp*")))
    facts = run_driver(src, dst, "local", 1, size)
    checks = exactness(dst, counts)
    print(
        f"\nkill -9 at {recorded} of {size} rows ({strays} temporary file(s) left by the kill);"
        f" rerun: {facts['skipped']} skipped in {facts['plan_seconds']:.1f}s (manifest load,"
        f" listing, skip check), {facts['done']} done + {facts['failed']} failed in"
        f" {facts['wall']:.1f}s, driver peak RSS {facts['peak_rss_mb']:.0f} MB"
        f" (+{facts['rss_growth_mb']:.0f} in run_batch)\n"
        f"final: {json.dumps(checks)}",
        flush=True,
    )
    shutil.rmtree(dst)


def node_loss(root: Path, work: Path, args: argparse.Namespace) -> None:
    size = args.node_loss_size
    sub = work / "node-loss-src"
    counts = generate(sub, size)
    dst = work / "out-node-loss"
    facts = run_driver(sub, dst, "ray", 2, size, node_loss=True)
    checks = exactness(dst, counts)
    print(
        f"\nnode loss: cluster of head + 2 worker nodes (1 CPU each), 2 actors, {size} items;"
        f" a worker node removed after {facts['node_removed_after']} rows; batch finished in"
        f" {facts['wall']:.1f}s with {facts['done']} done, {facts['failed']} failed\n"
        f"final: {json.dumps(checks)}",
        flush=True,
    )
    shutil.rmtree(dst)
    shutil.rmtree(sub)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--ray-sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="Ray actors.")
    parser.add_argument("--local-workers", type=int, nargs="*", default=[1])
    parser.add_argument("--kill-size", type=int, default=100000)
    parser.add_argument("--node-loss-size", type=int, default=2000)
    parser.add_argument("--parts", nargs="+", default=["throughput", "kill", "node-loss"])
    parser.add_argument("--tmp", default=tempfile.gettempdir())
    parser.add_argument("--driver", nargs=4, metavar=("SRC", "DST", "ENGINE", "WORKERS"))
    parser.add_argument("--items", type=int, default=0)
    parser.add_argument("--node-loss", action="store_true")
    args = parser.parse_args()
    if args.driver:
        args.src, args.dst, args.engine, workers = args.driver
        args.workers = int(workers)
        driver(args)
        return

    kill_size = args.kill_size if "kill" in args.parts else 0
    biggest = max([*args.sizes, *args.ray_sizes, kill_size])
    work = Path(tempfile.mkdtemp(prefix="upres-scale-", dir=args.tmp))
    try:
        started = time.perf_counter()
        counts = generate(work / "src", biggest)
        print(
            f"{biggest} inputs ({counts['corrupt']} corrupt) generated in"
            f" {time.perf_counter() - started:.0f}s under {work}; bicubic x4 on the CPU,"
            f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        # Make bicubic's one-tensor file once, outside every timing, and in a child: torch
        # in this process would inflate every driver's ru_maxrss (it survives fork + exec).
        prepare = "from upres.batch.item import RunnerSpec; RunnerSpec(('bicubic',))()"
        subprocess.run([sys.executable, "-c", prepare], check=True, env=driver_env())
        if "throughput" in args.parts:
            throughput(work / "src", work, args)
        if "kill" in args.parts:
            kill_counts = {k: v * args.kill_size // biggest for k, v in counts.items()}
            kill_and_resume(work / "src", work, args, kill_counts)
        if "node-loss" in args.parts:
            node_loss(work / "src", work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
