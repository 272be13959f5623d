"""Training configuration: a TOML file (stdlib ``tomllib``) read into dataclasses.

Every section and key is optional except ``[model]``; unknown keys are an error, so that a typo
never silently trains with a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from upres.errors import UpresError

DEGRADATIONS = ("bicubic", "jpeg", "noise", "realworld")
LOSSES = ("l1", "charbonnier")
SCHEDULES = ("cosine", "multistep", "constant")
OPTIMIZERS = ("adam", "adamw")


class ConfigError(UpresError):
    """A training config that cannot be used; the message names the key."""


@dataclass
class ModelConfig:
    arch: str = "Swin2SR"  # a class under spandrel.architectures (Swin2SR, SwinIR, SPAN, ...)
    kwargs: dict[str, Any] = field(default_factory=dict)
    resume: str | None = None  # a training checkpoint (.safetensors) to continue from
    init: str | None = None  # weights to start from (fine-tuning); step and optimizer restart


@dataclass
class DataConfig:
    folders: list[str] = field(default_factory=lambda: ["../shared/train"])
    scale: int = 4
    degradation: str = "bicubic"
    crop: int = 64  # HR crop side; the LR patch is crop // scale
    batch_size: int = 16
    workers: int = 1
    jpeg_quality: list[int] = field(default_factory=lambda: [10, 40])  # range for "jpeg"
    noise_sigma: list[float] = field(default_factory=lambda: [0.0, 50.0])  # range for "noise"
    max_images: int | None = None  # use only the first N images (quick runs, tests)
    seed: int = 0


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 2e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 0
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)  # for "multistep"
    gamma: float = 0.5
    min_lr: float = 1e-7
    loss: str = "l1"
    charbonnier_eps: float = 1e-3
    fft_weight: float = 0.0  # weight of the FFT amplitude L1 term; 0 turns it off
    ema_decay: float = 0.999
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    bf16: bool = False
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 leaves torch's default


@dataclass
class OutputConfig:
    dir: str = "runs/train"
    log_every: int = 10
    checkpoint_every: int = 500
    validate_every: int = 500
    val_dataset: str | None = "Set5"  # a benchmark name or folder; none to skip validation
    export_name: str = "model"


@dataclass
class Config:
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    source: Path | None = None  # the file it came from; relative paths are resolved from it

    def resolve(self, path: str) -> Path:
        """Relative paths in a config are relative to the config file's folder."""
        candidate = Path(path).expanduser()
        if candidate.is_absolute() or self.source is None:
            return candidate
        return (self.source.parent / candidate).resolve()


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "output": OutputConfig,
}


def load_config(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Read a TOML config; ``overrides`` ({section: {key: value}}) win over the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    config = config_from_dict(raw, str(path))
    config.source = path.resolve()
    return config


def config_from_dict(raw: dict[str, Any], where: str = "config") -> Config:
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; use {list(SECTIONS)}")
    if "model" not in raw:
        raise ConfigError(f"{where}: a [model] section is required")
    parts = {name: build_section(name, raw.get(name, {}), where) for name in SECTIONS}
    config = Config(**parts)
    check(config, where)
    return config


def build_section(name: str, values: dict[str, Any], where: str) -> Any:
    cls = SECTIONS[name]
    known = {item.name for item in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in [{name}]: {sorted(unknown)}")
    return cls(**values)


def check(config: Config, where: str) -> None:
    choices = [
        ("data.degradation", config.data.degradation, DEGRADATIONS),
        ("train.loss", config.train.loss, LOSSES),
        ("train.schedule", config.train.schedule, SCHEDULES),
        ("train.optimizer", config.train.optimizer, OPTIMIZERS),
    ]
    for key, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"{where}: {key} = {value!r}; choose one of {list(allowed)}")
    if config.data.crop % max(config.data.scale, 1):
        raise ConfigError(f"{where}: data.crop must be a multiple of data.scale")
    if config.train.steps < 1 or config.data.batch_size < 1:
        raise ConfigError(f"{where}: train.steps and data.batch_size must be positive")
    if config.data.degradation in ("jpeg", "noise") and config.data.scale != 1:
        raise ConfigError(f"{where}: {config.data.degradation} restoration needs data.scale = 1")
