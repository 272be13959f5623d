"""Start-up: whole-command wall times as ratios to `python -c 'import torch'`, one run.

    PYTHONPATH=src python benchmarks/startup.py [--repeats 5] [--threads 2]

Every command runs in a fresh interpreter, the commands interleaved round by round so
that a busy machine slows them alike; the median of the rounds is reported. The upscale
row is the README's example; "model run" is that example's first (cold) upscale call timed
inside a process, so `upscale - (import torch + model run)` is what the command adds
around the model. Then the largest `-X importtime` entries of `--version` and `upscale`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lighthouse.png"
PYTHON = sys.executable

# The model's own run: load outside the clock, then one cold call on the decoded pixels.
MODEL_RUN = """
import sys, time
import numpy as np
from PIL import Image
import upres
upscaler = upres.load(device="cpu")
pixels = np.asarray(Image.open(sys.argv[1]).convert("RGB"))
start = time.perf_counter()
upscaler(pixels)
print(time.perf_counter() - start)
"""


def environment(threads: int | None) -> dict[str, str]:
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "COLUMNS": "80"}
    if threads:
        env["UPRES_THREADS"] = env["OMP_NUM_THREADS"] = str(threads)
    return env


def wall_time(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return seconds


def model_run(env: dict[str, str]) -> float:
    done = subprocess.run(
        [PYTHON, "-c", MODEL_RUN, str(EXAMPLE)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return float(done.stdout.strip().splitlines()[-1])


def import_times(command: list[str], env: dict[str, str], top: int) -> list[tuple[str, float]]:
    """The `top` largest first-level imports (cumulative seconds) of one run."""
    done = subprocess.run(
        [PYTHON, "-X", "importtime", *command], capture_output=True, text=True, env=env
    )
    entries = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if match and len(match[2]) <= 2:  # "  name": imported by the program itself
            entries.append((match[3], int(match[1]) / 1e6))
    return sorted(entries, key=lambda entry: -entry[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--top", type=int, default=8, help="-X importtime entries shown")
    args = parser.parse_args()
    env = environment(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "lighthouse_x4.png"
        upres = [PYTHON, "-m", "upres"]
        commands = {
            "python -c 'import torch'": [PYTHON, "-c", "import torch"],
            "upres --version": [*upres, "--version"],
            "upres --help": [*upres, "--help"],
            "upres models": [*upres, "models"],
            "upres upscale (README example)": [
                *upres, "upscale", str(EXAMPLE), "-o", str(output), "--overwrite"
            ],
        }  # fmt: skip
        wall_time(commands["upres upscale (README example)"], env)  # converts the model once
        times: dict[str, list[float]] = {name: [] for name in commands}
        times["model run (in process)"] = []
        for _ in range(args.repeats):
            for name, command in commands.items():
                times[name].append(wall_time(command, env))
            times["model run (in process)"].append(model_run(env))
        medians = {name: statistics.median(values) for name, values in times.items()}
        torch_s = medians["python -c 'import torch'"]
        print(f"{args.repeats} rounds, median wall seconds; load average {os.getloadavg()[0]:.1f}")
        print("| command | median s | min s | / import torch |")
        print("|---|---:|---:|---:|")
        for name, values in times.items():
            ratio = medians[name] / torch_s
            print(f"| {name} | {medians[name]:.2f} | {min(values):.2f} | {ratio:.2f} |")
        upscale_s = medians["upres upscale (README example)"]
        added = upscale_s - (torch_s + medians["model run (in process)"])
        print(f"\nupscale - (import torch + model run) = {added:.2f} s (target <= 1.5 s)")
        for title, command in (
            ("upres --version", commands["upres --version"][1:]),
            ("upres upscale", commands["upres upscale (README example)"][1:]),
        ):
            print(f"\n-X importtime, {title}: largest first-level imports (cumulative s)")
            for module, seconds in import_times(command, env, args.top):
                print(f"  {module:<40} {seconds:.3f}")


if __name__ == "__main__":
    main()
