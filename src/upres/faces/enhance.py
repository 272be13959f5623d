"""Face enhancement around any runner: the whole image is upscaled as usual, then each face
found on the input is aligned, restored by a face model and pasted back over the result.

decode -> detect faces (input) -> upscale (the wrapped runner: tiles, memory plan) ->
for each face: align (input) -> restore (one 512x512 face on the device) -> paste (output)
-> encode. Alpha, bit depth, EXIF and ICC go through the wrapped runner untouched; only
the colour pixels under a face's feathered mask change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from upres.api import ImageRunner, UpscaleReport
from upres.engine.forecast import ImagePlan
from upres.faces.align import aligned_face, face_transform, feather_mask, paste_face, placement
from upres.faces.detect import Face, FaceDetector
from upres.faces.restore import FaceRestorer
from upres.io.image import Image
from upres.models.zoo.faces import DEFAULT_FACE_MODEL

DEFAULT_MIN_SIZE = 24  # px on the input: smaller faces are left to the SR model
DEFAULT_MIN_CONFIDENCE = 0.95


@dataclass(frozen=True)
class FaceOptions:
    """What `--face-enhance` and its companions ask for."""

    model: str = DEFAULT_FACE_MODEL
    strength: float = 1.0  # 0: the SR result as it is; 1: the restored face fully
    min_size: float = DEFAULT_MIN_SIZE
    min_confidence: float = DEFAULT_MIN_CONFIDENCE

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"face strength must be between 0 and 1, not {self.strength}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"face confidence must be between 0 and 1, not {self.min_confidence}")
        if self.min_size < 0:
            raise ValueError(f"minimum face size must be >= 0 px, not {self.min_size}")


def usable(face: Face, width: int, height: int) -> bool:
    """A face whose landmarks all lie on the image; a cut-off face (a profile at the edge)
    gets landmarks guessed off the image, and aligning on guesses would paste a wrong face."""
    xs, ys = face.landmarks[:, 0], face.landmarks[:, 1]
    return bool(xs.min() >= 0 and ys.min() >= 0 and xs.max() < width and ys.max() < height)


class FaceEnhancer(ImageRunner):
    """An ImageRunner (Upscaler or Pipeline) whose results get their faces restored."""

    def __init__(
        self,
        runner: ImageRunner,
        restorer: FaceRestorer,
        detector: FaceDetector,
        options: FaceOptions,
    ) -> None:
        self.runner = runner
        self.restorer = restorer
        self.detector = detector
        self.options = options
        self.mask = feather_mask()

    # The wrapped runner's facts.
    name = property(lambda self: f"{self.runner.name}+{self.restorer.name}")
    scale = property(lambda self: self.runner.scale)
    architecture = property(lambda self: self.runner.architecture)
    device = property(lambda self: self.runner.device)
    dtype = property(lambda self: self.runner.dtype)

    def __repr__(self) -> str:
        return f"FaceEnhancer({self.runner!r}, faces={self.restorer.name!r})"

    def find_faces(self, image: Image) -> list[Face]:
        rgb = image.pixels if image.pixels.shape[2] == 3 else np.repeat(image.pixels, 3, 2)
        faces = self.detector.detect(
            rgb, min_size=self.options.min_size, min_confidence=self.options.min_confidence
        )
        return [face for face in faces if usable(face, image.width, image.height)]

    def plan_image(self, *args: Any, **options: Any) -> ImagePlan:
        """The wrapped runner's plan; the faces add one 512x512 face at a time on top."""
        return self.runner.plan_image(*args, **options)

    def upscale_image(self, image: Image, **options: Any) -> tuple[Image, UpscaleReport]:
        """The wrapped runner's upscale (every option it takes, passed through), then the
        faces found on the input restored and pasted over its result."""
        faces = self.find_faces(image)
        result, report = self.runner.upscale_image(image, **options)
        self.restore_faces(image, faces, result)
        report.notes.append(f"{len(faces)} face(s) restored with {self.restorer.name}")
        return result, report

    def restore_faces(self, source: Image, faces: list[Face], result: Image) -> None:
        """Each face in turn: align on the input, restore, paste into the result in place."""
        rgb = source.pixels if source.pixels.shape[2] == 3 else np.repeat(source.pixels, 3, 2)
        for face in faces:
            to_template = face_transform(face.landmarks)
            restored = self.restorer.restore(aligned_face(rgb, to_template))
            where = placement(
                to_template, (source.width, source.height), (result.width, result.height)
            )
            paste_face(result.pixels, restored, where, self.mask, self.options.strength)
        if self.restorer.device.type == "cuda":
            torch.cuda.empty_cache()  # the face model's activations, not kept between images


def enhance(
    runner: ImageRunner, options: FaceOptions, *, detector: FaceDetector | None = None
) -> FaceEnhancer:
    """Wrap a loaded runner: load the face model on its device and the detector."""
    from upres.faces.restore import load_restorer

    restorer = load_restorer(options.model, runner.device)
    return FaceEnhancer(runner, restorer, detector or FaceDetector(), options)
