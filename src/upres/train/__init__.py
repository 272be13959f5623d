"""Training super-resolution models: ``upres train CONFIG`` (see configs/*.toml).

config: the TOML format; data: degradations and the on-the-fly dataset; loop: the trainer;
checkpoint: safetensors checkpoints and inference exports; plot: the loss/PSNR chart.
"""

from upres.train.config import Config, ConfigError, load_config
from upres.train.loop import TrainResult, train

__all__ = ["Config", "ConfigError", "TrainResult", "load_config", "train"]
