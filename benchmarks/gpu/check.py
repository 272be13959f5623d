"""Everything a GPU session must run, as one command that fits its lease.

    python benchmarks/gpu/check.py OUT                      # on the GPU machine
    python benchmarks/gpu/check.py OUT --device cpu --tiny  # here: the same steps, tiny sizes

Parts (`--parts`, default all but train):
- tests: `pytest -m cuda tests/test_cuda.py` (they skip without CUDA);
- bench: `upres bench --json` at 256 px and at 1024 px (where the planner picks the tile);
- photo: a 2000x1500 photo made of benchmark images, x4 through the CLI per model: wall
  time, peak GPU memory, peak host RSS, GPU busy share; and in-process the decode, model and
  encode times apart;
- video: a 720p clip made of benchmark images, x4 with realesr-animevideov3-x4 through the
  CLI: frames per second end to end, decode and encode included, GPU busy share;
- train: `upres train` for `--train-minutes`, resuming `--resume` when it exists, then
  `upres eval` of the result on Set5.

Each part's result goes to OUT/summary.json as soon as the part ends, so a run cut short
keeps what it finished; every command's output goes to OUT/check.log, the training's
checkpoint and model to OUT/train/ (what the device tool brings back: a few files). A table
is printed last. Images come from `--images` (benchmarks/gpu/prepare.sh fills device/).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("tests", "bench", "photo", "video", "train")
PHOTO_MODELS = ("dat-light-x4", "realesrgan-x4plus")
VIDEO_MODEL = "realesr-animevideov3-x4"


# -- sizes ----------------------------------------------------------------------------


def sizes(tiny: bool) -> dict:
    if tiny:  # the same steps on a CPU in about a minute
        return dict(bench=[32], bench_models=["Compact"], photo=(96, 72), video=(64, 36, 6))
    return dict(bench=[256, 1024], bench_models=[], photo=(2000, 1500), video=(1280, 720, 300))


# -- measuring a child process ------------------------------------------------------------


class GpuSampler:
    """GPU busy share (NVML utilisation, sampled every 50 ms) while a block runs."""

    def __init__(self, device: str) -> None:
        self.samples: list[int] = []
        self.handle = None
        if device.startswith("cuda"):
            with contextlib.suppress(Exception):  # no NVML: no busy share, the rest runs
                import pynvml

                pynvml.nvmlInit()
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.stop = threading.Event()

    def __enter__(self) -> GpuSampler:
        if self.handle is not None:
            threading.Thread(target=self._sample, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()

    def _sample(self) -> None:
        import pynvml

        while not self.stop.wait(0.05):
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    @property
    def busy_percent(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def run_child(command: list[str], log: Path, device: str) -> dict:
    """Run a command; wall time, exit code, peak RSS (polled) and GPU busy share."""
    started = time.perf_counter()
    peak_rss = 0
    with log.open("a") as sink, GpuSampler(device) as gpu:
        sink.write(f"$ {' '.join(command)}\n")
        sink.flush()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, text=True, cwd=ROOT)
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.append(child.stdout.read()), daemon=True)
        reader.start()
        while child.poll() is None:
            with contextlib.suppress(psutil.Error):  # it may end between poll and read
                peak_rss = max(peak_rss, psutil.Process(child.pid).memory_info().rss)
            time.sleep(0.05)
        reader.join()
        sink.write(output[0] if output else "")
    return {
        "command": " ".join(command),
        "exit_code": child.returncode,
        "wall_s": round(time.perf_counter() - started, 3),
        "peak_host_rss_mb": round(peak_rss / 2**20, 1),
        "gpu_busy_percent": gpu.busy_percent,
        "stdout": output[0] if output else "",
    }


def image_row(result: dict) -> dict:
    """The first image's row of an `upres upscale --json` run (empty if it printed none)."""
    report = json.loads(result.pop("stdout") or "null")
    return ((report or {}).get("images") or [{}])[0]


def upres(*args: str) -> list[str]:
    return [sys.executable, "-m", "upres", *args]


# -- inputs made of benchmark images ---------------------------------------------------------


def benchmark_images(folder: Path) -> list[Image.Image]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".bmp"})
    if not paths:
        raise SystemExit(f"{folder}: no benchmark images (benchmarks/gpu/prepare.sh copies some)")
    return [Image.open(p).convert("RGB") for p in paths]


def mosaic(images: list[Image.Image], width: int, height: int) -> Image.Image:
    """A photo-like canvas: benchmark images side by side, each resized to a cell."""
    columns = max(1, round((len(images) * width / height) ** 0.5))
    rows = -(-len(images) // columns)
    cell_w, cell_h = -(-width // columns), -(-height // rows)
    canvas = Image.new("RGB", (width, height))
    for index, image in enumerate(images):
        x, y = index % columns * cell_w, index // columns * cell_h
        canvas.paste(image.resize((cell_w, cell_h), Image.Resampling.BICUBIC), (x, y))
    return canvas


def make_clip(images: list[Image.Image], path: Path, width: int, height: int, frames: int) -> None:
    """A clip that pans slowly across the mosaic (motion, as real footage has), H.264."""
    import av

    canvas = np.asarray(mosaic(images, width * 2, height))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            left = round(index / max(1, frames - 1) * width)
            frame = av.VideoFrame.from_ndarray(canvas[:, left : left + width], format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# -- parts -----------------------------------------------------------------------------


def part_tests(args: argparse.Namespace, out: Path) -> dict:
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-q", "-rs"]
    result = run_child(command, out / "check.log", args.device)
    lines = [line for line in result.pop("stdout").splitlines() if line.strip()]
    result["summary"] = lines[-1] if lines else ""
    result["ok"] = result["exit_code"] == 0
    return result


def part_bench(args: argparse.Namespace, out: Path) -> dict:
    plan = sizes(args.tiny)
    runs = {}
    for size in plan["bench"]:
        extra = ["--quick"] if args.tiny else ["--repeats", "3"]
        for name in plan["bench_models"]:
            extra += ["-m", name]
        command = upres("bench", "--json", "--device", args.device, "--size", str(size), *extra)
        result = run_child(command, out / "check.log", args.device)
        report = json.loads(result.pop("stdout") or "null")
        runs[str(size)] = {**result, "report": report}
    return {"ok": all(r["exit_code"] == 0 for r in runs.values()), "runs": runs}


def part_photo(args: argparse.Namespace, out: Path, work: Path, images: list) -> dict:
    width, height = sizes(args.tiny)["photo"]
    photo = work / "photo.png"
    mosaic(images, width, height).save(photo)
    models = {}
    for name in args.photo_models:
        target = work / f"photo-{name}.png"
        command = upres("upscale", str(photo), "-m", name, "-o", str(target), "--json")
        result = run_child([*command, "--device", args.device], out / "check.log", args.device)
        row = image_row(result)
        result |= {
            "status": row.get("status"),
            "upres_seconds": row.get("seconds"),
            "peak_device_mb": (row.get("peak_device_bytes") or 0) / 2**20 or None,
            "output_size": row.get("output_size"),
            "stages_s": stage_times(photo, target, name, args.device),
        }
        target.unlink(missing_ok=True)
        models[name] = result
    return {"ok": all(m["status"] == "done" for m in models.values()), "models": models}


def stage_times(photo: Path, target: Path, name: str, device: str) -> dict:
    """Decode, model and encode timed apart, in this process (the model loaded first)."""
    import torch

    import upres
    from upres.io.image import read_image, write_image

    upscaler = upres.load(name, device=device)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    upscaler.upscale_image(read_image(photo))  # warm-up: kernels chosen, memory cached
    synchronize()
    started = time.perf_counter()
    image = read_image(photo)
    decoded = time.perf_counter()
    result, _report = upscaler.upscale_image(image)
    synchronize()
    inferred = time.perf_counter()
    write_image(result, target.with_suffix(".stage.png"))
    encoded = time.perf_counter()
    target.with_suffix(".stage.png").unlink(missing_ok=True)
    del upscaler  # the next part plans from free GPU memory: give this model's back
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "decode": round(decoded - started, 3),
        "model": round(inferred - decoded, 3),
        "encode": round(encoded - inferred, 3),
    }


def part_video(args: argparse.Namespace, out: Path, work: Path, images: list) -> dict:
    width, height, frames = sizes(args.tiny)["video"]
    clip = work / "clip.mp4"
    make_clip(images, clip, width, height, frames)
    target = work / "clip-x4.mp4"
    command = upres("upscale", str(clip), "-m", VIDEO_MODEL, "-o", str(target), "--json")
    result = run_child([*command, "--device", args.device], out / "check.log", args.device)
    row = image_row(result)
    seconds = row.get("seconds")
    result |= {
        "status": row.get("status"),
        "frames": frames,
        "input_size": [width, height],
        "output_size": row.get("output_size"),
        # The whole command (process start and model load included), and upres's own time
        # for the clip (decode, inference and encode).
        "fps_end_to_end": round(frames / result["wall_s"], 2),
        "fps_in_upres": round(frames / seconds, 2) if seconds else None,
    }
    target.unlink(missing_ok=True)
    return {"ok": result["status"] == "done", **result}


def train_config(args: argparse.Namespace, work: Path) -> Path:
    """The config itself, or a copy of it reading its photos from `--train-data`."""
    if args.train_data is None:
        return args.train_config
    text = re.sub(
        r"^folders\s*=.*$",
        f"folders = {json.dumps([str(args.train_data.resolve())])}",
        args.train_config.read_text(),
        flags=re.MULTILINE,
    )
    copy = work / args.train_config.name
    copy.write_text(text)
    return copy


def part_train(args: argparse.Namespace, out: Path, work: Path) -> dict:
    """One training slice; its checkpoint and model come back in OUT/train/."""
    config = train_config(args, work)
    command = upres("train", str(config), "--minutes", str(args.train_minutes))
    command += ["--out", str(work / "train"), "--device", args.device]
    if args.resume and Path(args.resume).is_file():
        command += ["--resume", str(args.resume)]
    if args.tiny:
        command += ["--steps", "2"]
    result = run_child(command, out / "check.log", args.device)
    result["log_tail"] = result.pop("stdout").strip().splitlines()[-3:]
    kept = out / "train"
    kept.mkdir(exist_ok=True)
    if (work / "train" / "log.csv").is_file():
        shutil.copy2(work / "train" / "log.csv", kept / "log.csv")
    for name in ("last.safetensors", "model.safetensors"):
        if (work / "train" / name).is_file():
            result[name] = bring_back(work / "train" / name, kept)
    if (work / "train" / "model.safetensors").is_file():
        scale = tomllib.loads(args.train_config.read_text())["data"]["scale"]
        model = str(work / "train" / "model.safetensors")
        command = upres("eval", "-m", model, "--dataset", "Set5", "--scale", str(scale))
        scored = run_child(
            [*command, "--json", "--device", args.device], out / "check.log", args.device
        )
        result["set5"] = json.loads(scored.pop("stdout") or "null")
    return {"ok": result["exit_code"] == 0 and bool(result.get("set5")), **result}


PART_BYTES = 15 * 2**20  # the device tool brings back files of at most 16 MiB


def bring_back(path: Path, folder: Path) -> list[str]:
    """`path` gzipped into `folder`, in parts of at most 15 MiB (`cat NAME.gz.* | gunzip`)."""
    packed = gzip.compress(path.read_bytes(), compresslevel=6)
    names = []
    for index, start in enumerate(range(0, len(packed), PART_BYTES)):
        name = f"{path.name}.gz.{index:02d}"
        (folder / name).write_bytes(packed[start : start + PART_BYTES])
        names.append(name)
    return names


# -- the run -------------------------------------------------------------------------------


@contextlib.contextmanager
def recorded(summary: dict, name: str, out: Path) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except Exception as error:  # one part failing must not lose the others' results
        summary[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    summary[name]["part_seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def environment(device: str) -> dict:
    import torch

    facts = {"python": sys.version.split()[0], "torch": torch.__version__, "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
    facts["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return facts


def table(summary: dict) -> str:
    lines = ["part     ok     seconds  figures"]
    for name in PARTS:
        part = summary.get(name)
        if part is None:
            continue
        figures = ""
        if name == "tests":
            figures = part.get("summary", "")
        elif name == "bench":
            for size, run in part.get("runs", {}).items():
                for model in (run.get("report") or {}).get("models", []):
                    share = model.get("fraction_of_peak")
                    figures += (
                        f"\n    {size:>5} px {model['name']:<14} {model['speedup']:.2f}x"
                        f" {model['fast_mpx_s']:.3f} Mpx/s"
                        + (f" {share * 100:.1f}% of peak" if share else "")
                        + f" {model['agreement_db']:.1f} dB"
                    )
        elif name == "photo":
            for model, row in part.get("models", {}).items():
                figures += (
                    f"\n    {model:<20} wall {row['wall_s']} s, stages {row['stages_s']},"
                    f" GPU {row['peak_device_mb']} MB, RSS {row['peak_host_rss_mb']} MB,"
                    f" busy {row['gpu_busy_percent']}%"
                )
        elif name == "video":
            figures = f"{part.get('fps_end_to_end')} fps, busy {part.get('gpu_busy_percent')}%"
        elif name == "train" and part.get("set5"):
            figures = f"Set5 PSNR-Y {part['set5']['mean']['psnr_y']:.2f} dB"
        if "error" in part:
            figures = part["error"]
        lines.append(f"{name:<8} {part.get('ok')!s:<6} {part.get('part_seconds', 0):>7}  {figures}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a test on a CPU")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS[:4]))
    parser.add_argument("--images", type=Path, default=ROOT / "device" / "images")
    parser.add_argument("--photo-models", nargs="+", default=list(PHOTO_MODELS))
    parser.add_argument("--train-config", type=Path, default=ROOT / "configs/swin2sr-light-x4.toml")
    parser.add_argument("--train-data", type=Path, default=None, help="photos to train on")
    parser.add_argument("--train-minutes", type=float, default=3.0)
    parser.add_argument("--resume", type=Path, default=None)
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="upres-check-"))  # inputs and outputs: not brought back
    summary: dict = {"environment": environment(args.device)}
    images = benchmark_images(args.images) if {"photo", "video"} & set(args.parts) else []
    for name in args.parts:
        with recorded(summary, name, out):
            if name == "tests":
                summary[name] = part_tests(args, out)
            elif name == "bench":
                summary[name] = part_bench(args, out)
            elif name == "photo":
                summary[name] = part_photo(args, out, work, images)
            elif name == "video":
                summary[name] = part_video(args, out, work, images)
            elif name == "train":
                summary[name] = part_train(args, out, work)
    shutil.rmtree(work, ignore_errors=True)
    print(table(summary))
    return 0 if all(summary[name].get("ok") for name in args.parts) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
