"""The training loop: model from the config, pairs on the fly, EMA, checkpoints, validation.

``train(config)`` runs from scratch or from ``model.resume``; a Ctrl-C (or ``stop_at``) saves a
checkpoint first, so a run can always be continued where it stopped.
"""

from __future__ import annotations

import copy
import csv
import importlib
import inspect
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from upres.train.checkpoint import (
    TrainState,
    export_inference,
    load_checkpoint,
    save_checkpoint,
)
from upres.train.config import Config, ModelConfig, TrainConfig
from upres.train.data import find_images, make_loader

CSV_FIELDS = ("step", "loss", "lr", "seconds", "val_psnr_y", "val_ssim_y")
CHECKPOINT_NAME = "last.safetensors"
Reporter = Callable[[dict], None]


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # one per step run in this call
    validations: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    export: Path | None = None
    interrupted: bool = False
    sliced: bool = False  # stopped at the time budget: resume from `checkpoint`


# -- model --------------------------------------------------------------------------------


def architecture_class(name: str) -> type[torch.nn.Module]:
    """``Swin2SR`` -> spandrel.architectures.Swin2SR.Swin2SR (any spandrel architecture)."""
    try:
        module = importlib.import_module(f"spandrel.architectures.{name}")
        return getattr(module, name)
    except (ImportError, AttributeError):
        raise ValueError(f"unknown architecture {name!r}: not a spandrel architecture") from None


def build_model(config: ModelConfig, scale: int) -> torch.nn.Module:
    cls = architecture_class(config.arch)
    kwargs = dict(config.kwargs)
    accepted = inspect.signature(cls.__init__).parameters
    for key in ("upscale", "scale"):  # the data's scale unless the config says otherwise
        if key in accepted and key not in kwargs:
            kwargs[key] = scale
    return cls(**kwargs)


# -- loss, schedule, EMA ------------------------------------------------------------------


def pixel_loss(output: torch.Tensor, target: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    if config.loss == "charbonnier":
        loss = torch.sqrt((output - target) ** 2 + config.charbonnier_eps**2).mean()
    else:
        loss = F.l1_loss(output, target)
    if config.fft_weight > 0:
        # Amplitude spectra: penalises the missing high frequencies that L1 tolerates (blur).
        amplitude = torch.fft.rfft2(output.float(), norm="ortho").abs()
        expected = torch.fft.rfft2(target.float(), norm="ortho").abs()
        loss = loss + config.fft_weight * F.l1_loss(amplitude, expected)
    return loss


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based): warm-up, then the schedule."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "multistep":
        return config.gamma ** sum(step >= milestone for milestone in config.milestones)
    if config.schedule == "cosine":
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        floor = config.min_lr / config.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for averaged, current in zip(ema.parameters(), model.parameters(), strict=True):
        averaged.lerp_(current.detach(), 1.0 - decay)
    for averaged, current in zip(ema.buffers(), model.buffers(), strict=True):
        averaged.copy_(current)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(
        model.parameters(),
        lr=config.lr,
        betas=tuple(config.betas),
        weight_decay=config.weight_decay,
    )


# -- the run ------------------------------------------------------------------------------


# Buffers that training changes under names every architecture shares (BatchNorm's).
RUNNING_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def rebuilt_buffers(model: torch.nn.Module, fresh: torch.nn.Module) -> set[str]:
    """Names of `model`'s buffers that a fresh build has too, equal (not running statistics,
    which training changes: a BatchNorm's are compared and kept if they differ)."""
    theirs = dict(fresh.named_buffers())
    return {
        name
        for name, buffer in model.named_buffers()
        if name in theirs
        and torch.equal(buffer.cpu(), theirs[name].cpu())
        and not name.endswith(RUNNING_STATISTICS)
    }


def without(state: dict[str, torch.Tensor], names: set[str]) -> dict[str, torch.Tensor]:
    return {name: value for name, value in state.items() if name not in names}


def load_with_rebuilt_buffers(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint that left out rebuilt buffers: those keep the module's own values;
    anything else missing (a parameter, a running statistic) is an error, as before."""
    own = module.state_dict()
    buffers = {name for name, _ in module.named_buffers()}
    lacking = own.keys() - saved.keys()
    if not lacking <= buffers or any(name.endswith(RUNNING_STATISTICS) for name in lacking):
        module.load_state_dict(saved)  # strict: raises, naming what is missing
    module.load_state_dict({**own, **saved})


class Trainer:
    def __init__(self, config: Config, report: Reporter | None = None) -> None:
        self.config = config
        self.report = report or (lambda row: None)
        self.out_dir = config.resolve(config.output.dir)
        self.device = pick_device(config.train.device)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        torch.manual_seed(config.train.seed)
        self.model = build_model(config.model, config.data.scale).to(self.device)
        # The buffers every build of this architecture makes alike (attention masks, index
        # tables) stay out of checkpoints: for Swin2SR-light they are 16.7 of 41 MiB.
        with torch.random.fork_rng():  # its random init must not shift the training's RNG
            self.fresh = build_model(config.model, config.data.scale)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = make_optimizer(self.model, config.train)
        self.step = 0
        self.restore()
        self.forward = torch.compile(self.model) if config.train.compile else self.model

    def restore(self) -> None:
        cfg = self.config.model
        if cfg.resume:
            state = load_checkpoint(self.config.resolve(cfg.resume))
            load_with_rebuilt_buffers(self.model, state.model)
            load_with_rebuilt_buffers(self.ema, state.ema)
            self.optimizer.load_state_dict(state.optimizer)
            self.step = state.step
            if state.rng is not None:
                torch.set_rng_state(state.rng)
        elif cfg.init:
            from spandrel import canonicalize_state_dict

            from upres.models.loader import read_state_dict  # tensors only, never pickled code

            weights = canonicalize_state_dict(read_state_dict(self.config.resolve(cfg.init)))
            self.model.load_state_dict(weights)
            self.ema.load_state_dict(weights)

    def state(self) -> TrainState:
        return TrainState(
            step=self.step,
            # Decided at each save: a buffer that training or an init file changed is kept.
            model=without(self.model.state_dict(), rebuilt_buffers(self.model, self.fresh)),
            ema=without(self.ema.state_dict(), rebuilt_buffers(self.ema, self.fresh)),
            optimizer=self.optimizer.state_dict(),
            info={
                "arch": self.config.model.arch,
                "kwargs": self.config.model.kwargs,
                "config": config_dict(self.config),
            },
            rng=torch.get_rng_state(),
        )

    def save(self) -> Path:
        path = self.out_dir / CHECKPOINT_NAME
        save_checkpoint(path, self.state())
        return path

    def train_step(self, lr: torch.Tensor, hr: torch.Tensor) -> float:
        cfg = self.config.train
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(self.step, cfg)
        lr, hr = lr.to(self.device), hr.to(self.device)
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            output = self.forward(lr)
        loss = pixel_loss(output.float(), hr, cfg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        update_ema(self.ema, self.model, cfg.ema_decay)
        self.step += 1
        return float(loss.detach())

    def validate(self) -> dict | None:
        out = self.config.output
        if not out.val_dataset:
            return None
        from upres.metrics import evaluate

        with tempfile.TemporaryDirectory(dir=self.out_dir) as folder:
            path = export_inference(Path(folder), "ema", self.ema.state_dict())
            task, extra = validation_task(self.config)
            result = evaluate(
                str(path), out.val_dataset, device=str(self.device), task=task, **extra
            )
        mean = result.mean
        return {"step": self.step, "psnr_y": mean["psnr_y"], "ssim_y": mean["ssim_y"]}

    def run(self, stop_at: int | None = None, max_seconds: float | None = None) -> TrainResult:
        """Train until ``train.steps`` (or ``stop_at``, to simulate an interruption), or
        until ``max_seconds`` of training have passed: a slice that a later call resumes."""
        cfg, out = self.config, self.config.output
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = CsvLog(self.out_dir / "log.csv", keep_until=self.step)
        result = TrainResult(step=self.step)
        end = min(cfg.train.steps, stop_at or cfg.train.steps)
        paths = find_images([cfg.resolve(f) for f in cfg.data.folders], cfg.data.max_images)
        loader = make_loader(paths, cfg.data, cfg.train.steps, start_step=self.step)
        started, window = time.perf_counter(), []
        try:
            for lr, hr in loader:
                if self.step >= end:
                    break
                if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                    result.sliced = True
                    break
                loss = self.train_step(lr, hr)
                result.losses.append(loss)
                window.append(loss)
                row = self.after_step(window, started, result)
                if row:
                    log.write(row)
                    self.report(row)
                    window = []
        except KeyboardInterrupt:
            result.interrupted = True
        result.step = self.step
        result.checkpoint = self.save()
        if self.step >= cfg.train.steps:
            result.export = export_inference(self.out_dir, out.export_name, self.ema.state_dict())
        plot_log(self.out_dir)
        return result

    def after_step(self, window: list[float], started: float, result: TrainResult) -> dict:
        """Log, validate and checkpoint when due; returns the log row (empty when not due)."""
        out, step = self.config.output, self.step
        last = step == self.config.train.steps
        row: dict = {}
        if step % out.log_every == 0 or last:
            row = {
                "step": step,
                "loss": sum(window) / len(window),
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - started, 2),
            }
        if out.validate_every and (step % out.validate_every == 0 or last):
            scores = self.validate()
            if scores:
                result.validations.append(scores)
                row = row or {"step": step, "loss": sum(window) / len(window)}
                row.update(val_psnr_y=scores["psnr_y"], val_ssim_y=scores["ssim_y"])
        if out.checkpoint_every and step % out.checkpoint_every == 0:
            self.save()
        return row


def validation_task(config: Config) -> tuple[str, dict]:
    """What to score on: the same task as the training degradation (real-world: as x-scale SR)."""
    data = config.data
    if data.degradation == "jpeg":
        return "jpeg", {"quality": round(sum(data.jpeg_quality) / 2)}
    if data.degradation == "noise":
        return "denoise", {"sigma": sum(data.noise_sigma) / 2}
    return "sr", {"scale": data.scale}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def config_dict(config: Config) -> dict:
    return {
        "model": asdict(config.model),
        "data": asdict(config.data),
        "train": asdict(config.train),
        "output": asdict(config.output),
    }


class CsvLog:
    """log.csv, appended to; a resumed run first drops rows after the step it resumes from."""

    def __init__(self, path: Path, keep_until: int) -> None:
        self.path = path
        rows = read_log(path) if path.exists() and keep_until else []
        kept = [row for row in rows if int(row["step"]) <= keep_until]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(kept)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, CSV_FIELDS).writerow(row)


def read_log(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def plot_log(folder: Path) -> Path | None:
    from upres.train.plot import plot_training

    log = folder / "log.csv"
    return plot_training(log, folder / "log.png") if log.exists() else None


def train(
    config: Config,
    report: Reporter | None = None,
    stop_at: int | None = None,
    max_seconds: float | None = None,
) -> TrainResult:
    return Trainer(config, report).run(stop_at=stop_at, max_seconds=max_seconds)
