"""`Model`: the interface batch-service guides show, on top of `upres.load`.

    from upres import Model
    model = Model(scale_factor=4, model_path="realesrgan-x4plus")   # or a checkpoint file
    cv2.imwrite("out.png", model.infer(cv2.imread("in.jpg")))

Arrays are in OpenCV's channel order (BGR, BGRA) in and out by default; greyscale arrays
have no order and pass untouched. Everything else (tiling, precision, memory) is the
Upscaler's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from upres.api import DEFAULT_OVERLAP, load


class Model:
    """A loaded model that upscales OpenCV-style arrays by `scale_factor`.

    scale_factor: the output scale (any factor: the model runs as often as needed, then a
    high-quality resize); None means the model's own scale.
    model_path: a built-in model name (`upres models`) or a checkpoint file; None for the
    default model.
    channel_order: "bgr" (OpenCV, the default) or "rgb" (Pillow, imageio).
    """

    def __init__(
        self,
        scale_factor: float | None = 4,
        model_path: str | Path | None = None,
        *,
        channel_order: str = "bgr",
        device: str = "auto",
        precision: str = "auto",
        tile: str | int | None = None,
        tile_overlap: int = DEFAULT_OVERLAP,
        sharpen: float = 0.0,
    ) -> None:
        if scale_factor is not None and not float(scale_factor) > 0:
            raise ValueError(f"scale_factor must be a positive number, not {scale_factor}")
        self.scale_factor = scale_factor
        self.sharpen = sharpen
        self.upscaler = load(
            model_path,
            device=device,
            precision=precision,
            tile=tile,
            tile_overlap=tile_overlap,
            channel_order=channel_order,
        )

    def infer(self, image: np.ndarray) -> np.ndarray:
        """An H x W (grey), H x W x 3 (BGR) or H x W x 4 (BGRA) array, uint8, uint16 or
        float in [0, 1], upscaled: the same layout, channel order and dtype come back."""
        if image is None:  # what cv2.imread returns for a missing or unreadable file
            raise ValueError("no image: cv2.imread returns None when it cannot read the file")
        return self.upscaler(image, scale=self.scale_factor, sharpen=self.sharpen)

    __call__ = infer

    def __getattr__(self, name: str) -> Any:
        # Everything else (name, scale, device, upscale_file...) is the Upscaler's.
        upscaler = self.__dict__.get("upscaler")
        if upscaler is None:  # not loaded (yet): copy and pickle probe before __init__
            raise AttributeError(name)
        return getattr(upscaler, name)

    def __repr__(self) -> str:
        return f"Model(scale_factor={self.scale_factor}, {self.upscaler!r})"
