"""Training pairs made on the fly from folders of HR images.

Each sample is drawn from its own random generator seeded by (seed, sample index), so a run
sees the same pairs whatever the number of workers, and a resumed run continues with exactly
the samples an uninterrupted one would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from upres.metrics.degradations import jpeg_compress
from upres.metrics.imresize import imresize
from upres.train.config import DataConfig

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
Rng = np.random.Generator


def find_images(folders: Sequence[Path], max_images: int | None = None) -> list[Path]:
    """All images under the folders, recursively, in a stable order."""
    paths: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: training folder not found")
        paths += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if "datasets" in {part for folder in folders for part in folder.resolve().parts}:
        # The benchmarks live there; training on them would make every score a lie.
        raise ValueError("refusing to train on a benchmark folder (a path through 'datasets')")
    if not paths:
        raise FileNotFoundError(f"no images in {[str(f) for f in folders]}")
    return paths[:max_images] if max_images else paths


def read_rgb(path: Path) -> np.ndarray:
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise ValueError(f"{path}: cannot decode")
    return np.ascontiguousarray(pixels[..., ::-1])


# -- augmentation -------------------------------------------------------------------------


def random_crop(image: np.ndarray, side: int, rng: Rng) -> np.ndarray:
    """A side x side crop; images smaller than that are mirror-padded first."""
    pad_h, pad_w = max(0, side - image.shape[0]), max(0, side - image.shape[1])
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    top = int(rng.integers(0, image.shape[0] - side + 1))
    left = int(rng.integers(0, image.shape[1] - side + 1))
    return image[top : top + side, left : left + side]


def flip_rotate(image: np.ndarray, rng: Rng) -> np.ndarray:
    """One of the 8 dihedral transforms: the symmetries natural images do not prefer."""
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(np.rot90(image, int(rng.integers(0, 4))))


# -- degradations (float images in [0, 1], H x W x 3) ------------------------------------


def quantise(image: np.ndarray) -> np.ndarray:
    """Round to 8-bit levels: benchmark inputs are 8-bit files, so training inputs are too."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    return quantise(imresize(hr, 1.0 / scale))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    encoded = jpeg_compress((quantise(image) * 255.0).astype(np.uint8), quality)
    return encoded.astype(np.float64) / 255.0


def gaussian_noise(image: np.ndarray, sigma: float, rng: Rng) -> np.ndarray:
    """sigma in 8-bit units, added unclipped like the denoising benchmarks."""
    return image + rng.normal(0.0, sigma / 255.0, image.shape)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def resize_random(image: np.ndarray, size: tuple[int, int], rng: Rng) -> np.ndarray:
    """Resize with a randomly chosen kernel, as real pipelines never agree on one."""
    kernel = rng.choice([cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC])
    return cv2.resize(image, (size[1], size[0]), interpolation=int(kernel))


def realworld_lr(hr: np.ndarray, scale: int, rng: Rng) -> np.ndarray:
    """A compact second-order degradation in the spirit of Real-ESRGAN: twice blur, resize,
    noise and JPEG, the second round milder and ending at the LR size."""
    height, width = hr.shape[:2]
    image = hr
    for stage, (max_blur, max_noise) in enumerate([(3.0, 25.0), (1.5, 15.0)]):
        image = blur(image, float(rng.uniform(0.2, max_blur)))
        if stage == 0:
            factor = float(rng.uniform(0.5, 1.5))
            size = (max(8, round(height * factor)), max(8, round(width * factor)))
        else:
            size = (height // scale, width // scale)
        image = resize_random(image, size, rng)
        image = gaussian_noise(image, float(rng.uniform(1.0, max_noise)), rng)
        image = jpeg(image, int(rng.integers(30, 96)))
    return image


def degrade(hr: np.ndarray, config: DataConfig, rng: Rng) -> np.ndarray:
    """The model input for one HR crop (float in [0, 1])."""
    kind = config.degradation
    if kind == "bicubic":
        return bicubic_lr(hr, config.scale)
    if kind == "jpeg":
        low, high = config.jpeg_quality
        return jpeg(hr, int(rng.integers(low, high + 1)))
    if kind == "noise":
        low, high = config.noise_sigma
        return gaussian_noise(hr, float(rng.uniform(low, high)), rng)
    return realworld_lr(hr, config.scale, rng)


# -- dataset and loader -------------------------------------------------------------------


class PairDataset(Dataset):
    """Sample ``index`` is a (LR, HR) pair of CHW float32 tensors, the same on every run."""

    def __init__(self, paths: list[Path], config: DataConfig, length: int) -> None:
        self.paths = paths
        self.config = config
        self.length = length
        self._cache: dict[int, np.ndarray] = {}  # decoded images, per worker process

    def __len__(self) -> int:
        return self.length

    def image(self, number: int) -> np.ndarray:
        if number not in self._cache:
            self._cache[number] = read_rgb(self.paths[number])
        return self._cache[number]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.config.seed, index])
        crop = random_crop(self.image(int(rng.integers(len(self.paths)))), self.config.crop, rng)
        hr = flip_rotate(crop, rng).astype(np.float64) / 255.0
        lr = degrade(hr, self.config, rng)
        return to_tensor(lr), to_tensor(hr)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def make_loader(
    paths: list[Path], config: DataConfig, total_steps: int, start_step: int = 0
) -> DataLoader:
    """Batches for steps start_step .. total_steps - 1, in order."""
    batch = config.batch_size
    dataset = PairDataset(paths, config, total_steps * batch)
    indices = range(start_step * batch, total_steps * batch)
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=list(indices),
        num_workers=config.workers,
        # Its own generator: the loader's seed draw must not advance the global torch RNG,
        # or a resumed run (a new loader mid-way) would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(config.seed),
    )
