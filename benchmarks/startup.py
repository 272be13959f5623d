"""Start-up: whole-command wall times as ratios to `python -c 'import torch'`, one run.

    PYTHONPATH=src python benchmarks/startup.py [--repeats 5] [--threads 2]

Every command runs in a fresh interpreter, the commands interleaved round by round so
that a busy machine slows them alike; the median of the rounds is reported. The upscale
row is the README's example run with --json, whose `seconds` is the image's own run
(decode, model, encode) timed inside that same process, so
`upscale - image run - import torch` is what the command adds around torch and the model
(target: at most 1.5 s), free of the model's run-to-run noise. First, the largest
`-X importtime` entries of `--version` and `upscale`.
"""

from __future__ import annotations

import argparse
import json
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

UPSCALE = "upres upscale (README example)"
IMAGE_RUN = "  of which the image's run (--json seconds)"


def environment(threads: int | None) -> dict[str, str]:
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "COLUMNS": "80"}
    if threads:
        env["UPRES_THREADS"] = env["OMP_NUM_THREADS"] = str(threads)
    return env


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of the whole command, and its stdout."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return seconds, done.stdout


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
            UPSCALE: [*upres, "upscale", str(EXAMPLE), "-o", str(output), "--overwrite", "--json"],
        }
        timed(commands[UPSCALE], env)  # converts the model into the cache once
        for title in ("upres --version", UPSCALE):
            print(f"-X importtime, {title}: largest first-level imports (cumulative s)")
            for module, seconds in import_times(commands[title][1:], env, args.top):
                print(f"  {module:<40} {seconds:.3f}")
            print(flush=True)
        times: dict[str, list[float]] = {name: [] for name in commands}
        times[IMAGE_RUN] = []
        for round_number in range(args.repeats):
            for name, command in commands.items():
                seconds, stdout = timed(command, env)
                times[name].append(seconds)
                if name == UPSCALE:
                    times[IMAGE_RUN].append(json.loads(stdout)["images"][0]["seconds"])
            latest = ", ".join(f"{values[-1]:.2f}" for values in times.values())
            print(f"round {round_number + 1}: {latest}", flush=True)
        medians = {name: statistics.median(values) for name, values in times.items()}
        torch_s = medians["python -c 'import torch'"]
        print(
            f"\n{args.repeats} rounds, median wall seconds; load average {os.getloadavg()[0]:.1f}"
        )
        print("| command | median s | min s | / import torch |")
        print("|---|---:|---:|---:|")
        for name, values in times.items():
            ratio = medians[name] / torch_s
            print(f"| {name} | {medians[name]:.2f} | {min(values):.2f} | {ratio:.2f} |")
        pairs = zip(times[UPSCALE], times[IMAGE_RUN], strict=True)
        added = [whole - image - torch_s for whole, image in pairs]
        print(
            f"\nupscale - image run - import torch: median {statistics.median(added):.2f} s,"
            f" min {min(added):.2f} s (target <= 1.5 s)"
        )


if __name__ == "__main__":
    main()
